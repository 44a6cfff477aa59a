"""
The educational-value filter of phi-1 ("Textbooks Are All You Need", section 2.1) and FineWeb-Edu:
an LLM scores a sample of documents, a model learns to predict that score from features of the
text, and the corpus build keeps only what it predicts high.

    python data/quality.py label --docs DIR --sample 2000 --out labels.jsonl --model MODEL --api_base URL
    python data/quality.py fit   --docs DIR --labels labels.jsonl --out quality.safetensors
    python data/quality.py score --docs DIR --quality_model quality.safetensors --out scores.jsonl
    python data/prepare_textbooks.py --code DIR --quality_model quality.safetensors

label   A seeded sample of the documents (--sample) goes to any OpenAI-compatible chat endpoint
        through data/openai_generator.py's client, with its protections: --concurrency requests
        in flight, retries with exponential backoff on 429, 5xx and network errors, a resumable
        cache of every answer (--cache, default: next to --out; a rerun sends nothing already
        answered), the key read from $OPENAI_API_KEY (--api_key_env) and never logged or cached.
        The prompt asks phi-1's question, the document's "educational value for a student whose
        goal is to learn basic coding concepts" (--kind text: for a student who wants to learn),
        on FineWeb-Edu's 0-5 scale, with a sentence of reasoning first and "Score: N" last. An
        answer with no number, or one outside 0-5, is counted and left out (it is cached, so it
        is not asked again); a request that still fails after --retries retries is counted and
        left out (not cached: a rerun asks again), and 20 such documents in a row stop the run
        with an error. Output: JSONL records {"id": ..., "score": ...}, written atomically.
        Labels may instead come from a JSONL file of your own: {"id" or "path": ..., "score": 0-5}.
fit     Features of the labelled documents (below), then a linear regression head on the 0-5
        score, as FineWeb-Edu's: ridge regression solved by conjugate gradients, its L2 strength
        chosen from a grid on a validation part of the training documents. --test_fraction of
        the documents (seeded) are held out; the report gives, at --threshold, the held-out
        accuracy, precision, recall and F1 of "predicted score >= threshold" as a prediction of
        "label >= threshold", the accuracy of always answering the majority class, and the mean
        squared error. The default threshold, 2.5, is FineWeb-Edu's: it keeps pages whose
        predicted score rounds to 3 or more, and with whole-number labels "label >= 2.5" is
        "label >= 3". The saved model is the one those held-out scores describe (trained without
        the test part), and its threshold is the filter's default.
score   Predicted scores, clipped to 0-5, as JSONL {"id", "score", "keep"}.

Documents (--docs, repeatable): a directory (its files with --extensions, default .py, skipping
hidden, cache and test directories), a JSONL file (.jsonl or .jsonl.gz: records with --text_field,
their id in --id_field or else FILE:LINE), or any other file (one document). A file's id is its
absolute path; label, fit and score given the same --docs agree on the ids.

Features (--features):
  hashed  the default; needs no weights, no GPU and no torch. The document's phi tokens (the
          tokenizer of tokenizer.py), their n-grams for n = 1..--ngrams (default 2) hashed into
          --dim (default 2^18) columns; log(1 + count), each row scaled to unit length.
  model   mean-pooled final hidden states (after the final LayerNorm) of any --init_from value
          that load_model takes: phi-1.5's or phi-1's Hugging Face weights (microsoft/phi-1_5, a
          local directory), a nanophi checkpoint (.pt) or scratch:PRESET; the first --embed_tokens
          (default 1024) tokens of each document, in batches of --batch_size, on --device (a GPU
          when there is one) in --dtype. These are phi-1's features (it used a CodeGen model's).
          They equal the mean of transformers' PhiForCausalLM's last output_hidden_states.
phi-1 fitted a random forest to its embeddings and FineWeb-Edu a linear head. A linear head is
used for both kinds of features: on 2^18 sparse hashed columns a forest finds little to split on,
while ridge regression needs only products with the sparse matrix; it is a few lines of numpy, so
scikit-learn is not needed.

How well the hashed features do depends on the labels. A rule of what a file contains is learnt
exactly (the tests: held-out accuracy and F1 of 1.0 for worked examples against docstrings alone
against boilerplate). On this Python's standard library (734 files), labelled by the tests' stand-in
judge, a rule of proportions (how many lines and functions explain; python -m pytest -m slow -s
tests/test_quality.py -k standard_library), the held-out accuracy is 0.82 against 0.78 for always
answering "drop", F1 0.48 (0.41-0.59 over seeds 1-4): 587 training files are few for 2^18 columns.
phi-1 had 100k labels and a code model's embeddings.

The model file is safetensors: one float32 tensor "weight" (the head's weights, with the
standardisation folded in) and a JSON string in the metadata with the bias, the threshold, the
feature settings and the fit's report (settings, label histogram, held-out scores). Loading it
reads numbers and JSON only, never pickle, so it cannot run code; a missing, malformed or
inconsistent file is one clear error.

With a real endpoint and phi-1.5's weights (on a GPU machine):

    export OPENAI_API_KEY=...
    python data/quality.py label --docs ~/the-stack-python --sample 100000 --out labels.jsonl \\
        --model gpt-4o --api_base https://api.openai.com/v1 --concurrency 32
    python data/quality.py fit --docs ~/the-stack-python --labels labels.jsonl --out quality.safetensors \\
        --features model --init_from microsoft/phi-1_5
    python data/prepare_textbooks.py --code ~/the-stack-python --quality_model quality.safetensors --num_proc 2

With --features model, each worker of prepare_textbooks.py (--num_proc) loads its own copy of the
language model on the device: use a few workers. --extensions .js,.go (say) takes other languages'
files from directories.
"""

