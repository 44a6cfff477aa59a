"""data/quality.py, the educational-value filter: labels from a loopback OpenAI-compatible server
that judges by a rule only this file knows, a head fitted on the hashed features that recovers the
rule on held-out files, prepare_textbooks.py keeping and dropping the right planted files, the
labels' cache, bad answers, bad files, and model embeddings equal to transformers' hidden states."""

import json
import os
import pickle
import random
import re
import subprocess
import sys

import numpy as np
import pytest

from data import prepare_textbooks as pt
from data import quality
from test_openai_generator import ChatServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "data", "quality.py")
KEY = "sk-quality-test-0123456789-SECRET"


# --------------------------------------------------------------------------------------------------
# A planted corpus: Python files of three kinds, made of made-up words so that no two are alike

def word(rng: random.Random) -> str:
    return "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 3)))


def function(rng: random.Random, kind: str) -> str:
    name, a, b, t = f"{word(rng)}_{word(rng)}", word(rng), word(rng), word(rng)
    k, x, y = rng.randint(2, 9), rng.randint(1, 20), rng.randint(1, 20)
    op = rng.choice(["+", "-"])
    code = f"    {t} = {k} * {b}\n    return {a} {op} {t}\n"
    if kind == "taught":
        doc = (f'    """Combine {a} with {k} times {b}, the way a {word(rng)} {word(rng)} does.\n\n'
               f'    First scale {b} by {k}, then {"add it to" if op == "+" else "take it from"} {a}.\n'
               f'    Worked example: with {a} = {x} and {b} = {y}, {k} * {y} = {k * y}, so the answer is '
               f'{x} {op} {k * y}.\n\n'
               f'    >>> {name}({x}, {y})\n    {x + k * y if op == "+" else x - k * y}\n    """\n')
    elif kind == "documented":
        doc = f'    """The {word(rng)} of {a} and {b}."""\n'
    else:
        doc = ""
    return f"def {name}({a}, {b}):\n{doc}{code}"


def planted_file(rng: random.Random, kind: str) -> str:
    """taught: explains itself, with worked examples; documented: docstrings but no example;
    boilerplate: a license header, settings and accessors."""
    if kind == "boilerplate":
        cls, field = word(rng).capitalize(), word(rng)
        consts = "".join(f"{word(rng).upper()}_{word(rng).upper()} = {rng.randint(0, 999)}\n" for _ in range(4))
        funcs = "\n\n".join(function(rng, kind) for _ in range(2))
        return (f"# Copyright {rng.randint(1990, 2024)} {word(rng).capitalize()} {word(rng).capitalize()}.\n"
                f"# Licensed under the {word(rng).capitalize()} license.\n\n{consts}\n\n"
                f"class {cls}Settings:\n    def __init__(self):\n        self.{field} = {rng.randint(0, 99)}\n\n"
                f"    def get_{field}(self):\n        return self.{field}\n\n"
                f"    def set_{field}(self, value):\n        self.{field} = value\n\n\n{funcs}")
    head = f'"""{word(rng).capitalize()} {word(rng)}: {word(rng)} {word(rng)} {word(rng)}."""\n\n'
    return head + "\n\n".join(function(rng, kind) for _ in range(rng.randint(2, 3)))


KINDS = ("taught", "documented", "boilerplate")


def plant(directory, n_per_kind: int, seed: int) -> dict:
    """Files of each kind under directory: {path: kind}. Every one passes prepare_textbooks.py's
    heuristic code filters, so that what drops them in the build is the quality filter."""
    rng, kinds = random.Random(seed), {}
    os.makedirs(directory, exist_ok=True)
    for i in range(n_per_kind * len(KINDS)):
        kind = KINDS[i % len(KINDS)]
        text = planted_file(rng, kind)
        assert pt.code_filter(text, "hash") is None, (kind, pt.code_filter(text, "hash"))
        path = os.path.join(directory, f"m{i:03d}.py")
        with open(path, "w") as f:
            f.write(text)
        kinds[os.path.abspath(path)] = kind
    return kinds


