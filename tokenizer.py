"""
The phi-1 / phi-1.5 / phi-2 tokenizer, on tiktoken.

phi uses CodeGen's tokenizer: GPT-2's byte-level BPE (ids 0..50255, with <|endoftext|> = 50256)
plus 38 "added tokens" for runs of whitespace, which make indented code much shorter:

    50257..50286  runs of 31, 30, ..., 2 spaces   (id = 50257 + 31 - n)
    50287..50294  runs of 9, 8, ..., 2 tabs       (id = 50287 + 9 - n)

Hugging Face tokenizers match added tokens *before* BPE: the text is cut at every added token
(leftmost match first, longest match at that place), and only the pieces in between go through
GPT-2's regex and BPE. So "\n    return x" is ["\n", "    ", "return", " x"]: the four spaces are
one token and "return" is encoded without its leading-space form. We reproduce that cut with one
regular expression and hand the pieces to tiktoken, which does the BPE in Rust.

The GPT-2 ranks come from assets/gpt2.tiktoken, shipped in this repo and pinned by its sha256
(it is byte-identical to tiktoken's r50k_base), so nothing is downloaded.
"""

import base64
import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor

import tiktoken

RANKS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "gpt2.tiktoken")
RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"

# GPT-2's pre-tokenizer regex: contractions, words, numbers, punctuation runs, whitespace.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

EOT = "<|endoftext|>"
EOT_ID = 50256
MAX_SPACES, MAX_TABS = 31, 9
# The added tokens, in id order: 31 spaces .. 2 spaces, then 9 tabs .. 2 tabs.
ADDED_TOKENS = [" " * n for n in range(MAX_SPACES, 1, -1)] + ["\t" * n for n in range(MAX_TABS, 1, -1)]
N_VOCAB = EOT_ID + 1 + len(ADDED_TOKENS)  # 50295

# Leftmost-longest match of the added tokens (and <|endoftext|>). Regex quantifiers are greedy, so
# " {2,31}" takes up to 31 spaces; a run of 33 spaces becomes 31 + 2, and a run of 32 becomes 31
# plus a single space that stays with the text after it (a single space is not an added token).
_SPLIT = re.compile(r"(<\|endoftext\|>| {2,%d}|\t{2,%d})" % (MAX_SPACES, MAX_TABS))


def check_vocab_size(vocab_size: int, model: str) -> None:
    """Refuse a model whose vocabulary of vocab_size ids cannot hold every id this tokenizer makes
    (its embedding would be indexed out of range). model: how the message names it."""
    if vocab_size < N_VOCAB:
        raise ValueError(f"{model}: the model's vocabulary has {vocab_size} ids, fewer than the tokenizer's "
                         f"{N_VOCAB}; use a model with phi's vocabulary (51200 ids)")


def load_ranks(path: str = RANKS_FILE) -> dict[bytes, int]:
    """Read a .tiktoken ranks file (one 'base64(token) rank' per line), checking its sha256."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise FileNotFoundError(f"tokenizer ranks file {path} cannot be read ({e.strerror}); "
                                f"restore assets/gpt2.tiktoken from the repository") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != RANKS_SHA256:
        raise ValueError(f"tokenizer ranks file {path} has sha256 {digest}, expected {RANKS_SHA256}; "
                         f"restore assets/gpt2.tiktoken from the repository")
    ranks = {}
    for line in data.splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return ranks


class Tokenizer:
    """encode/decode exactly as the Hugging Face phi-1.5 (CodeGen) tokenizer does."""

    def __init__(self) -> None:
        self.eot_id = EOT_ID
        self.n_vocab = N_VOCAB
        self.added = {tok: EOT_ID + 1 + i for i, tok in enumerate(ADDED_TOKENS)}
        self.added[EOT] = EOT_ID
        # tiktoken does the BPE. The added tokens are registered as "special" only so that decode
        # knows their text; encoding never lets tiktoken match them (see _split).
        specials = dict(self.added)
        self.enc = tiktoken.Encoding("phi", pat_str=GPT2_PATTERN, mergeable_ranks=load_ranks(),
                                     special_tokens=specials)

    def _split(self, text: str) -> list[str]:
        # re.split with a capturing group alternates: text, added, text, added, ..., text
        return _SPLIT.split(text)

    def encode(self, text: str) -> list[int]:
        """Token ids of text. '<|endoftext|>' in the text becomes the eot id, as in Hugging Face."""
        ids: list[int] = []
        for i, piece in enumerate(self._split(text)):
            if i % 2:
                ids.append(self.added[piece])
            elif piece:
                ids.extend(self.enc.encode_ordinary(piece))
        return ids

    def encode_batch(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
        """encode() of many texts, on num_threads threads (tiktoken's BPE releases the GIL)."""
        num_threads = num_threads or (os.cpu_count() or 1)
        if num_threads == 1 or len(texts) < 2:
            return [self.encode(t) for t in texts]
        with ThreadPoolExecutor(num_threads) as pool:
            return list(pool.map(self.encode, texts))

    def decode(self, ids) -> str:
        """Text of token ids. Bytes that are not valid UTF-8 (a character cut between tokens) become
        U+FFFD. Ids past the tokenizer (50295..51199 are padding rows of the embedding, which an
        untrained model may sample) decode to nothing, as in Hugging Face."""
        ids = [int(i) for i in ids]
        return self.enc.decode([i for i in ids if 0 <= i < self.n_vocab], errors="replace")

    def decode_bytes(self, ids) -> bytes:
        """Raw bytes of token ids; use it to stream text without cutting a character in two."""
        return self.enc.decode_bytes([int(i) for i in ids if 0 <= int(i) < self.n_vocab])
