"""
The corpus format that data/prepare_textbooks.py writes and train.py reads, with nothing but numpy
(no torch), so that any tool can read a corpus.

A corpus directory holds

    train-00000.bin, train-00001.bin, ...  token shards: flat little-endian uint16 arrays of phi token
    val-00000.bin, ...                     ids, np.memmap(path, dtype=np.uint16, mode="r"). Every
                                           document is followed by <|endoftext|> (50256) and lies
                                           inside one shard.
    meta.json                              written last: "shards" lists each split's shards in order,
                                           with their token and document counts, tokens per source
                                           and sha256. A directory without it is not a finished build.

Each shard holds the documents that start inside its window of the split (--shard_tokens of
prepare_textbooks.py, 100M by default as in nanoGPT's fineweb.py), so every shard holds about that
many tokens, and a small corpus is a single shard.

Reading a split (open_split) checks every listed shard against meta.json (present, and exactly its
listed size), then sees the shards as ONE array: position i of the split is position i of the
shards laid end to end. train.py cuts its windows out of that array, so its data order, a function
of (seed, epoch, position), is the order a single flat file would give, whatever the shard size.
A directory whose meta.json lists no shards (or that has none) and holds train.bin and val.bin is
nanoGPT's layout: each file is read as the split's one shard.

Files are written atomically (atomic_write): to a temporary file in the same directory, then renamed,
so a crash never leaves a shard or a meta.json that looks complete but is not.
"""

import json
import os
import re
from typing import Optional

import numpy as np

from common import atomic_write  # noqa: F401 (prepare_textbooks.py writes shards with it too)

DTYPE = np.dtype("<u2")
META = "meta.json"
SPLITS = ("train", "val")


def shard_name(split: str, k: int) -> str:
    return f"{split}-{k:05d}.bin"


SHARD_FILE = re.compile(r"(train|val)-\d{5}\.bin")


# --------------------------------------------------------------------------------------------------
# Writing

def write_json(path: str, obj) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(json.dumps(obj, indent=1) + "\n")
    atomic_write(path, write)


def is_temporary(name: str, of: tuple) -> bool:
    """Whether name is a temporary file that atomic_write (common.py: .NAME.XXXXXXXX.tmp) made for one
    of the names `of` (a regular expression each) and a killed process left behind."""
    return any(re.fullmatch(r"\." + pattern + r"\.\w{8}\.tmp", name) for pattern in of)


# --------------------------------------------------------------------------------------------------
# Reading

def read_meta(data_dir: str) -> Optional[dict]:
    """data_dir/meta.json as a dict, or None if there is none. A meta.json that cannot be read is an
    error that says so, never a directory silently read another way."""
    path = os.path.join(data_dir, META)
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            meta = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON or UTF-8
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: {str(e)[:100]}); rebuild the corpus "
                         f"with python data/prepare_textbooks.py (with the same flags as before)") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} does not hold a JSON object; rebuild the corpus with python data/prepare_textbooks.py")
    return meta


def split_files(data_dir: str, split: str) -> list:
    """[(path, listed token count or None)] of a split, in order."""
    meta = read_meta(data_dir)
    listing = meta.get("shards") if meta is not None else None
    if listing is None:
        path = os.path.join(data_dir, f"{split}.bin")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found; prepare the data first (python data/prepare_textbooks.py) or point --data_dir "
                f"at a directory with meta.json and its shards, or with train.bin and val.bin")
        return [(path, None)]
    where = os.path.join(data_dir, META)
    shards = listing.get(split) if isinstance(listing, dict) else None
    ok = isinstance(shards, list) and shards and all(
        isinstance(s, dict) and isinstance(s.get("file"), str) and SHARD_FILE.fullmatch(s["file"])
        and s["file"].startswith(split + "-") and isinstance(s.get("tokens"), int) and s["tokens"] >= 0
        for s in shards)
    if not ok:
        raise ValueError(f"{where} does not list the {split} shards as [{{\"file\": \"{split}-00000.bin\", "
                         f"\"tokens\": N}}, ...]; rebuild the corpus with python data/prepare_textbooks.py")
    return [(os.path.join(data_dir, s["file"]), s["tokens"]) for s in shards]


