"""data/dedup.py: the index's verdicts are those of the definition, computed by brute force over
every pair with Python sets, whatever the batches the documents come in; its sorted runs find what
a dict finds."""

import random

import numpy as np

from data import dedup


def test_sorted_runs_find_every_entry_a_dict_of_lists_holds():
    rng = np.random.default_rng(0)
    runs, reference, value = dedup.SortedRuns(values=True), {}, 0
    for size in rng.integers(1, 300, 60):  # 60 additions: many merges of runs
        keys = rng.integers(0, 2000, size).astype(np.uint64)  # repeated keys, across and inside additions
        values = np.arange(value, value + size, dtype=np.uint32)
        runs.add(keys, values)
        for k, v in zip(keys.tolist(), values.tolist()):
            reference.setdefault(k, []).append(v)
        value += size
    assert len(runs.runs) <= 12  # sizes more than halve from run to run
    q = np.arange(2100, dtype=np.uint64)
    i, v = runs.find(q)
    found = {}
    for a, b in zip(i.tolist(), v.tolist()):
        found.setdefault(int(q[a]), []).append(b)
    assert {k: sorted(v) for k, v in found.items()} == {k: sorted(v) for k, v in reference.items()}
    assert runs.contains(q).tolist() == [k in reference for k in range(2100)]
    assert runs.nbytes() == 12 * value


def shingles(tokens: list) -> set:
    return {tuple(tokens[i:i + 5]) for i in range(len(tokens) - 4)}


def brute_force(docs: list, digests: list) -> list:
    """The definition: an exact duplicate repeats an earlier digest; a near duplicate has Jaccard
    similarity >= 0.8 with an earlier kept document (5-gram sets; both of 5 tokens or more)."""
    seen, kept, out = set(), [], []
    for tokens, d in zip(docs, digests):
        if d in seen:
            out.append(dedup.EXACT)
            continue
        seen.add(d)
        s = shingles(tokens)
        if s and any(len(s & k) / len(s | k) >= 0.8 for k in kept):
            out.append(dedup.NEAR)
            continue
        if s:
            kept.append(s)
        out.append(0)
    return out


def corpus(seed: int) -> tuple:
    """Documents of 3 to 900 tokens, with copies planted at every distance from the 0.8 threshold:
    mutated copies (some of copies), exact copies (same digest) and tiny documents."""
    rng = random.Random(seed)
    docs, digests = [], []
    for i in range(400):
        r = rng.random()
        if docs and r < 0.35:  # a mutated copy of an earlier document
            base = list(rng.choice(docs))
            rate = rng.choice([0.005, 0.02, 0.03, 0.04, 0.05, 0.1, 0.3])
            for k in range(len(base)):
                if rng.random() < rate:
                    base[k] = rng.randrange(50000)
            docs.append(base)
            digests.append(rng.getrandbits(64))
        elif docs and r < 0.45:  # an exact duplicate, as the digest sees it
            j = rng.randrange(len(docs))
            docs.append(list(docs[j]))
            digests.append(digests[j])
        else:
            n = rng.choice([3, 4, 8, 40, 130, 400, 900])
            docs.append([rng.randrange(50000) for _ in range(n)])
            digests.append(rng.getrandbits(64))
    return docs, digests


def test_verdicts_are_the_definitions_in_any_batches():
    docs, digests = corpus(0)
    expected = brute_force(docs, digests)
    assert expected.count(dedup.NEAR) > 30 and expected.count(dedup.EXACT) > 20  # both are exercised
    arrays = [np.array(d, np.uint16) for d in docs]
    bands, sketches = dedup.signatures(arrays)
    length = np.array([len(d) for d in docs], np.int64)
    offset = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.uint64)
    flat = np.concatenate(arrays)
    fetched = []

    def fetch(place, off, n):  # where the tokens of a candidate pair are read from, when needed
        fetched.append(off)
        assert place == 7
        return flat[off:off + n]

    for batch in (1, 13, len(docs)):
        index = dedup.DedupIndex(fetch)
        got = []
        for a in range(0, len(docs), batch):
            s = slice(a, a + batch)
            got += index.verdicts(np.array(digests[s], np.uint64), bands[s], sketches[s], length[s],
                                  np.full(len(docs[s]), 7, np.uint16), offset[s]).tolist()
        assert got == expected, batch
        assert index.kept == sum(v == 0 and n >= 5 for v, n in zip(expected, length))
    assert fetched  # some pairs were decided exactly, from the tokens