import argparse
import functools
import gzip
import hashlib
import json
import math
import os
import random
import re
import sys
from collections import Counter
from typing import Iterable, Iterator, Optional

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script, data/ is on the path but the repository root is not
    sys.path.insert(0, ROOT)

from common import Parser, atomic_write, finite_float, run_script  # noqa: E402
from data.openai_generator import (OpenAIConfig, add_arguments as add_openai_arguments, answers,  # noqa: E402
                                   check_arguments as check_openai_arguments, config_from_args)
from tokenizer import EOT_ID, Tokenizer, check_vocab_size  # noqa: E402

FORMAT = 1  # of the model file's metadata
METADATA_KEY = "nanophi_quality"
SCORE_RANGE = (0.0, 5.0)
DEFAULT_THRESHOLD = 2.5  # FineWeb-Edu keeps pages whose predicted score rounds to 3 or more
HISTOGRAM_BIN = 0.5
MIN_LABELS = 10  # fewer labelled documents cannot be split into train, validation and test
MAX_FAILED_IN_A_ROW = 20  # documents whose request failed after every retry, in a row: stop


# --------------------------------------------------------------------------------------------------
# Documents

SKIP_DIRS = {"test", "tests", "idle_test", "__pycache__", "site-packages", "dist-packages", "node_modules"}


def is_table(path: str) -> bool:
    return path.lower().endswith((".jsonl", ".jsonl.gz"))


def documents(paths: Iterable[str], extensions: tuple = (".py",), text_field: str = "text",
              id_field: str = "id", skipped: Optional[Counter] = None) -> Iterator[tuple]:
    """(id, text) of every document under paths, in a fixed order. Unreadable files, files that
    are not UTF-8 and records without text are counted in skipped, not fatal; a path that does not
    exist is an error."""
    skipped = Counter() if skipped is None else skipped
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"--docs {path} does not exist")
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
                for name in sorted(files):
                    if name.lower().endswith(extensions):
                        yield from _file_documents(os.path.join(root, name), text_field, id_field, skipped)
        else:
            yield from _file_documents(path, text_field, id_field, skipped)


def _file_documents(path: str, text_field: str, id_field: str, skipped: Counter) -> Iterator[tuple]:
    path = os.path.abspath(path)
    if not os.path.isfile(path):  # a FIFO, socket or device: opening it could block for ever
        skipped["not_regular_file"] += 1
        return
    try:
        if not is_table(path):
            with open(path, "rb") as f:
                yield path, f.read().decode("utf-8")
            return
        with (gzip.open(path, "rt", encoding="utf-8") if path.lower().endswith(".gz")
              else open(path, encoding="utf-8")) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except (ValueError, RecursionError):
                    skipped["bad_json"] += 1
                    continue
                text = rec.get(text_field) if isinstance(rec, dict) else None
                if not isinstance(text, str):
                    skipped["missing_field"] += 1
                    continue
                doc_id = rec.get(id_field)
                yield (str(doc_id) if isinstance(doc_id, (str, int)) and not isinstance(doc_id, bool)
                       else f"{path}:{n}"), text
    except (OSError, UnicodeDecodeError, EOFError):
        skipped["unreadable"] += 1


# --------------------------------------------------------------------------------------------------
# Labels from an LLM

QUESTIONS = {
    "code": "Determine its educational value for a student whose goal is to learn basic coding concepts.",
    "text": "Determine its educational value for a student who wants to learn from it.",
}
SCALE = """Use this scale from 0 to 5:
0: no educational value: boilerplate, configuration, data tables, generated or garbled content.
1: little value: correct, but trivial, or impossible to follow without context it does not give.
2: some value: meaningful content, but unexplained or tangled, so a student would struggle to learn from it.
3: useful: clear and self-contained, with meaningful content and some explanation.
4: valuable: well explained; it teaches a concept and says what it does and why.
5: outstanding: reads like a good textbook, explaining the ideas step by step with worked examples.
First give one sentence of reasoning. Then, on the last line, write "Score: N", where N is the score."""
DOCUMENT_MARKER = "\n\n=== DOCUMENT ===\n"
CUT_NOTE = "\n[... the rest of the document is cut off ...]"
_SCORE = re.compile(r"score\W{0,3}?\s*(?:is\s*)?[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)", re.I)
_BARE_NUMBER = re.compile(r"\s*\**\s*(-?\d+(?:\.\d+)?)\s*\**\s*\.?\s*")


def label_prompt(text: str, kind: str, max_chars: int) -> str:
    name = "source file" if kind == "code" else "document"
    body = text[:max_chars] + (CUT_NOTE if len(text) > max_chars else "")
    return f"Below is a {name}. {QUESTIONS[kind]}\n{SCALE}{DOCUMENT_MARKER}{body}"


