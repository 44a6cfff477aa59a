"""Decoding with the static KV cache: the same tokens as recomputing everything, and as
transformers' generate; sampling filters on hand-made distributions."""

import pytest
import torch

from conftest import assert_greedy_well_posed, make_hf_model
from checkpoint import config_from_hf
from common import compile_decode_step
from model import Phi, PhiConfig, sample_next

pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def pair():
    hf = make_hf_model("head64_rotary32", std=0.1)
    model = Phi(config_from_hf(hf.config.to_dict())).eval()
    model.load_state_dict(hf.state_dict())
    return hf, model


PROMPT = torch.randint(0, 1000, (2, 11), generator=torch.Generator().manual_seed(5))


def greedy_without_cache(model, idx, n):
    with torch.no_grad():
        for _ in range(n):
            logits = model(idx)
            idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return idx


def test_cached_greedy_equals_recomputing_the_whole_sequence(pair):
    _, model = pair
    tokens = torch.stack(list(model.generate(PROMPT, 60, temperature=0)), 1)
    expected = greedy_without_cache(model, PROMPT, 60)
    assert_greedy_well_posed(model, expected, PROMPT.shape[1])
    assert torch.equal(tokens, expected[:, PROMPT.shape[1]:])


def test_cached_logits_equal_full_forward_logits(pair):
    _, model = pair
    seq = greedy_without_cache(model, PROMPT, 20)
    T = PROMPT.shape[1]
    with torch.no_grad():
        full = model(seq)
        model.setup_cache(2, seq.shape[1])
        prefill = model(seq[:, :T], input_pos=torch.arange(T))  # the last position's logits only
        steps = [model(seq[:, [t]], input_pos=torch.tensor([t])) for t in range(T, seq.shape[1])]
    torch.testing.assert_close(torch.cat([prefill] + steps, 1), full[:, T - 1:], rtol=1e-5, atol=1e-5)


def test_cached_greedy_equals_transformers_generate(pair):
    hf, model = pair
    expected = hf.generate(PROMPT, max_new_tokens=60, min_new_tokens=60, do_sample=False, pad_token_id=0)
    assert_greedy_well_posed(hf, expected, PROMPT.shape[1])
    tokens = torch.stack(list(model.generate(PROMPT, 60, temperature=0)), 1)
    assert torch.equal(tokens, expected[:, PROMPT.shape[1]:])


def test_cache_is_reused_and_resized(pair):
    _, model = pair
    a = torch.stack(list(model.generate(PROMPT[:1], 5, temperature=0)), 1)
    b = torch.stack(list(model.generate(PROMPT, 30, temperature=0)), 1)  # new batch size and length
    assert_greedy_well_posed(model, torch.cat([PROMPT, b], 1), PROMPT.shape[1])  # batch 1 and 2 round differently
    c = torch.stack(list(model.generate(PROMPT[:1], 5, temperature=0)), 1)
    assert torch.equal(a, c) and torch.equal(a, b[:1, :5])


def test_stops_when_every_row_has_produced_stop_id(pair):
    _, model = pair
    tokens = torch.stack(list(model.generate(PROMPT[:1], 40, temperature=0)), 1)[0].tolist()
    stop = tokens[7]
    first = tokens.index(stop)
    got = torch.stack(list(model.generate(PROMPT[:1], 40, temperature=0, stop_id=stop)), 1)[0].tolist()
    assert got == tokens[: first + 1]


def test_seeded_sampling_is_reproducible(pair):
    _, model = pair

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return torch.stack(list(model.generate(PROMPT, 20, temperature=1.0, top_k=50, generator=g)), 1)

    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))


def test_prompt_too_long_or_empty_is_a_clear_error():
    model = Phi(PhiConfig.from_name("phi-test"))  # context 64
    with pytest.raises(ValueError, match="exceed the context of 64"):
        list(model.generate(torch.zeros(1, 60, dtype=torch.long), 5))
    with pytest.raises(ValueError, match="empty prompt"):
        list(model.generate(torch.zeros(1, 0, dtype=torch.long), 5))
    assert len(list(model.generate(torch.zeros(1, 59, dtype=torch.long), 5))) == 5  # exactly fits


# -- sample_next on hand-made logits ---------------------------------------------------------------

PROBS = torch.tensor([[0.5, 0.3, 0.15, 0.05]])


def frequencies(n=20000, **kw):
    g = torch.Generator().manual_seed(0)
    draws = sample_next(PROBS.log().expand(n, 4), generator=g, **kw)
    return torch.bincount(draws, minlength=4).double() / n


def test_greedy_is_argmax():
    assert sample_next(PROBS.log(), temperature=0).item() == 0
    assert sample_next(torch.tensor([[0.0, 3.0, -1.0]]), temperature=0).item() == 1


def test_plain_sampling_follows_the_distribution():
    torch.testing.assert_close(frequencies(), PROBS[0].double(), atol=0.015, rtol=0)


def test_temperature_sharpens_and_flattens():
    # temperature T samples from p^(1/T), renormalised
    for t in (0.5, 2.0):
        p = PROBS[0].double() ** (1 / t)
        torch.testing.assert_close(frequencies(temperature=t), p / p.sum(), atol=0.015, rtol=0)


def test_top_k_keeps_the_k_most_likely():
    f = frequencies(top_k=2)
    assert f[2] == 0 and f[3] == 0
    torch.testing.assert_close(f[:2], torch.tensor([0.5, 0.3], dtype=torch.double) / 0.8, atol=0.015, rtol=0)


def test_top_p_keeps_the_smallest_set_reaching_p():
    # 0.5 < 0.7, 0.5 + 0.3 >= 0.7: keep {0, 1}
    f = frequencies(top_p=0.7)
    assert f[2] == 0 and f[3] == 0 and f[1] > 0.3
    # p below the top token's probability: only the top token
    assert frequencies(top_p=0.4)[0] == 1
    # p = 0.95: 0.5 + 0.3 + 0.15 = 0.95 reaches it, the last token is dropped
    f = frequencies(top_p=0.95)
    assert f[3] == 0 and f[2] > 0.1


def test_compiled_decode_step_gives_the_same_tokens(pair):
    # sample.py --compile: the one-token step runs under torch.compile, where each Linear computes
    # the matrix-vector product as a fused multiply + sum on the CPU (common.compile_decode_step)
    _, model = pair
    step = compile_decode_step(model, torch.device("cpu"))
    eager = torch.stack(list(model.generate(PROMPT, 12, temperature=0)), 1)
    assert_greedy_well_posed(model, torch.cat([PROMPT, eager], 1), PROMPT.shape[1])
    compiled = torch.stack(list(model.generate(PROMPT, 12, temperature=0, step=step)), 1)
    assert torch.equal(compiled, eager)
