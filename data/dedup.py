"""
Exact and near-duplicate removal at corpus scale, numpy only.

Each document gets, in the worker processes of data/prepare_textbooks.py (signatures()):
  digest  uint64: the first 8 bytes of the sha1 of its lower-cased text with runs of whitespace
          collapsed (the exact-duplicate key)
  bands   20 x uint64: the LSH band keys of its 120-bin MinHash signature over token 5-grams
  sketch  120 x uint8: one byte per MinHash bin, a b-bit MinHash (Li & Koenig 2010), from which the
          Jaccard similarity of a candidate pair is estimated without the full signature
The parts of a build save them, and the merge decides from them alone, in one pass over the
documents in their global order (DedupIndex.verdicts):
  - exact duplicate: its digest was seen before (a document that is itself a duplicate counts);
  - near duplicate: it shares an LSH band with an earlier KEPT document whose Jaccard similarity of
    5-gram sets is >= 0.8, that band's bucket being one the kept document was filed in: each band
    key files the first BUCKET_CAP kept documents that have it, and no more. A true near duplicate
    shares each band with its original with probability at least 0.8^6 = 0.26, about 5 of the 20,
    so it is still found through the original's uncrowded bands, while the work per document stays bounded (at
    most 20 x BUCKET_CAP candidates) whatever the corpus size. The sketches decide a pair whose
    estimate is 4 sigma clear of 0.8, when both documents are long enough for the estimate to be
    sound; the exact similarity, from the two documents' tokens, decides the others.
The verdicts depend only on the documents and their order: how the work was split into parts, or
into batches, does not change them.

The index lives in memory; per document, in bytes:
  every distinct digest                     8
  a kept document with a signature        374   (its 20 band keys with its number, 20 x (8 + 4), fewer
                                                 where a bucket is full; its sketch, 120; its length, 4;
                                                 where its tokens are, 10)
so at most 382 bytes per kept document (bench.py data measures it). Band keys sit in sorted runs
(SortedRuns), which merge one band at a time, so that merging adds at most one band's share; the
rest in fixed-size blocks (Column), which never copy what they hold to grow.
"""

import hashlib
from typing import Callable, Optional

import numpy as np

MINHASH_BINS = 120  # signature length
LSH_BANDS, LSH_ROWS = 20, 6  # 20 bands of 6: a pair at Jaccard 0.8 becomes a candidate with p = 0.998
SHINGLE = 5  # tokens per shingle
NEAR_DUP_JACCARD = 0.8
SCREEN_MARGIN = 0.15  # where the MinHash estimate alone decides (see DedupIndex.screen)
# A band key holds at most this many kept documents (see DedupIndex). Without a bound, text that
# shares boilerplate (templated sections, license headers) fills some buckets with a fixed share of
# all documents, and the candidates per document grow with the corpus, so the pass is quadratic (the
# offline generator's sections do this: BENCHMARKS.md).
BUCKET_CAP = 32
P64 = np.uint64(0x9E3779B97F4A7C15)  # an odd multiplier for polynomial hashing (mod 2^64)
_MIX1, _MIX2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_EMPTY = np.uint64(2 ** 64 - 1)
EXACT, NEAR = 1, 2  # verdicts; 0 is a new document


# --------------------------------------------------------------------------------------------------
# Signatures

def window_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """A 64-bit hash of every window of n consecutive ids (uint64 arithmetic wraps mod 2^64)."""
    ids = ids.astype(np.uint64)
    h = ids[:len(ids) - n + 1].copy()
    for k in range(1, n):
        h = h * P64 + ids[k:len(ids) - n + 1 + k]
    h ^= h >> np.uint64(33)  # murmur3's finaliser, so that every bit depends on every id
    h *= _MIX1
    h ^= h >> np.uint64(33)
    h *= _MIX2
    h ^= h >> np.uint64(33)
    return h