def parse_score(answer: str) -> tuple:
    """(score, None), or (None, why not): "unparseable" when the answer holds no score, or
    "out_of_range" when the score is not within 0-5. The last "Score: N" counts (a reasoning
    sentence may quote other numbers); an answer that is only a number is that number."""
    found = _SCORE.findall(answer)
    if not found:
        bare = _BARE_NUMBER.fullmatch(answer)
        if bare is None:
            return None, "unparseable"
        found = [bare[1]]
    score = float(found[-1])
    if not SCORE_RANGE[0] <= score <= SCORE_RANGE[1]:
        return None, "out_of_range"
    return score, None


def sample_documents(docs: Iterable[tuple], n: Optional[int], seed: int) -> list:
    """n documents chosen uniformly at random (reservoir sampling, so the corpus is read once and
    only the sample is held), in corpus order; all of them when n is None."""
    if n is None:
        return list(docs)
    rng, reservoir = random.Random(seed), []
    for i, doc in enumerate(docs):
        if i < n:
            reservoir.append((i, doc))
        else:
            j = rng.randrange(i + 1)
            if j < n:
                reservoir[j] = (i, doc)
    return [doc for _, doc in sorted(reservoir, key=lambda x: x[0])]


def label(docs: list, cfg: OpenAIConfig, cache_path: str, kind: str = "code", max_chars: int = 6000,
          log=None) -> tuple:
    """({id: score}, stats) for docs [(id, text)], asked of the endpoint in cfg. See the header."""
    stats = {}
    labels, problems, failed_in_a_row = {}, Counter(), 0
    records = answers(cfg, (label_prompt(text, kind, max_chars) for _, text in docs), cache_path, stats,
                      log, skip_failed=True)
    try:
        for (doc_id, _), rec in zip(docs, records):
            if "error" in rec:
                problems["failed"] += 1
                failed_in_a_row += 1
                if failed_in_a_row >= MAX_FAILED_IN_A_ROW:
                    raise RuntimeError(f"the requests of {MAX_FAILED_IN_A_ROW} documents in a row failed, the "
                                       f"last with: {rec['error']}")
                continue
            failed_in_a_row = 0
            score, why = parse_score(rec["text"])
            if why:
                problems[why] += 1
            else:
                labels[doc_id] = score
    finally:
        records.close()
    out = {"documents": len(docs), "labelled": len(labels), "unparseable": problems["unparseable"],
           "out_of_range": problems["out_of_range"], "failed": problems["failed"],
           "requests": stats["requests"], "retries": stats["retries"],
           "answers_from_cache": stats["answers_from_cache"], "truncated_answers": stats["truncated"],
           "label_histogram": label_histogram(labels.values()), "model": cfg.model, "api_base": cfg.api_base}
    return labels, out


def write_labels(path: str, labels: dict) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            for doc_id, score in labels.items():
                f.write(json.dumps({"id": doc_id, "score": score}, ensure_ascii=False) + "\n")
    atomic_write(path, write)


def read_labels(path: str) -> dict:
    """{id: score} from a JSONL file of {"id" or "path": ..., "score": 0-5}; a "path" is a file's
    id, its absolute path. A line that is not such a record is an error that names it."""
    labels = {}
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8").splitlines()
    except OSError as e:
        raise OSError(f"cannot read the labels file {path} ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ValueError(f"the labels file {path} is not UTF-8 text") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            raise ValueError(f"{path}:{n}: not a JSON record") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{n}: a label must be a JSON object with an id (or path) and a score")
        key = rec.get("id", rec.get("path"))
        if "path" in rec and "id" not in rec and isinstance(key, str):
            key = os.path.abspath(key)
        if isinstance(key, int) and not isinstance(key, bool):
            key = str(key)
        score = rec.get("score")
        if not isinstance(key, str) or not key:
            raise ValueError(f"{path}:{n}: the label has no \"id\" or \"path\" string")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or \
                not SCORE_RANGE[0] <= score <= SCORE_RANGE[1]:
            raise ValueError(f"{path}:{n}: the score must be a number from 0 to 5, got {score!r}")
        labels[key] = float(score)
    if not labels:
        raise ValueError(f"the labels file {path} holds no labels")
    return labels


# --------------------------------------------------------------------------------------------------
# Features

class Sparse:
    """A matrix stored by rows: row i holds values data[indptr[i]:indptr[i+1]] in the columns
    indices[indptr[i]:indptr[i+1]]. Only what the fit needs: X v, X^T u, rows, column moments."""
    standardize = False  # hashed columns keep their scale: standardizing would blow up rare n-grams

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, dim: int):
        self.indptr, self.indices, self.data, self.dim = indptr, indices, data, dim
        self.n = len(indptr) - 1
        self.row = np.repeat(np.arange(self.n), np.diff(indptr))

    def dot(self, v: np.ndarray) -> np.ndarray:
        return np.bincount(self.row, weights=self.data * v[self.indices], minlength=self.n)

    def tdot(self, u: np.ndarray) -> np.ndarray:
        return np.bincount(self.indices, weights=self.data * u[self.row], minlength=self.dim)

    def take(self, rows: np.ndarray) -> "Sparse":
        starts, lengths = self.indptr[rows], self.indptr[rows + 1] - self.indptr[rows]
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        picked = np.arange(indptr[-1]) + np.repeat(starts - indptr[:-1], lengths)
        return Sparse(indptr, self.indices[picked], self.data[picked], self.dim)

    def moments(self) -> tuple:
        """Each column's mean and mean square."""
        return (np.bincount(self.indices, self.data, self.dim) / self.n,
                np.bincount(self.indices, self.data.astype(np.float64) ** 2, self.dim) / self.n)