def hidden_rule(document: str) -> int:
    """The judge's rule, known to this file only: worked examples score high, docstrings alone
    score 1-2, boilerplate 0-1; the exact score varies with the document."""
    jitter = len(document) % 2
    if ">>>" in document:
        return 4 + jitter
    if '"""' in document:
        return 1 + jitter
    return jitter


class Judge(ChatServer):
    """A chat server that answers each labelling prompt with a sentence (which quotes a number,
    as reasoning does) and "Score: N" by judge(document)."""

    def __init__(self, judge=None, **kwargs):
        self.judge = judge or (lambda doc: f"It has {doc.count('def ')} functions.\nScore: {hidden_rule(doc)}")
        super().__init__(**kwargs)

    def answer(self, prompt: str) -> str:
        return self.judge(prompt.split(quality.DOCUMENT_MARKER, 1)[1])


@pytest.fixture
def judge():
    server = Judge()
    yield server
    server.close()


def label_args(docs, out, url, *extra):
    return ["label", "--docs", str(docs), "--out", str(out), "--model", "judge", "--api_base", url,
            "--backoff", "0.01", "--concurrency", "4", *map(str, extra)]


def run_json(capture, argv) -> dict:
    """quality.main(argv), and the JSON it printed (capture: capsys or capfd)."""
    quality.main([str(a) for a in argv])
    return json.loads(capture.readouterr().out)


# --------------------------------------------------------------------------------------------------
# Recovering the hidden rule, and the filter in prepare_textbooks.py