def minhash(docs: list) -> list:
    """MinHash signatures of token arrays, all in one vectorized pass: one-permutation MinHash
    (Li, Owen & Zhang 2012) with rotation densification (Shrivastava & Li 2014). Each shingle hash
    falls into one of MINHASH_BINS bins by its value mod the bin count, and a bin keeps its smallest
    hash. An empty bin borrows from the next non-empty bin to its right (circularly), plus a constant
    per step. Two documents then agree in a bin with probability equal to their Jaccard similarity,
    as with MINHASH_BINS independent permutations, at the cost of one hash per shingle instead of
    MINHASH_BINS. None for a document shorter than a shingle (exact dedup still applies to it)."""
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    if not len(docs) or lengths.max() < SHINGLE:
        return [None] * len(docs)
    h = window_hashes(np.concatenate(docs), SHINGLE)  # every window of the concatenation...
    first = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    doc = np.repeat(np.arange(len(docs)), lengths)[:len(h)]
    inside = np.arange(len(h)) - first[doc] <= lengths[doc] - SHINGLE  # ...but those across two documents
    h, doc = h[inside], doc[inside]
    sig = np.full((len(docs), MINHASH_BINS), _EMPTY, dtype=np.uint64)
    np.minimum.at(sig, (doc, (h % np.uint64(MINHASH_BINS)).astype(np.intp)), h)
    # densification: the next filled bin at or after each bin, found on the row written out twice
    bins = np.arange(MINHASH_BINS)
    filled_at = np.where(sig != _EMPTY, bins, 3 * MINHASH_BINS)
    twice = np.concatenate([filled_at, filled_at + MINHASH_BINS], axis=1)
    nxt = np.minimum.accumulate(twice[:, ::-1], axis=1)[:, ::-1][:, :MINHASH_BINS]
    dense = np.take_along_axis(sig, nxt % MINHASH_BINS, axis=1) + (nxt - bins).astype(np.uint64) * P64
    return [row if n >= SHINGLE else None for row, n in zip(dense, lengths)]


def band_keys(sigs: np.ndarray) -> np.ndarray:
    """(n, LSH_BANDS) keys of signatures (n, MINHASH_BINS): documents that agree on all LSH_ROWS bins
    of a band share its key."""
    rows = sigs.reshape(len(sigs), LSH_BANDS, LSH_ROWS)
    h = rows[:, :, 0].copy()
    for k in range(1, LSH_ROWS):
        h = h * P64 + rows[:, :, k]
    return h


def sketch(sigs: np.ndarray) -> np.ndarray:
    """One byte per bin: the top byte of the bin's value times an odd constant, which depends on all
    of its bits (the low bits of a bin's value repeat the bin number, and its high bits are mostly
    zeros, the minimum of many hashes being small)."""
    return ((sigs * _MIX1) >> np.uint64(56)).astype(np.uint8)


def digest(lowered: str) -> int:
    """The exact-duplicate key of a lower-cased text: whitespace runs collapsed, sha1, 8 bytes."""
    return int.from_bytes(hashlib.sha1(" ".join(lowered.split()).encode("utf-8", "surrogatepass")).digest()[:8], "little")


def signatures(tokens: list) -> tuple:
    """(bands (n, LSH_BANDS) uint64, sketches (n, MINHASH_BINS) uint8) of token arrays; zeros for a
    document shorter than a shingle, which the index never looks up."""
    bands = np.zeros((len(tokens), LSH_BANDS), np.uint64)
    sketches = np.zeros((len(tokens), MINHASH_BINS), np.uint8)
    sigs = minhash(tokens)
    have = [i for i, s in enumerate(sigs) if s is not None]
    if have:
        sig = np.stack([sigs[i] for i in have])
        bands[have], sketches[have] = band_keys(sig), sketch(sig)
    return bands, sketches


def shingle_set(tokens: np.ndarray) -> np.ndarray:
    return np.unique(window_hashes(tokens, SHINGLE)) if len(tokens) >= SHINGLE else np.zeros(0, np.uint64)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - inter
    return inter / union if union else 1.0