class Dense:
    """The same interface over an (n, dim) array: embeddings."""
    standardize = True  # hidden-state dimensions differ in scale by orders of magnitude

    def __init__(self, x: np.ndarray):
        self.x, (self.n, self.dim) = x, x.shape

    def dot(self, v: np.ndarray) -> np.ndarray:
        return self.x @ v

    def tdot(self, u: np.ndarray) -> np.ndarray:
        return u @ self.x

    def take(self, rows: np.ndarray) -> "Dense":
        return Dense(self.x[rows])

    def moments(self) -> tuple:
        x = self.x.astype(np.float64)
        return x.mean(0), (x * x).mean(0)


_P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier for polynomial hashing (mod 2^64)
_MIX1, _MIX2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
@functools.cache
def tokenizer() -> Tokenizer:  # one per process, made on first use
    return Tokenizer()


def ngram_columns(ids: np.ndarray, n: int, dim: int) -> np.ndarray:
    """The column of every n-gram of token ids: a polynomial hash (mod 2^64) that starts from n,
    so that an n-gram and a shorter one never share a hash by construction, then murmur3's
    finalizer so that every bit depends on every token, mod dim."""
    h = np.full(len(ids) - n + 1, n, dtype=np.uint64)
    for k in range(n):
        h = h * _P + ids[k:len(ids) - n + 1 + k]
    h ^= h >> np.uint64(33)
    h *= _MIX1
    h ^= h >> np.uint64(33)
    h *= _MIX2
    h ^= h >> np.uint64(33)
    return (h % np.uint64(dim)).astype(np.int64)


def hashed_features(texts: list, dim: int, ngrams: int) -> Sparse:
    tok = tokenizer()
    indptr, indices, data = [0], [], []
    for text in texts:
        ids = np.array(tok.encode(text), dtype=np.uint64)
        cols = [ngram_columns(ids, n, dim) for n in range(1, ngrams + 1) if len(ids) >= n]
        cols, counts = np.unique(np.concatenate(cols) if cols else np.zeros(0, np.int64), return_counts=True)
        # sublinear term frequencies, scaled to unit length so that a document's length does not count.
        # Raw counts did as well within the noise (the stdlib demo, 5 seeds: mean held-out F1 0.50,
        # against 0.51 with these)
        values = np.log1p(counts)
        values /= max(np.sqrt((values * values).sum()), 1e-12)
        indices.append(cols)
        data.append(values.astype(np.float32))
        indptr.append(indptr[-1] + len(cols))
    return Sparse(np.array(indptr), np.concatenate(indices) if indices else np.zeros(0, np.int64),
                  np.concatenate(data) if data else np.zeros(0, np.float32), dim)


# -- Final hidden states of a nanophi model ---------------------------------------------------------
# Phi.forward's plain causal pass up to the final LayerNorm, from the model's own submodules.

def final_hidden_states(model, idx):
    """(B, T, n_embd) hidden states after model.model.final_layernorm, for token ids idx (B, T)."""
    T = idx.shape[1]
    x = model.model.embed_dropout(model.model.embed_tokens(idx))
    cos, sin = model.rope_cos[:T].to(x.dtype), model.rope_sin[:T].to(x.dtype)
    for block in model.model.layers:
        x = block(x, cos, sin)
    return model.model.final_layernorm(x)


_LANGUAGE_MODELS = {}  # (init_from, device, dtype) -> the model, loaded once per process