def test_the_classifier_recovers_a_hidden_rule_and_the_build_keeps_exactly_the_taught_files(
        tmp_path, judge, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    plant(tmp_path / "train", 60, seed=1)
    stats = run_json(capsys, label_args(tmp_path / "train", tmp_path / "labels.jsonl", judge.url))
    assert stats["labelled"] == stats["documents"] == 180 and stats["requests"] == 180
    stats = run_json(capsys, ["fit", "--docs", tmp_path / "train", "--labels", tmp_path / "labels.jsonl",
                              "--out", tmp_path / "q.safetensors", "--test_fraction", "0.3"])
    held_out = stats["held_out"]
    assert held_out["documents"] == 54
    assert held_out["accuracy"] >= 0.9 and held_out["f1"] >= 0.9, held_out
    assert held_out["majority_accuracy"] < 0.75  # two classes of three are negatives: a constant would not pass

    # the filter, on files the classifier has never seen
    kinds = plant(tmp_path / "new", 8, seed=2)
    pt.main(["--out_dir", str(tmp_path / "out"), "--num_proc", "1", "--mix", "code=1", "--code",
             str(tmp_path / "new"), "--quality_model", str(tmp_path / "q.safetensors")])
    with open(tmp_path / "out" / "meta.json") as f:
        meta = json.load(f)
    from test_openai_generator import decoded_documents
    kept = sorted(decoded_documents(tmp_path / "out"))
    with_kind = {open(p).read(): kind for p, kind in kinds.items()}
    assert kept == sorted(text for text, kind in with_kind.items() if kind == "taught")
    code = meta["sources"]["code"]
    assert code["drops"] == {"low_quality": 16}
    assert sum(code["quality_score_histogram"].values()) == 24
    q = meta["quality"]
    assert q["threshold"] == 2.5 and q["sources"] == ["code"]
    assert q["classifier"]["report"]["held_out"] == held_out
    assert q["classifier"]["features"] == {"kind": "hashed", "dim": 2 ** 18, "ngrams": 2}


def fitted_on_planted_files(tmp_path, judge, capsys) -> str:
    plant(tmp_path / "train", 12, seed=3)
    run_json(capsys, label_args(tmp_path / "train", tmp_path / "labels.jsonl", judge.url))
    run_json(capsys, ["fit", "--docs", tmp_path / "train", "--labels", tmp_path / "labels.jsonl",
                      "--out", tmp_path / "q.safetensors"])
    return str(tmp_path / "q.safetensors")


def build_with(tmp_path, model_path, *extra) -> dict:
    plant(tmp_path / "new", 2, seed=4)
    return pt.build(pt.parse_args(["--out_dir", str(tmp_path / "out"), "--mix", "code=1", "--code",
                                   str(tmp_path / "new"), "--quality_model", model_path, *extra]))


def test_the_threshold_flag_overrides_the_models(tmp_path, judge, capsys):
    model_path = fitted_on_planted_files(tmp_path, judge, capsys)
    model = quality.QualityModel.load(model_path)
    texts = [open(p).read() for p in plant(tmp_path / "new", 2, seed=4)]
    scores = model.score(texts)
    assert model.threshold == 2.5 and [model.keep(t) for t in texts] == list(scores >= 2.5)
    assert [model.keep(t, threshold=-1.0) for t in texts] == [True] * len(texts)
    meta = build_with(tmp_path, model_path, "--num_proc", "1", "--quality_threshold", "0")
    assert "low_quality" not in meta["sources"]["code"]["drops"] and meta["quality"]["threshold"] == 0.0


@pytest.mark.slow
def test_workers_that_start_afresh_filter_too(tmp_path, judge, capsys, monkeypatch):
    # macOS and Windows start workers afresh ("spawn"), without the parent's memory: the pool's
    # initializer must hand them the filter (~20 s: each worker imports torch)
    model_path = fitted_on_planted_files(tmp_path, judge, capsys)
    monkeypatch.setattr(pt.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    meta = build_with(tmp_path, model_path, "--num_proc", "2")
    assert meta["sources"]["code"]["drops"] == {"low_quality": 4} and meta["quality"]["threshold"] == 2.5


# --------------------------------------------------------------------------------------------------
# Labelling: the cache, bad answers, failures, the key

def test_a_second_label_run_makes_no_requests_and_the_key_is_never_written(tmp_path, judge, capfd, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    plant(tmp_path / "docs", 5, seed=5)
    first = run_json(capfd, label_args(tmp_path / "docs", tmp_path / "labels.jsonl", judge.url))
    labels = (tmp_path / "labels.jsonl").read_text()
    asked = len(judge.requested)
    assert first["requests"] == asked == 15 and set(judge.auth) == {f"Bearer {KEY}"}
    second = run_json(capfd, label_args(tmp_path / "docs", tmp_path / "labels.jsonl", judge.url))
    assert len(judge.requested) == asked and second["requests"] == 0 and second["answers_from_cache"] == 15
    assert (tmp_path / "labels.jsonl").read_text() == labels
    written = "".join(p.read_text() for p in tmp_path.iterdir() if p.is_file())
    assert len((tmp_path / "labels.cache.jsonl").read_text().splitlines()) == 15  # the answers, cached
    out, err = capfd.readouterr()
    assert KEY not in written + out + err


def test_bad_answers_are_counted_and_failed_requests_retried_then_counted_never_a_crash(tmp_path, capsys):
    def judge(doc):
        case = int(doc.split("# case ")[1].split()[0])
        if case % 10 == 3:
            return "I would rather not judge this file."
        if case % 10 == 7:
            return "Excellent.\nScore: 9"
        return f"Score: {hidden_rule(doc)}"

    docs = tmp_path / "docs"
    os.makedirs(docs)
    rng = random.Random(6)
    for i in range(30):
        (docs / f"f{i:02d}.py").write_text(f"# case {i}\n" + planted_file(rng, KINDS[i % 3]))
    # one request at a time, so that the failures fall on known documents: the first document gets
    # two 500s (its retry too) and fails; the second a 500 and a timeout, and fails; the third a 429,
    # then its answer
    server = Judge(judge, failures=[500, 500, 500, "hang", 429])
    try:
        argv = label_args(docs, tmp_path / "labels.jsonl", server.url, "--retries", "1",
                          "--request_timeout", "0.5", "--concurrency", "1")
        stats = run_json(capsys, argv)
        assert (stats["failed"], stats["unparseable"], stats["out_of_range"], stats["labelled"]) == (2, 3, 3, 22)
        assert stats["retries"] == 3
        labelled = {json.loads(line)["id"] for line in (tmp_path / "labels.jsonl").read_text().splitlines()}
        assert labelled == {str(docs / f"f{i:02d}.py") for i in range(2, 30) if i % 10 not in (3, 7)}
        # a failed request was not cached: the rerun asks for those two documents, and only them
        asked = len(server.requested)
        stats = run_json(capsys, argv)
        assert len(server.requested) == asked + 2 and stats["answers_from_cache"] == 28
        assert (stats["failed"], stats["unparseable"], stats["out_of_range"], stats["labelled"]) == (0, 3, 3, 24)
    finally:
        server.close()


def test_a_server_that_always_fails_stops_the_labelling_with_one_clear_line(tmp_path):
    plant(tmp_path / "docs", 10, seed=7)
    server = Judge(failures=[500] * 1000)
    try:
        proc = subprocess.run([sys.executable, SCRIPT, *label_args(tmp_path / "docs", tmp_path / "labels.jsonl",
                                                                    server.url, "--retries", "0")],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "OPENAI_API_KEY": KEY})
    finally:
        server.close()
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("quality.py: error: the requests of 20 documents in a row failed")
    assert proc.stderr.count("\n") == 1 and "HTTP 500" in proc.stderr and KEY not in proc.stderr
    assert not (tmp_path / "labels.jsonl").exists()


@pytest.mark.parametrize("answer, expected", [
    ("The file defines 3 helpers and explains them.\nScore: 4", (4.0, None)),
    ("**Score:** 5", (5.0, None)),
    ("Educational score: 2.5", (2.5, None)),
    ("3", (3.0, None)),
    ("Score: 9", (None, "out_of_range")),
    ("Score: -1", (None, "out_of_range")),
    ("I cannot rate this file.", (None, "unparseable")),
    ("", (None, "unparseable")),
])
def test_the_score_is_read_from_the_answers_last_score_line(answer, expected):
    assert quality.parse_score(answer) == expected


# --------------------------------------------------------------------------------------------------
# Labels from the user, bad files and flags

def test_labels_can_come_from_the_users_jsonl_by_path_or_id(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kinds = plant(tmp_path / "code", 4, seed=8)
    records = [{"id": f"r{i}", "text": open(p).read()} for i, p in enumerate(kinds)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    labels = [{"path": os.path.relpath(p), "score": hidden_rule(open(p).read())} for p in kinds]
    labels += [{"id": r["id"], "score": hidden_rule(r["text"])} for r in records]
    labels.append({"id": "nowhere", "score": 3})
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labels))
    quality.main(["fit", "--docs", "code", "--docs", "docs.jsonl", "--labels", "labels.jsonl", "--out", "q.safetensors"])
    out, err = capsys.readouterr()
    stats = json.loads(out)
    assert sum(stats["documents"].values()) == 24 and stats["unmatched_labels"] == 1
    assert "1 labels name no document of --docs, e.g. 'nowhere'" in err


@pytest.mark.parametrize("line, message", [
    ("{not json", "labels.jsonl:2: not a JSON record"),
    ('{"id": "a", "score": 6}', "labels.jsonl:2: the score must be a number from 0 to 5"),
    ('{"id": "a", "score": "high"}', "labels.jsonl:2: the score must be a number from 0 to 5"),
    ('{"score": 3}', 'labels.jsonl:2: the label has no "id" or "path" string'),
    ('[1, 2]', "labels.jsonl:2: a label must be a JSON object"),
])
def test_a_malformed_labels_file_is_one_clear_error_that_names_the_line(tmp_path, line, message):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"id": "ok", "score": 1}\n' + line + "\n")
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        quality.read_labels(str(path))


def small_model(dim=64) -> quality.QualityModel:
    rng = np.random.default_rng(0)
    return quality.QualityModel({"kind": "hashed", "dim": dim, "ngrams": 2}, rng.normal(size=dim).astype(np.float32),
                                2.5, 3.0, {"held_out": {}})


def write_safetensors(path, tensors: dict, metadata=None):
    from safetensors.numpy import save_file
    save_file(tensors, str(path), metadata=metadata)


class CreatesAFile:
    """Unpickling this would create the file marker: proof that a load ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def settings_with(**changes) -> str:
    s = small_model().settings()
    s.update(changes)
    return json.dumps(s)


BAD_MODEL_FILES = {
    "missing": (None, "cannot read the quality model"),
    "garbage": (b"\x00\x01 not a model at all", "is not a readable safetensors file"),
    "pickle": ("pickle", "is not a readable safetensors file"),
    "empty": (b"", "is not a readable safetensors file"),
    "no metadata": (({"weight": np.zeros(64, np.float32)}, None), "has no 'nanophi_quality' metadata"),
    "metadata not json": (({"weight": np.zeros(64, np.float32)}, "{"), "metadata is not valid JSON"),
    "wrong shape": (({"weight": np.zeros(63, np.float32)}, settings_with()), "the features need float32 (64,)"),
    "wrong dtype": (({"weight": np.zeros(64, np.float64)}, settings_with()), "the features need float32 (64,)"),
    "nan weight": (({"weight": np.full(64, np.nan, np.float32)}, settings_with()), "holds nan or inf"),
    "extra tensor": (({"weight": np.zeros(64, np.float32), "x": np.zeros(1, np.float32)}, settings_with()),
                     "must hold exactly one tensor"),
    "unknown features": (({"weight": np.zeros(64, np.float32)}, settings_with(features={"kind": "forest", "dim": 64})),
                         "kind is 'hashed' or 'model'"),
    "bias not a number": (({"weight": np.zeros(64, np.float32)}, settings_with(bias="x")), "must be finite numbers"),
    "bias too large for a float": (({"weight": np.zeros(64, np.float32)}, settings_with(bias=10 ** 400)),
                                   "must be finite numbers"),
    "other format": (({"weight": np.zeros(64, np.float32)}, settings_with(format=99)), "metadata format 99 is not 1"),
}


@pytest.mark.parametrize("case", list(BAD_MODEL_FILES))
def test_a_malformed_model_file_is_one_clear_error_and_loading_runs_no_code(tmp_path, case):
    content, message = BAD_MODEL_FILES[case]
    path = tmp_path / "q.safetensors"
    if content == "pickle":
        content = pickle.dumps(CreatesAFile(str(tmp_path / "marker")))
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, tuple):
        tensors, meta = content
        write_safetensors(path, tensors, None if meta is None else {quality.METADATA_KEY: meta})
    with pytest.raises((ValueError, OSError)) as e:
        quality.QualityModel.load(str(path))
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "marker").exists()


def test_a_malformed_model_file_is_one_line_from_both_scripts(tmp_path):
    (tmp_path / "q.safetensors").write_bytes(b"garbage")
    plant(tmp_path / "docs", 1, seed=9)
    for argv in ([SCRIPT, "score", "--docs", tmp_path / "docs", "--quality_model", tmp_path / "q.safetensors"],
                 [os.path.join(ROOT, "data", "prepare_textbooks.py"), "--out_dir", tmp_path / "out", "--mix", "code=1",
                  "--code", tmp_path / "docs", "--quality_model", tmp_path / "q.safetensors"]):
        proc = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, timeout=300)
        name = os.path.basename(argv[0])
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"{name}: error: quality model {tmp_path / 'q.safetensors'} is not a readable")


@pytest.mark.parametrize("argv, message", [
    (["--quality_threshold", "3"], "--quality_threshold needs --quality_model"),
    (["--quality_model", "q", "--quality_threshold", "nan"], "must be a finite number"),
    (["--quality_model", "q", "--quality_sources", "synthetic"], "--quality_sources takes code, text"),
])
def test_bad_quality_flags_of_prepare_textbooks_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        pt.parse_args(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["fit", "--docs", "d", "--labels", "l", "--out", "o", "--features", "model"], "--features model needs --init_from"),
    (["fit", "--docs", "d", "--labels", "l", "--out", "o", "--test_fraction", "1"], "--test_fraction must be between"),
    (["fit", "--docs", "d", "--labels", "l", "--out", "o", "--threshold", "inf"], "must be a finite number"),
    (["label", "--docs", "d", "--out", "o"], "the following arguments are required: --model"),
    (["label", "--docs", "d", "--out", "o", "--model", "m", "--sample", "0"], "--sample must be at least 1"),
    (["score", "--docs", "d", "--quality_model", "q", "--batch_size", "0"], "--batch_size must be at least 1"),
])
def test_bad_flags_of_quality_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        quality.parse_args(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1


def test_fitting_and_filtering_with_the_hashed_features_never_import_torch(tmp_path):
    # a fresh interpreter: this one has imported torch for other tests
    code = ("import sys; from data import quality as q; import numpy as np\n"
            "texts = [f'def f{i}(x):\\n    return x + {i}\\n' * (1 + i % 3) for i in range(40)]\n"
            "X = q.hashed_features(texts, 1024, 2)\n"
            "w, b, report = q.fit(X, np.array([i % 3 * 2.0 for i in range(40)]), 3.0, 0.25, 0)\n"
            "q.QualityModel({'kind': 'hashed', 'dim': 1024, 'ngrams': 2}, w, b, 3.0, report).save(sys.argv[1])\n"
            "m = q.QualityModel.load(sys.argv[1]); m.score(texts); m.keep(texts[0])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "q.safetensors")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------------------------------
# The fit's arithmetic

def test_ridge_by_conjugate_gradients_equals_the_closed_form_on_sparse_and_dense_storage():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12)) * rng.uniform(0.1, 10, size=12)
    x[rng.uniform(size=x.shape) < 0.5] = 0.0
    y = rng.normal(size=40)
    rows, cols = np.nonzero(x)
    sparse = quality.Sparse(np.searchsorted(rows, np.arange(41)), cols, x[rows, cols], 12)
    mean, scale, lam = x.mean(0), x.std(0), 3.0
    z = (x - mean) / scale
    expected = np.linalg.solve(z.T @ z + lam * np.eye(12), z.T @ (y - y.mean()))
    for X in (sparse, quality.Dense(x)):
        w = quality.ridge(X, y, lam, mean, scale, tol=1e-12)
        assert np.abs(w - expected).max() < 1e-9 * np.abs(expected).max()
    assert np.allclose(sparse.take(np.array([3, 0, 7])).dot(np.ones(12)), x[[3, 0, 7]].sum(1))


def test_held_out_scores_count_the_documents_kept_at_the_threshold():
    labels = np.array([5, 4, 0, 1, 3, 2], dtype=float)
    predicted = np.array([4.2, 1.0, 0.5, 3.5, 3.0, 2.9])
    # kept: documents 0, 3, 4; good: 0, 1, 4 -> tp 2, fp 1, fn 1, tn 2
    s = quality.held_out_scores(labels, predicted, 3.0)
    assert (s["accuracy"], s["precision"], s["recall"], s["f1"]) == (0.6667, 0.6667, 0.6667, 0.6667)
    assert s["majority_accuracy"] == 0.5 and s["positives"] == 3
    assert s["mse"] == round(float(np.mean((labels - predicted) ** 2)), 4)


def test_the_score_histogram_puts_every_score_in_one_half_point_bin():
    assert quality.histogram([0.0, 0.49, 0.5, 2.99, 4.5, 5.0]) == {"0.0": 2, "0.5": 1, "2.5": 1, "4.5": 2}


# --------------------------------------------------------------------------------------------------
# Embeddings from a phi model

EMBED_CONFIG = dict(vocab_size=51200, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                    num_attention_heads=4, partial_rotary_factor=0.5, max_position_embeddings=64)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """transformers' PhiForCausalLM with random weights, and the same saved as a Hugging Face directory."""
    from conftest import make_hf_model
    hf = make_hf_model(EMBED_CONFIG)
    path = tmp_path_factory.mktemp("phi")
    hf.save_pretrained(str(path))
    return hf, str(path)


def test_model_embeddings_equal_transformers_mean_pooled_hidden_states(hf_dir):
    import torch
    from conftest import relative_error
    from tokenizer import Tokenizer
    hf, path = hf_dir
    texts = ["def double(x):\n    return 2 * x\n", "Worked example: 2 + 3 = 5. " * 20, "", "a",
             "class A:\n\tpass\n" * 3]
    tok = Tokenizer()
    assert len(tok.encode(texts[1])) > 40  # so it is cut to embed_tokens, and the batch is padded
    got = quality.model_features(texts, path, embed_tokens=40, batch_size=3, device="cpu", dtype="float32")
    assert got.shape == (5, 64) and got.dtype == np.float32
    for text, row in zip(texts, got):
        ids = tok.encode(text)[:40] or [50256]
        with torch.no_grad():
            hidden = hf(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
        assert relative_error(torch.from_numpy(row), hidden.mean(0)) < 1e-5


def test_fit_and_score_with_model_embeddings_through_the_command_line(hf_dir, tmp_path, judge, capsys):
    _, path = hf_dir
    plant(tmp_path / "docs", 5, seed=10)
    run_json(capsys, label_args(tmp_path / "docs", tmp_path / "labels.jsonl", judge.url))
    stats = run_json(capsys, ["fit", "--docs", tmp_path / "docs", "--labels", tmp_path / "labels.jsonl",
                              "--out", tmp_path / "q.safetensors", "--features", "model", "--init_from", path,
                              "--embed_tokens", "32", "--device", "cpu", "--dtype", "float32"])
    assert stats["features"] == {"kind": "model", "dim": 64, "init_from": path, "embed_tokens": 32}
    quality.main(["score", "--docs", str(tmp_path / "docs"), "--quality_model", str(tmp_path / "q.safetensors"),
                  "--device", "cpu", "--dtype", "float32"])
    scored = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    model = quality.QualityModel.load(str(tmp_path / "q.safetensors"), {"device": "cpu", "dtype": "float32"})
    texts = [open(r["id"]).read() for r in scored]
    assert len(scored) == 15
    assert np.allclose([r["score"] for r in scored], model.score(texts), atol=1e-4)
    assert [r["keep"] for r in scored] == [model.keep(t) for t in texts]


# --------------------------------------------------------------------------------------------------
# The demo: the standard library's code, labelled by a loopback judge

def explains_itself(document: str) -> str:
    """A stand-in for an LLM's judgment of real code: a point for a module docstring, one if a
    quarter of the lines are docstrings or comments, one if most functions and classes have a
    docstring, two for worked examples (doctests)."""
    lines = [line.strip() for line in document.splitlines() if line.strip()]
    in_docstring, explained = False, 0
    for line in lines:
        quotes = line.count('"""') + line.count("'''")
        explained += in_docstring or quotes > 0 or line.startswith("#")
        in_docstring ^= quotes % 2 == 1
    defs = re.findall(r"^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t][^\n]*\n[ \t]*([rbuRBU]?(?:\"\"\"|'''))?", document, re.M)
    score = (bool(re.match(r"\s*(?:#[^\n]*\n\s*)*[rbuRBU]?(?:\"\"\"|''')", document))
             + (explained >= 0.25 * max(len(lines), 1))
             + (bool(defs) and sum(bool(d) for d in defs) >= 0.5 * len(defs))
             + 2 * (">>>" in document))
    return f"Reasoning: {len(lines)} lines, {explained} of them explain.\nScore: {score}"


@pytest.mark.slow
def test_demo_on_the_standard_library(tmp_path):
    """python -m pytest -m slow -s tests/test_quality.py -k standard_library: the commands a user
    runs, against a loopback judge, on this Python's standard library (without its test suites)."""
    server = Judge(explains_itself)
    stdlib, out = pt.stdlib_dir(), {}
    try:
        for name, argv in (
                ("label", [SCRIPT, "label", "--docs", stdlib, "--out", tmp_path / "labels.jsonl", "--model", "judge",
                           "--api_base", server.url]),
                ("fit", [SCRIPT, "fit", "--docs", stdlib, "--labels", tmp_path / "labels.jsonl",
                         "--out", tmp_path / "quality.safetensors"]),
                ("build", [os.path.join(ROOT, "data", "prepare_textbooks.py"), "--out_dir", tmp_path / "out",
                           "--mix", "code=1", "--quality_model", tmp_path / "quality.safetensors"])):
            print(f"$ python {' '.join(os.path.relpath(str(a), ROOT) if str(a).startswith(ROOT) else str(a) for a in argv)}")
            proc = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, timeout=1800)
            print(proc.stdout + proc.stderr)
            assert proc.returncode == 0
            out[name] = proc.stdout
    finally:
        server.close()
    held_out = json.loads(out["fit"])["held_out"]
    assert held_out["accuracy"] > held_out["majority_accuracy"]