# --------------------------------------------------------------------------------------------------
# The index

class SortedRuns:
    """A growing multiset of uint64 keys, each with a uint32 value (values=True), as sorted runs
    whose sizes more than halve from one run to the next, like the digits of a binary counter:
    adding n keys costs O(n log n) in all, a lookup searches O(log n) runs, and the memory is the
    arrays themselves, 8 or 12 bytes an entry (a hash table would need twice that or more)."""

    def __init__(self, values: bool):
        self.runs = []  # [keys] or [keys, values]
        self.values = values

    def add(self, keys: np.ndarray, values: Optional[np.ndarray] = None) -> None:
        if not len(keys):
            return
        order = np.argsort(keys, kind="stable")
        self.runs.append([keys[order]] + ([values[order].astype(np.uint32)] if self.values else []))
        while len(self.runs) > 1 and 2 * len(self.runs[-1][0]) > len(self.runs[-2][0]):
            new = self.runs.pop()
            old = self.runs.pop()
            at = np.searchsorted(old[0], new[0], side="right") + np.arange(len(new[0]))  # new ones after equal old ones
            from_old = np.ones(len(old[0]) + len(new[0]), bool)
            from_old[at] = False
            merged = []
            for a, b in zip(old, new):
                m = np.empty(len(from_old), a.dtype)
                m[at], m[from_old] = b, a
                merged.append(m)
            self.runs.append(merged)

    def find(self, q: np.ndarray) -> tuple:
        """(i, value) for every entry whose key equals q[i]."""
        found_i, found_v = [], []
        for run in self.runs:
            keys = run[0]
            at = np.searchsorted(keys, q)
            i = np.arange(len(q))
            while len(i):  # an entry, then the entries with the same key after it
                ok = at < len(keys)
                i, at = i[ok], at[ok]
                ok = keys[at] == q[i]
                i, at = i[ok], at[ok]
                found_i.append(i)
                found_v.append(run[1][at])
                at = at + 1
        if not found_i:
            return np.zeros(0, np.int64), np.zeros(0, np.uint32)
        return np.concatenate(found_i), np.concatenate(found_v)

    def contains(self, q: np.ndarray) -> np.ndarray:
        out = np.zeros(len(q), bool)
        for run in self.runs:
            at = np.minimum(np.searchsorted(run[0], q), len(run[0]) - 1)
            out |= run[0][at] == q
        return out

    def nbytes(self) -> int:
        return sum(a.nbytes for run in self.runs for a in run)


