"""The tokenizer gives the ids of transformers' CodeGen tokenizer (phi-1.5's) on any text."""

import glob
import os
import random
import sysconfig

import pytest

from tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer()


def test_sizes_and_eot(tok):
    assert tok.eot_id == 50256
    assert tok.n_vocab == 50295
    assert tok.encode("<|endoftext|>") == [50256]


def test_hand_checked_ids(tok):
    # GPT-2 ids: "hello"=31373, " world"=995, "\n"=198, "return"=7783, " x"=2124
    assert tok.encode("hello world") == [31373, 995]
    # the four spaces are one added token (50257 + 31 - 4) and "return" loses its leading space
    assert tok.encode("\n    return x") == [198, 50284, 7783, 2124]
    # 33 spaces = 31 + 2; 32 spaces = 31 + a single space that joins the next word (" x" = 2124)
    assert tok.encode(" " * 33 + "x") == [50257, 50286, 87]
    assert tok.encode(" " * 32 + "x") == [50257, 2124]
    # tabs: 9 tabs = 50287, 2 tabs = 50294, a single tab is GPT-2's 197
    assert tok.encode("\t" * 11) == [50287, 50294]
    assert tok.encode("\t" * 10) == [50287, 197]


SPECIAL_CASES = [
    "", " ", "  ", "\t", "\n", "\n\n\n", "a b", "a  b", "a   b", "a \t\t b", "foo   ", "   foo",
    " " * 31, " " * 62, " " * 63 + "z", " " * 100 + "deep", "\t" * 9, "\t" * 19 + "x", " \t \t  \t\t",
    "def f(x):\n\treturn x\n\t\t\ty", "class A:\n    def f(self):\n        return 1\n\n\n",
    "x  \n  \ty", "if a:\r\n    b = 1\r\n", "<|endoftext|>", "a<|endoftext|>b", "hi <|endoftext|> there",
    "<|endoftext|><|endoftext|>", "  <|endoftext|>  ", "<|endoftext", "<|endoftext|", "endoftext|>",
    "héllo wörld", "日本語のテキスト", "emoji 🙂🚀 and ZWJ 👩‍💻", "Ελληνικά кириллица עברית العربية",
    "naïve café — “quotes” … ½ ∑ √", "I'm, you're, it's, they've, we'll, he'd", "123 4567 89.01e-3",
    "\u00a0nbsp\u2003em-space\u3000ideographic", "tab\tin\tline", "mixed \t\t  \t", "\x00\x01\x7f",
]


def test_matches_transformers_on_hand_written_cases(tok, hf_tokenizer):
    for text in SPECIAL_CASES:
        assert tok.encode(text) == hf_tokenizer(text)["input_ids"], repr(text)


def test_matches_transformers_on_random_text(tok, hf_tokenizer):
    # random strings biased towards the hard parts: runs of spaces and tabs, newlines, punctuation,
    # unicode, and pieces of <|endoftext|>
    atoms = [" ", "  ", " " * 7, " " * 31, "\t", "\t\t\t", "\n", "\r\n", "a", "Z", "9", "'s", "é", "中",
             "🙂", ".", "(", "<|endoftext|>", "<|", "|>", "def", " return", "_", "\u00a0"]
    rng = random.Random(0)
    for _ in range(400):
        text = "".join(rng.choice(atoms) * rng.choice([1, 1, 1, 2, 5]) for _ in range(rng.randint(1, 30)))
        assert tok.encode(text) == hf_tokenizer(text)["input_ids"], repr(text)


def stdlib_sources(n: int) -> list[str]:
    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    texts = []
    for path in files[:: max(1, len(files) // n)][:n]:
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    return texts


def test_matches_transformers_on_real_code_and_round_trips(tok, hf_tokenizer):
    texts = stdlib_sources(12)
    assert sum(map(len, texts)) > 100_000
    for text in texts:
        ids = tok.encode(text)
        assert ids == hf_tokenizer(text)["input_ids"]
        assert tok.decode(ids) == text
        assert hf_tokenizer.decode(ids, clean_up_tokenization_spaces=False) == text


def test_encode_batch_equals_encode(tok):
    texts = SPECIAL_CASES + stdlib_sources(3)
    assert tok.encode_batch(texts, num_threads=2) == [tok.encode(t) for t in texts]
    assert tok.encode_batch([]) == []


def test_decode_matches_transformers(tok, hf_tokenizer):
    # padding ids (50295..51199) that an untrained model may sample decode to nothing, as in transformers
    ids = [31373, 50256, 50260, 197, 50294, 51000, 50295, 995]
    assert tok.decode(ids) == hf_tokenizer.decode(ids, clean_up_tokenization_spaces=False)
    # a character split across tokens: decode_bytes keeps the raw bytes
    emoji = tok.encode("🙂")
    assert len(emoji) > 1 and b"".join(tok.decode_bytes([i]) for i in emoji) == "🙂".encode()


def test_corrupt_ranks_file_is_a_clear_error(tmp_path):
    import tokenizer
    bad = tmp_path / "gpt2.tiktoken"
    bad.write_bytes(open(tokenizer.RANKS_FILE, "rb").read()[:-10])
    with pytest.raises(ValueError, match="sha256"):
        tokenizer.load_ranks(str(bad))
    with pytest.raises(FileNotFoundError, match="cannot be read"):
        tokenizer.load_ranks(str(tmp_path / "missing.tiktoken"))