def model_features(texts: list, init_from: str, embed_tokens: int, batch_size: int = 8, device: str = "auto",
                   dtype: str = "auto") -> np.ndarray:
    """(len(texts), n_embd) float32: the mean over each document's first embed_tokens tokens of the
    model's final hidden states. The documents run in batches sorted by length, right-padded: the
    attention is causal, so padding after a document changes none of its positions."""
    # nanophi's torch side, imported here only: the hashed features and the filter run without torch
    import torch
    from checkpoint import load_model
    from common import resolve_device_dtype
    key = (init_from, device, dtype)
    if key not in _LANGUAGE_MODELS:
        dev, dt = resolve_device_dtype(device, dtype)
        model = load_model(init_from, device=dev, dtype=dt).eval()
        check_vocab_size(model.config.vocab_size, init_from)
        _LANGUAGE_MODELS[key] = model
    model = _LANGUAGE_MODELS[key]
    dev = model.rope_cos.device
    length = min(embed_tokens, model.config.block_size)
    ids = [tokenizer().encode(t)[:length] or [EOT_ID] for t in texts]  # an empty text: just the separator
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.zeros((len(texts), model.config.n_embd), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            rows = order[s:s + batch_size]
            T = max(len(ids[i]) for i in rows)
            idx = torch.full((len(rows), T), EOT_ID, dtype=torch.long)
            mask = torch.zeros(len(rows), T, dtype=torch.float32)
            for r, i in enumerate(rows):
                idx[r, :len(ids[i])] = torch.tensor(ids[i])
                mask[r, :len(ids[i])] = 1.0
            h = final_hidden_states(model, idx.to(dev)).float()
            mask = mask.to(dev)
            pooled = (h * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True)
            out[rows] = pooled.cpu().numpy()
    return out


def featurize(texts: list, features: dict, runtime: Optional[dict] = None):
    """Sparse or Dense features of texts, as features (the model file's settings) says. runtime:
    device, dtype, batch_size and an init_from that replaces the saved one (weights moved)."""
    runtime = runtime or {}
    if features["kind"] == "hashed":
        return hashed_features(texts, features["dim"], features["ngrams"])
    x = model_features(texts, runtime.get("init_from") or features["init_from"], features["embed_tokens"],
                       runtime.get("batch_size", 8), runtime.get("device", "auto"), runtime.get("dtype", "auto"))
    if x.shape[1] != features["dim"]:
        raise ValueError(f"the model {runtime.get('init_from') or features['init_from']} has hidden size "
                         f"{x.shape[1]}, but the quality model was fitted on {features['dim']}")
    return Dense(x)


# --------------------------------------------------------------------------------------------------
# Fit: ridge regression on the 0-5 score

L2_GRID = (10.0, 1.0, 0.1, 0.01, 0.001)  # times the mean squared singular value; large first (warm starts)


def ridge(X, y: np.ndarray, lam: float, mean: np.ndarray, scale: np.ndarray, w: Optional[np.ndarray] = None,
          tol: float = 1e-3, max_iter: int = 1000) -> np.ndarray:
    """argmin_w |Z w - (y - mean(y))|^2 + lam |w|^2 with Z = (X - mean) / scale, columnwise, by
    conjugate gradients on the normal equations (Z^T Z + lam I) w = Z^T (y - mean(y)). Z is never
    formed: X keeps its sparsity, and the centering is applied to the products. tol is the
    residual relative to the right-hand side: at 1e-3, on the stdlib demo, the held-out accuracy
    and F1 were those of 1e-6 and the mean squared error within 0.001, in a seventh to a fifth of
    the time."""
    def z(v):
        v = v / scale
        return X.dot(v) - mean @ v

    def zt(u):
        return (X.tdot(u) - mean * u.sum()) / scale

    b = zt(y - y.mean())
    w = np.zeros(X.dim) if w is None else w.copy()
    r = b - zt(z(w)) - lam * w
    p, rr, stop = r.copy(), r @ r, tol * tol * (b @ b)
    for _ in range(max_iter):
        if rr <= stop:
            break
        ap = zt(z(p)) + lam * p
        alpha = rr / (p @ ap)
        w += alpha * p
        r -= alpha * ap
        rr, rr_old = r @ r, rr
        p = r + (rr / rr_old) * p
    return w


def held_out_scores(labels: np.ndarray, predicted: np.ndarray, threshold: float) -> dict:
    """How well "predicted >= threshold" finds "label >= threshold" (the documents kept)."""
    truth, kept = labels >= threshold, predicted >= threshold
    tp, fp = int(np.sum(truth & kept)), int(np.sum(~truth & kept))
    fn, tn = int(np.sum(truth & ~kept)), int(np.sum(~truth & ~kept))
    n = len(labels)

    def ratio(a, b):
        return round(a / b, 4) if b else None

    return {"documents": n, "positives": tp + fn, "accuracy": ratio(tp + tn, n),
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "majority_accuracy": ratio(max(tp + fn, fp + tn), n),
            "mse": round(float(np.mean((labels - predicted) ** 2)), 4)}


def fit(X, y: np.ndarray, threshold: float, test_fraction: float, seed: int) -> tuple:
    """(weight, bias, report): the head trained on all but the held-out test documents, its L2
    strength chosen on a validation part of them, and its scores on the test documents."""
    n = len(y)
    if n < MIN_LABELS:
        raise ValueError(f"fit needs at least {MIN_LABELS} labelled documents, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 4, max(1, round(test_fraction * n)))
    test, train = perm[:n_test], perm[n_test:]
    n_val = max(1, round(0.2 * len(train)))
    val, sub = train[:n_val], train[n_val:]

    def solve(rows, lam_scale, w0):
        Xr, yr = X.take(rows), y[rows]
        mean, meansq = Xr.moments()
        var = np.maximum(meansq - mean * mean, 0.0)
        scale = np.sqrt(var) if Xr.standardize else np.ones(X.dim)
        scale[scale < 1e-12] = 1.0  # a constant column: centred to zero, any scale will do
        # the L2 strength is relative to the mean squared singular value of Z, so one grid serves
        # unit-length hashed rows and standardized embeddings alike
        lam = lam_scale * len(rows) * float(np.sum(var / scale ** 2)) / min(len(rows), X.dim)
        w = ridge(Xr, yr, lam, mean, scale, w0)
        weight = w / scale  # the standardization folded in: score = x . weight + bias
        return weight, float(yr.mean() - mean @ weight), w

    best, w0 = None, None
    Xval = X.take(val)
    for lam_scale in L2_GRID:
        weight, bias, w0 = solve(sub, lam_scale, w0)
        mse = float(np.mean((predict(Xval, weight, bias) - y[val]) ** 2))
        if best is None or mse < best[0]:
            best = (mse, lam_scale, w0)
    _, lam_scale, w0 = best
    weight, bias, _ = solve(train, lam_scale, w0)
    report = {"head": "ridge regression on the 0-5 score", "l2": lam_scale, "l2_grid": list(L2_GRID),
              "threshold": threshold, "seed": seed, "test_fraction": test_fraction,
              "documents": {"train": len(train), "test": n_test}, "l2_chosen_on": f"{n_val} of the train documents",
              "label_histogram": label_histogram(y.tolist()),
              "held_out": held_out_scores(y[test], predict(X.take(test), weight, bias), threshold)}
    return weight.astype(np.float32), bias, report


def predict(X, weight: np.ndarray, bias: float) -> np.ndarray:
    return np.clip(X.dot(weight.astype(np.float64)) + bias, *SCORE_RANGE)


def label_histogram(labels) -> dict:
    """How many documents got each label: {"0": n, "1": n, ...}."""
    return {f"{k:g}": v for k, v in sorted(Counter(labels).items())}


def histogram(scores) -> dict:
    """Counts of scores in bins of HISTOGRAM_BIN over 0-5, keyed by each bin's lower edge ("0.0",
    "0.5", ..., "4.5"; 5 falls in the last bin)."""
    return dict(sorted(Counter(score_bins(scores)).items(), key=lambda kv: float(kv[0])))


def score_bins(scores) -> list:
    last = SCORE_RANGE[1] - HISTOGRAM_BIN
    return [f"{min(math.floor(s / HISTOGRAM_BIN) * HISTOGRAM_BIN, last):.1f}" for s in scores]


# --------------------------------------------------------------------------------------------------
# The model file

class QualityModel:
    """A fitted head and how to make its features. score(texts) -> predicted 0-5 scores;
    keep(text) -> whether a document reaches the threshold. runtime (device, dtype, batch_size,
    init_from) only says where model features are computed; it is not saved."""

    def __init__(self, features: dict, weight: np.ndarray, bias: float, threshold: float, report: dict,
                 runtime: Optional[dict] = None):
        self.features, self.weight, self.bias = features, weight, bias
        self.threshold, self.report, self.runtime = threshold, report, dict(runtime or {})

    def score(self, texts: list) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        return predict(featurize(list(texts), self.features, self.runtime), self.weight, self.bias)

    def keep(self, text: str, threshold: Optional[float] = None) -> bool:
        return bool(self.score([text])[0] >= (self.threshold if threshold is None else threshold))

    def settings(self) -> dict:
        """What meta.json records: the features, the bias, the threshold, the fit's report."""
        return {"format": FORMAT, "features": self.features, "bias": self.bias, "threshold": self.threshold,
                "report": self.report}

    def save(self, path: str) -> None:
        from safetensors.numpy import save_file
        atomic_write(path, lambda tmp: save_file({"weight": self.weight.astype(np.float32)}, tmp,
                                                 metadata={METADATA_KEY: json.dumps(self.settings())}))

    @classmethod
    def load(cls, path: str, runtime: Optional[dict] = None) -> "QualityModel":
        """Read a model file written by save. A missing file is an OSError, any other problem a
        ValueError, each one line that names the file."""
        from safetensors import SafetensorError, safe_open
        what = f"quality model {path}"
        if os.path.isdir(path):
            raise ValueError(f"{what} is a directory; pass the .safetensors file that quality.py fit wrote")
        try:
            with safe_open(path, framework="np") as f:
                meta, names = f.metadata() or {}, list(f.keys())
                tensors = {k: f.get_tensor(k) for k in names if k == "weight"}
        except OSError as e:
            raise OSError(f"cannot read the {what} ({e.strerror or e})") from None
        except (SafetensorError, ValueError, TypeError) as e:
            raise ValueError(f"{what} is not a readable safetensors file ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                             f"write it with quality.py fit") from None
        if METADATA_KEY not in meta:
            raise ValueError(f"{what} has no {METADATA_KEY!r} metadata: it was not written by quality.py fit")
        try:
            info = json.loads(meta[METADATA_KEY])
        except (ValueError, RecursionError):
            raise ValueError(f"{what}: its {METADATA_KEY!r} metadata is not valid JSON") from None
        if names != ["weight"]:
            raise ValueError(f"{what} must hold exactly one tensor, 'weight'; it holds {sorted(names)}")
        check_settings(info, what)
        weight = tensors["weight"]
        dim = info["features"]["dim"]
        if weight.dtype != np.float32 or weight.shape != (dim,):
            raise ValueError(f"{what}: 'weight' is {weight.dtype} {tuple(weight.shape)}, the features need "
                             f"float32 ({dim},)")
        if not np.all(np.isfinite(weight)):
            raise ValueError(f"{what}: 'weight' holds nan or inf")
        return cls(info["features"], weight, float(info["bias"]), float(info["threshold"]),
                   info.get("report") or {}, runtime)


def check_settings(info, what: str) -> None:
    """Raise ValueError naming the first thing wrong with a model file's metadata."""
    def number(x):  # (an int too large for a float, 10**400, is not one either)
        try:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
        except OverflowError:
            return False

    def positive_int(x, most):
        return isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= most

    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{what}: metadata format {info.get('format') if isinstance(info, dict) else info!r} "
                         f"is not {FORMAT}; refit it with this version of quality.py")
    if not number(info.get("bias")) or not number(info.get("threshold")):
        raise ValueError(f"{what}: bias and threshold must be finite numbers")
    if not isinstance(info.get("report", {}), dict):
        raise ValueError(f"{what}: report must be a JSON object")
    f = info.get("features")
    if not isinstance(f, dict) or f.get("kind") not in ("hashed", "model"):
        raise ValueError(f"{what}: features must be an object whose kind is 'hashed' or 'model'")
    if f["kind"] == "hashed":
        if set(f) != {"kind", "dim", "ngrams"} or not positive_int(f["dim"], 2 ** 24) \
                or not positive_int(f["ngrams"], 8):
            raise ValueError(f"{what}: hashed features need exactly dim (1 to 2^24) and ngrams (1 to 8), got {f}")
    elif set(f) != {"kind", "dim", "init_from", "embed_tokens"} or not positive_int(f["dim"], 2 ** 16) \
            or not positive_int(f["embed_tokens"], 2 ** 20) or not isinstance(f["init_from"], str) or not f["init_from"]:
        raise ValueError(f"{what}: model features need exactly dim, init_from and embed_tokens, got {f}")


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Command line

def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="quality.py", description="Label documents for educational value with an LLM, fit a "
                                              "model that predicts it, score documents with it.")
    sub = p.add_subparsers(dest="command", required=True, metavar="label|fit|score")

    def add_docs(q):
        q.add_argument("--docs", action="append", required=True, metavar="PATH",
                       help="a directory, a JSONL file or a file (repeatable)")
        q.add_argument("--extensions", default=".py", help="comma-separated file endings taken from directories")
        q.add_argument("--text_field", default="text", help="the field holding the text in JSONL records")
        q.add_argument("--id_field", default="id", help="the field holding a JSONL record's id (else FILE:LINE)")

    def add_runtime(q):
        q.add_argument("--device", default="auto", help="for --features model: cpu, cuda, cuda:N; auto picks a GPU")
        q.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                       help="for --features model: auto is bfloat16 on a GPU that has it, else float32")
        q.add_argument("--batch_size", type=int, default=8, help="for --features model: documents per forward")

    q = sub.add_parser("label", help="ask an OpenAI-compatible endpoint to score a sample of documents 0-5")
    add_docs(q)
    q.add_argument("--out", required=True, help="the labels, JSONL {id, score}")
    q.add_argument("--sample", type=int, default=None, help="how many documents to label (default: all)")
    q.add_argument("--seed", type=int, default=1337)
    q.add_argument("--kind", default="code", choices=["code", "text"], help="which question the prompt asks")
    q.add_argument("--max_chars", type=int, default=6000, help="characters of each document in the prompt")
    q.add_argument("--cache", default=None, help="the answers' cache (default: OUT without .jsonl + .cache.jsonl)")
    add_openai_arguments(q, max_tokens=200, temperature=0.0, model_required=True)

    q = sub.add_parser("fit", help="fit the head on features of labelled documents; report held-out scores")
    add_docs(q)
    q.add_argument("--labels", required=True, help="JSONL {id or path, score}: label's output or your own")
    q.add_argument("--out", required=True, help="the model file to write (.safetensors)")
    q.add_argument("--features", default="hashed", choices=["hashed", "model"])
    q.add_argument("--dim", type=int, default=2 ** 18, help="hashed: number of hashed columns")
    q.add_argument("--ngrams", type=int, default=2, help="hashed: token n-grams for n = 1..NGRAMS")
    q.add_argument("--init_from", default=None, help="model: a phi model as load_model takes it "
                   "(microsoft/phi-1_5, a Hugging Face directory, a nanophi .pt, scratch:PRESET)")
    q.add_argument("--embed_tokens", type=int, default=1024, help="model: tokens of each document embedded")
    add_runtime(q)
    q.add_argument("--threshold", type=finite_float, default=DEFAULT_THRESHOLD,
                   help="a document is kept when its score is at least this (saved as the default)")
    q.add_argument("--test_fraction", type=finite_float, default=0.2, help="labelled documents held out")
    q.add_argument("--seed", type=int, default=1337)

    q = sub.add_parser("score", help="score documents with a fitted model")
    add_docs(q)
    q.add_argument("--quality_model", required=True, help="the model file from fit")
    q.add_argument("--threshold", type=finite_float, default=None, help="default: the model's")
    q.add_argument("--out", default=None, help="JSONL {id, score, keep} (default: standard output)")
    q.add_argument("--init_from", default=None, help="model features: where the language model is now, "
                   "if not where it was when fitted")
    add_runtime(q)

    args = p.parse_args(argv)
    args.extensions = tuple(e.strip().lower() for e in args.extensions.split(",") if e.strip())
    if not args.extensions:
        p.error("--extensions needs at least one file ending, e.g. .py")
    if getattr(args, "batch_size", 1) < 1:
        p.error("--batch_size must be at least 1")
    if args.command == "label":
        if args.sample is not None and args.sample < 1:
            p.error("--sample must be at least 1")
        if args.seed < 0 or args.max_chars < 1:
            p.error("--seed must be at least 0 and --max_chars at least 1")
        check_openai_arguments(args, p.error)
    if args.command == "fit":
        if args.features == "model" and not args.init_from:
            p.error("--features model needs --init_from (for example microsoft/phi-1_5)")
        if not 1 <= args.dim <= 2 ** 24 or not 1 <= args.ngrams <= 8 or args.embed_tokens < 1:
            p.error("--dim must be 1 to 2^24, --ngrams 1 to 8, --embed_tokens at least 1")
        if not 0 < args.test_fraction < 1 or args.seed < 0:
            p.error("--test_fraction must be between 0 and 1, and --seed at least 0")
    return args


