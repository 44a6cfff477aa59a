"""Shared test helpers. The references are independent of nanophi's code: transformers'
PhiForCausalLM and CodeGen tokenizer, float64 math, and hand-computed values."""

import getpass
import os
import sys
import tempfile

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never touch the network
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Without a GPU, kernels.py's Triton kernels run on CPU tensors through Triton's interpreter, which
# must be chosen before triton is first imported (triton reads it when its own functions are
# defined). Nothing else uses triton on the CPU, so other tests behave the same with it set.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# torch.compile's on-disk cache does not tell apart the vector instructions that ATEN_CPU_CAPABILITY
# selects: code compiled under one value, reused under another, gave wrong logits (avx512 -> avx2),
# a heap corruption (avx2 -> avx512) and C++ compile errors (-> default) in torch 2.13. The tests
# run under several values (see .ci/run), so each gets a cache of its own.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), f"nanophi-inductor-{getpass.getuser()}-{os.environ.get('ATEN_CPU_CAPABILITY', 'native')}"))

# Two reference shapes, written with transformers' own field names: phi-1.5-like heads (head_dim 64,
# rotary 32 of 64) and phi-2-like heads (head_dim 80, partial_rotary_factor 0.4 -> 32 dims).
HF_CONFIGS = {
    "head64_rotary32": dict(vocab_size=1000, hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                            num_attention_heads=4, partial_rotary_factor=0.5, max_position_embeddings=128),
    "phi2_like_head80": dict(vocab_size=1000, hidden_size=320, intermediate_size=1280, num_hidden_layers=2,
                             num_attention_heads=4, partial_rotary_factor=0.4, max_position_embeddings=128),
}


def make_hf_model(name_or_kwargs, dtype=torch.float32, seed=0, std=0.2, attn="sdpa"):
    """A transformers PhiForCausalLM with random weights. std is large so that every parameter,
    LayerNorm weights and biases included, visibly changes the logits."""
    from transformers import PhiConfig as HFConfig, PhiForCausalLM
    kwargs = HF_CONFIGS[name_or_kwargs] if isinstance(name_or_kwargs, str) else name_or_kwargs
    torch.manual_seed(seed)
    hf = PhiForCausalLM._from_config(HFConfig(**kwargs), attn_implementation=attn)
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, std)
    return hf.to(dtype).eval()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


# Greedy decoding by two computations that round differently (the KV cache against a full forward,
# compiled against eager, Triton against PyTorch, nanophi against transformers) picks the same
# tokens wherever the two largest logits are further apart than the computations differ: about
# 1e-6 for these float32 models, whose logits are of order 1 (measured: 3e-7 between nanophi and
# transformers). A test that compares greedy tokens is well posed only if every step's gap is
# wider, so it checks that it is, with a 100x margin, on the reference's logits.
GREEDY_GAP = 1e-4


def assert_greedy_well_posed(model, seq: torch.Tensor, n_prompt: int) -> None:
    """seq (B, T): prompts of n_prompt tokens and their greedy continuations. model: a callable
    that returns the logits (B, T, V), or an output with .logits (transformers)."""
    with torch.no_grad():
        out = model(seq)
    logits = out.logits if hasattr(out, "logits") else out
    top2 = logits[:, n_prompt - 1:-1].double().topk(2, dim=-1).values
    gap = (top2[..., 0] - top2[..., 1]).min().item()
    assert gap > GREEDY_GAP, f"a greedy step is a near-tie (gap {gap:.1e}): choose another prompt or seed"


@pytest.fixture(scope="session")
def hf_tokenizer():
    """transformers' CodeGen tokenizer (the class phi-1.5 ships with), built from the same GPT-2
    ranks and the 38 added whitespace tokens. vocab.json/merges.txt are derived from the ranks:
    each token's merge is the pair that BPE, limited to lower ranks, reduces it to."""
    from transformers import CodeGenTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from tokenizer import load_ranks
    ranks = load_ranks()
    byte_to_char = bytes_to_unicode()

    def spell(b: bytes) -> str:
        return "".join(byte_to_char[x] for x in b)

    def merge_of(token: bytes, rank: int) -> list[bytes]:
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            pairs = [(ranks.get(parts[i] + parts[i + 1], 1 << 30), i) for i in range(len(parts) - 1)]
            best, i = min(pairs)
            assert best < rank
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return parts

    vocab = {spell(t): r for t, r in ranks.items()}
    vocab["<|endoftext|>"] = 50256
    merges = [tuple(spell(p) for p in merge_of(t, r)) for t, r in sorted(ranks.items(), key=lambda kv: kv[1])
              if len(t) > 1]
    tok = CodeGenTokenizer(vocab=vocab, merges=merges)
    # phi-1.5's added_tokens.json: 31 spaces = 50257 ... 2 spaces = 50286, 9 tabs = 50287 ... 2 tabs = 50294
    tok.add_tokens([" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)])
    assert tok.convert_tokens_to_ids(["  ", "\t\t", " " * 31, "\t" * 9]) == [50286, 50294, 50257, 50287]
    return tok