def open_split(data_dir: str, split: str) -> tuple:
    """(tokens, name): the split's token ids as one read-only array (a np.memmap for a single shard,
    else a Tokens), and how error messages should name it. Raises FileNotFoundError or ValueError
    with one line that says what is wrong (a missing, odd-sized or truncated shard) and what to do."""
    files = split_files(data_dir, split)
    arrays = []
    for path, listed in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing, but {os.path.join(data_dir, META)} lists it; rerun the "
                                    f"command that built the corpus: it rewrites only what is missing")
        size = os.path.getsize(path)
        if size % 2:
            raise ValueError(f"{path} has an odd number of bytes: it is not a uint16 token file")
        if listed is not None and size != 2 * listed:
            raise ValueError(f"{path} holds {size // 2} tokens, but {os.path.join(data_dir, META)} lists {listed}: "
                             f"the shard is cut short or from another build; rerun the command that built the corpus")
        # numpy cannot map an empty file (and its error does not name it)
        arrays.append(np.memmap(path, dtype=DTYPE, mode="r") if size else np.zeros(0, DTYPE))
    if len(arrays) == 1:
        return arrays[0], files[0][0]
    return Tokens(arrays), f"{os.path.join(data_dir, split)}-*.bin ({len(arrays)} shards)"


class Tokens:
    """Shards seen as one read-only array of token ids: len(t), t[i], t[a:b] and t[index array] of
    any shape, as numpy gives them for one flat array."""

    def __init__(self, arrays: list):
        self.arrays = arrays
        self.starts = np.concatenate([[0], np.cumsum([len(a) for a in arrays])]).astype(np.int64)
        self.dtype, self.shape = DTYPE, (int(self.starts[-1]),)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        n = len(self)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                return self[np.arange(start, stop, step)]
            if stop <= start:
                return np.zeros(0, DTYPE)
            first, last = np.searchsorted(self.starts, [start, max(start, stop - 1)], side="right") - 1
            if first == last:  # inside one shard: a view, as a memmap slice is
                return self.arrays[first][start - self.starts[first]:stop - self.starts[first]]
            return np.concatenate([self.arrays[k][max(start - self.starts[k], 0):stop - self.starts[k]]
                                   for k in range(first, last + 1)])
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        idx = np.asarray(key)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"index tokens with integers or a slice, not {idx.dtype}")
        flat = idx.ravel().astype(np.int64)
        flat = np.where(flat < 0, flat + n, flat)
        if len(flat) and (flat.min() < 0 or flat.max() >= n):
            raise IndexError(f"token index out of range for {n} tokens")
        shard = np.searchsorted(self.starts, flat, side="right") - 1  # an empty shard is skipped
        out = np.empty(len(flat), DTYPE)
        for k in np.unique(shard):
            sel = shard == k
            out[sel] = self.arrays[k][flat[sel] - self.starts[k]]
        return out.reshape(idx.shape)


def describe(data_dir: str, tokens_read: int) -> str:
    """One line for train.py's log: how the train split mixes its sources (from meta.json), and how
    many times a run that reads tokens_read tokens sees each unique token of each source."""
    meta = read_meta(data_dir)
    try:
        train = sum(s["tokens"] for s in meta["shards"]["train"])
        epochs = tokens_read / train
        shares = ", ".join(f"{name} {100 * r['share_of_tokens']:.1f}% ({r['passes']:.2f} passes over its unique tokens)"
                           for name, r in meta["sources"].items())
        seen = ", ".join(f"{r['passes'] * epochs:.3g} ({name})" for name, r in meta["sources"].items())
    except (KeyError, TypeError, AttributeError, ZeroDivisionError):
        return "data: no meta.json of data/prepare_textbooks.py lists the sources, so the mixture is not known"
    return (f"data: train {train:,} tokens in {len(meta['shards']['train'])} shard(s): {shares}; this run reads "
            f"{tokens_read:,} tokens = {epochs:.3g} epochs, so it sees each unique token {seen} times")