def test_a_bucket_files_only_its_first_kept_documents(monkeypatch):
    # B is kept (Jaccard ~0.6 with A) but shares all 20 band keys with A; C is a near copy of B
    # (Jaccard ~0.9), not of A, sharing 5 band keys with both. With room for one document per band
    # key, B is filed nowhere, so C finds only A and is kept; with room for more, C is a near duplicate.
    rng = random.Random(2)
    a = [rng.randrange(50000) for _ in range(400)]
    b = [rng.randrange(50000) if rng.random() < 0.05 else x for x in a]
    c = [rng.randrange(50000) if rng.random() < 0.01 else x for x in b]
    sa, sb, sc = shingles(a), shingles(b), shingles(c)
    assert 0.5 < len(sa & sb) / len(sa | sb) < 0.8 < len(sb & sc) / len(sb | sc) and len(sa & sc) / len(sa | sc) < 0.8
    arrays = [np.array(d, np.uint16) for d in (a, b, c)]
    _, sketches = dedup.signatures(arrays)
    bands = np.array([np.arange(20), np.arange(20), np.concatenate([np.arange(5), 100 + np.arange(15)])], np.uint64)
    flat, length = np.concatenate(arrays), np.array([400, 400, 400])
    for cap, verdict in ((1, 0), (2, dedup.NEAR), (dedup.BUCKET_CAP, dedup.NEAR)):
        monkeypatch.setattr(dedup, "BUCKET_CAP", cap)
        for batch in (1, 3):
            index, got = dedup.DedupIndex(lambda place, off, n: flat[off:off + n]), []
            for k in range(0, 3, batch):
                s = slice(k, k + batch)
                got += index.verdicts(np.arange(k, min(k + batch, 3), dtype=np.uint64), bands[s], sketches[s], length[s],
                                      np.zeros(len(length[s]), np.uint16), np.array([0, 400, 800], np.uint64)[s]).tolist()
            assert got == [0, 0, verdict], (cap, batch)


def test_crowded_buckets_file_only_the_first_kept_documents_in_any_batches(monkeypatch):
    # 12 families of 25 siblings, each a 300-token base with 4% of its tokens changed: siblings are
    # at Jaccard ~0.5, so they crowd each other's buckets, and copies of siblings (0.5% changed) are
    # near duplicates. With a cap of 2, the definition: a document is a near duplicate of an earlier
    # kept one with Jaccard >= 0.8 that was filed in a band they share (filed: among the first 2 kept
    # documents with that band's key). Even so crowded, no near duplicate is lost to the cap here: a
    # copy shares many bands with its original.
    monkeypatch.setattr(dedup, "BUCKET_CAP", 2)
    rng = random.Random(1)
    docs = []
    for _ in range(12):
        base = [rng.randrange(50000) for _ in range(300)]
        for _ in range(25):
            rate = 0.005 if docs and rng.random() < 0.3 else 0.04
            src = list(docs[-1]) if rate == 0.005 else list(base)
            docs.append([rng.randrange(50000) if rng.random() < rate else x for x in src])
    rng.shuffle(docs)
    arrays = [np.array(d, np.uint16) for d in docs]
    bands, sketches = dedup.signatures(arrays)
    expected, buckets, kept, overflow = [], [dict() for _ in range(dedup.LSH_BANDS)], {}, 0
    for n, tokens in enumerate(docs):
        s = shingles(tokens)
        near = {j for b in range(dedup.LSH_BANDS) for j in buckets[b].get(int(bands[n, b]), [])}
        if any(len(s & kept[j]) / len(s | kept[j]) >= 0.8 for j in near):
            expected.append(dedup.NEAR)
            continue
        expected.append(0)
        kept[n] = s
        for b in range(dedup.LSH_BANDS):
            filed = buckets[b].setdefault(int(bands[n, b]), [])
            overflow += len(filed) >= 2
            if len(filed) < 2:
                filed.append(n)
    assert overflow > 50 and expected.count(dedup.NEAR) > 30  # the cap is exercised
    assert expected == brute_force(docs, list(range(len(docs))))
    length = np.array([len(d) for d in docs], np.int64)
    offset = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.uint64)
    flat = np.concatenate(arrays)
    for batch in (1, 13, len(docs)):
        index = dedup.DedupIndex(lambda place, off, n: flat[off:off + n])
        got = []
        for a in range(0, len(docs), batch):
            s = slice(a, a + batch)
            got += index.verdicts(np.arange(a, a + len(docs[s]), dtype=np.uint64), bands[s], sketches[s], length[s],
                                  np.zeros(len(docs[s]), np.uint16), offset[s]).tolist()
        assert got == expected, batch