def chunked(items: Iterable, n: int) -> Iterator[list]:
    chunk = []
    for x in items:
        chunk.append(x)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def runtime_of(args) -> dict:
    return {"device": args.device, "dtype": args.dtype, "batch_size": args.batch_size,
            "init_from": getattr(args, "init_from", None)}


def log(msg: str) -> None:
    print(f"quality.py: {msg}", file=sys.stderr)


def main(argv=None) -> None:
    args = parse_args(argv)
    skipped = Counter()
    docs = documents(args.docs, args.extensions, args.text_field, args.id_field, skipped)
    if args.command == "label":
        sample = sample_documents(docs, args.sample, args.seed)
        if not sample:
            raise ValueError(f"no documents found in {', '.join(args.docs)} (--extensions {','.join(args.extensions)})")
        cfg = config_from_args(args)
        cache = args.cache or re.sub(r"(\.jsonl)?$", "", args.out, count=1) + ".cache.jsonl"
        labels, stats = label(sample, cfg, cache, args.kind, args.max_chars, log)
        if not labels:
            raise RuntimeError(f"no document got a usable score ({stats['unparseable']} answers without one, "
                               f"{stats['out_of_range']} out of range, {stats['failed']} failed); see {cache}")
        write_labels(args.out, labels)
        print(json.dumps({**stats, "skipped_files": dict(skipped), "out": args.out, "cache": cache}))
    elif args.command == "fit":
        labels = read_labels(args.labels)
        texts, ys = [], []
        for doc_id, text in docs:
            if doc_id in labels:
                texts.append(text)
                ys.append(labels.pop(doc_id))
        if labels:
            log(f"{len(labels)} labels name no document of --docs, e.g. {next(iter(labels))!r}; they are left out")
        if args.features == "hashed":
            features = {"kind": "hashed", "dim": args.dim, "ngrams": args.ngrams}
            X = hashed_features(texts, args.dim, args.ngrams)
        else:
            X = Dense(model_features(texts, args.init_from, args.embed_tokens, args.batch_size, args.device, args.dtype))
            features = {"kind": "model", "dim": X.dim, "init_from": args.init_from, "embed_tokens": args.embed_tokens}
        weight, bias, report = fit(X, np.array(ys, dtype=np.float64), args.threshold, args.test_fraction, args.seed)
        report.update(labels_file=os.path.abspath(args.labels), unmatched_labels=len(labels))
        if args.features == "model":
            report.update(device=args.device, dtype=args.dtype)
        QualityModel(features, weight, bias, args.threshold, report).save(args.out)
        h = report["held_out"]
        print(json.dumps({"out": args.out, "features": features, **report}))
        log(f"held out {h['documents']} documents: accuracy {h['accuracy']}, F1 {h['f1']} (precision "
            f"{h['precision']}, recall {h['recall']}) at threshold {args.threshold}; always answering the "
            f"majority class: accuracy {h['majority_accuracy']}; mean squared error {h['mse']}")
    else:
        qm = QualityModel.load(args.quality_model, runtime_of(args))
        threshold = qm.threshold if args.threshold is None else args.threshold
        scores = []

        def write(f):
            for batch in chunked(docs, 256):
                for (doc_id, _), s in zip(batch, qm.score([t for _, t in batch])):
                    scores.append(float(s))
                    f.write(json.dumps({"id": doc_id, "score": round(float(s), 4), "keep": bool(s >= threshold)},
                                       ensure_ascii=False) + "\n")

        if args.out:
            def write_file(tmp):
                with open(tmp, "w", encoding="utf-8") as f:
                    write(f)
            atomic_write(args.out, write_file)
        else:
            write(sys.stdout)
        kept = sum(s >= threshold for s in scores)
        log(f"scored {len(scores)} documents: {kept} kept at threshold {threshold}; histogram {histogram(scores)}")
    if skipped:
        log(f"skipped: {dict(skipped)}")


if __name__ == "__main__":
    run_script(main, "quality.py", "; the answers so far are cached, so the same command continues")