class Column:
    """A growing array of rows, in blocks of 2^20 rows allocated as needed (np.empty: the operating
    system provides the pages as they are written), so that growing never copies what it holds."""
    BLOCK = 1 << 20

    def __init__(self, dtype, row: tuple = ()):
        self.dtype, self.row, self.blocks, self.n = np.dtype(dtype), row, [], 0

    def append(self, rows: np.ndarray) -> None:
        done = 0
        while done < len(rows):
            at = self.n % self.BLOCK
            if at == 0:
                self.blocks.append(np.empty((self.BLOCK,) + self.row, self.dtype))
            k = min(len(rows) - done, self.BLOCK - at)
            self.blocks[-1][at:at + k] = rows[done:done + k]
            done += k
            self.n += k

    def take(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        out = np.empty((len(ids),) + self.row, self.dtype)
        block = ids // self.BLOCK
        for b in np.unique(block):
            sel = block == b
            out[sel] = self.blocks[b][ids[sel] % self.BLOCK]
        return out

    def nbytes(self) -> int:
        return self.n * self.dtype.itemsize * int(np.prod(self.row, dtype=np.int64))


NO, YES, CHECK = 0, 1, 2  # what the sketches say about a candidate pair


def screen(sk_a: np.ndarray, sk_b: np.ndarray, len_a: np.ndarray, len_b: np.ndarray) -> np.ndarray:
    """NO, YES or CHECK for each candidate pair. With at least MINHASH_BINS shingles on both sides, the
    fraction of agreeing bins estimates the Jaccard similarity J without bias and with the binomial
    spread sqrt(J(1-J)/120) = 0.037 at J = 0.8 (measured by simulation: 0.032-0.038 from 125 to 3000
    shingles); one byte per bin adds chance agreements (1 in 256 for a differing bin), removed below.
    So an estimate more than SCREEN_MARGIN (4 sigma) from the threshold decides; otherwise, and for
    shorter documents, the exact similarity must be computed (CHECK)."""
    agree = np.count_nonzero(sk_a == sk_b, axis=1) / MINHASH_BINS
    est = (agree - 1 / 256) / (1 - 1 / 256)
    long = np.minimum(len_a, len_b) >= MINHASH_BINS + SHINGLE
    out = np.full(len(agree), CHECK, np.uint8)
    out[long & (est < NEAR_DUP_JACCARD - SCREEN_MARGIN)] = NO
    out[long & (est > NEAR_DUP_JACCARD + SCREEN_MARGIN)] = YES
    return out


class DedupIndex:
    """The verdicts of a stream of documents, batch after batch, in order (see the module's header).
    fetch(place, offset, length) returns a document's tokens (for the exact similarity)."""

    def __init__(self, fetch: Callable[[int, int, int], np.ndarray]):
        self.fetch = fetch
        self.digests = SortedRuns(values=False)
        self.bands = [SortedRuns(values=True) for _ in range(LSH_BANDS)]
        self.sketches = Column(np.uint8, (MINHASH_BINS,))
        self.lengths, self.places, self.offsets = Column(np.uint32), Column(np.uint16), Column(np.uint64)
        self.kept = 0  # kept documents with a signature: the numbers the bands point to

    def nbytes(self) -> int:
        return (self.digests.nbytes() + sum(b.nbytes() for b in self.bands) + self.sketches.nbytes()
                + self.lengths.nbytes() + self.places.nbytes() + self.offsets.nbytes())

    def exact(self, digest: np.ndarray) -> np.ndarray:
        """Whether each document of the next batch is an exact duplicate (of one before it in the
        stream or in the batch), without adding it to the index."""
        _, first = np.unique(digest, return_index=True)  # the first of equal digests in the batch
        firsts = np.zeros(len(digest), bool)
        firsts[first] = True
        return self.digests.contains(digest) | ~firsts

    def verdicts(self, digest: np.ndarray, bands: np.ndarray, sketches: np.ndarray, length: np.ndarray,
                 place: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """0 (new, now in the index), EXACT or NEAR for each document of the batch, the batch being
        the documents that come next in the stream, in order. Taken 2048 at a time, so that the
        candidate pairs held at once stay bounded (at most 2048 x 20 x BUCKET_CAP)."""
        out = np.zeros(len(digest), np.uint8)
        for a in range(0, len(digest), 2048):
            s = slice(a, a + 2048)
            out[s] = self._verdicts(digest[s], bands[s], sketches[s], length[s], place[s], offset[s])
        return out

    def _verdicts(self, digest, bands, sketches, length, place, offset) -> np.ndarray:
        out = np.zeros(len(digest), np.uint8)
        out[self.exact(digest)] = EXACT
        self.digests.add(digest[out == 0])
        q = np.flatnonzero((out == 0) & (length >= SHINGLE))  # the documents that have a signature
        if not len(q):
            return out
        B, S, L = bands[q], sketches[q], length[q].astype(np.int64)
        tokens_of = {}  # batch position -> tokens, shingles; fetched once, when needed

        def shingles(t):
            if t not in tokens_of:
                tokens_of[t] = shingle_set(self.fetch(int(place[q[t]]), int(offset[q[t]]), int(L[t])))
            return tokens_of[t]

        # candidates among the documents kept before this batch, screened all at once
        found = [self.bands[b].find(B[:, b]) for b in range(LSH_BANDS)]
        filed = np.stack([np.bincount(i, minlength=len(q)) for i, _ in found])  # (band, doc): kept ones with its key
        pair = np.unique(np.concatenate([i.astype(np.int64) << 32 | v for i, v in found]))
        pair_t, pair_id = pair >> 32, pair & 0xFFFFFFFF
        said = np.empty(len(pair), np.uint8)
        for c in range(0, len(pair), 1 << 16):  # 65,536 pairs' sketches at a time: 16 MB
            i, j = pair_t[c:c + (1 << 16)], pair_id[c:c + (1 << 16)]
            said[c:c + (1 << 16)] = screen(S[i], self.sketches.take(j), L[i], self.lengths.take(j))
        near = np.zeros(len(q), bool)  # a kept candidate is clearly similar: no need to look further
        near[pair_t[said == YES]] = True
        check = said == CHECK  # the pairs whose exact similarity decides, with where the kept one's tokens are
        pair_t, pair_id = pair_t[check], pair_id[check]
        at = np.stack([self.places.take(pair_id), self.offsets.take(pair_id), self.lengths.take(pair_id)], axis=1).tolist()
        kept_shingles = {}  # kept document -> shingles, fetched once per batch

        def kept_similar(t: int, k: int) -> bool:
            j = int(pair_id[k])
            if j not in kept_shingles:
                kept_shingles[j] = shingle_set(self.fetch(*at[k]))
            return jaccard(shingles(t), kept_shingles[j]) >= NEAR_DUP_JACCARD

        # candidates inside the batch: documents that share a band key with another one of it
        collide = np.zeros(len(q), bool)
        for b in range(LSH_BANDS):
            _, inverse, counts = np.unique(B[:, b], return_inverse=True, return_counts=True)
            collide |= counts[inverse.ravel()] > 1
        need = collide | near
        need[pair_t] = True
        starts = np.searchsorted(pair_t, np.arange(len(q) + 1))  # pair_t is sorted
        new = ~near
        kept_here = [dict() for _ in range(LSH_BANDS)]  # band key -> earlier kept colliders of the batch filed there
        for t in np.flatnonzero(need & new):
            if any(kept_similar(t, k) for k in range(starts[t], starts[t + 1])):
                new[t] = False
            if new[t] and collide[t]:
                earlier = sorted({e for b in range(LSH_BANDS) for e in kept_here[b].get(int(B[t, b]), ())})
                for e in earlier:
                    s = screen(S[t:t + 1], S[e:e + 1], L[t:t + 1], L[e:e + 1])[0]
                    if s == YES or (s == CHECK and jaccard(shingles(t), shingles(e)) >= NEAR_DUP_JACCARD):
                        new[t] = False
                        break
                if new[t]:
                    for b in range(LSH_BANDS):
                        here = kept_here[b].setdefault(int(B[t, b]), [])
                        if filed[b, t] + len(here) < BUCKET_CAP:
                            here.append(t)
        out[q[~new]] = NEAR
        ids = np.arange(self.kept, self.kept + int(new.sum()), dtype=np.uint32)
        for b in range(LSH_BANDS if len(ids) else 0):
            keys = B[new, b]
            # filed if fewer than BUCKET_CAP kept documents have the key: those before this batch,
            # then the earlier new ones of the batch (its rank among them, in order)
            order = np.argsort(keys, kind="stable")
            sk = keys[order]
            first = np.flatnonzero(np.concatenate([[True], sk[1:] != sk[:-1]]))
            rank = np.empty(len(keys), np.int64)
            rank[order] = np.arange(len(keys)) - np.repeat(first, np.diff(np.concatenate([first, [len(keys)]])))
            room = filed[b, new] + rank < BUCKET_CAP
            self.bands[b].add(keys[room], ids[room])
        self.sketches.append(S[new])
        self.lengths.append(L[new])
        self.places.append(place[q[new]])
        self.offsets.append(offset[q[new]])
        self.kept += len(ids)
        return out
