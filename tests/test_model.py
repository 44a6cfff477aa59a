"""model.py computes what transformers' PhiForCausalLM computes."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import HF_CONFIGS, make_hf_model, relative_error
from model import Phi, PhiConfig


def twin(hf) -> Phi:
    """nanophi with the reference's weights, loaded by name: the 1:1 name map is part of the test."""
    model = Phi(PhiConfig.from_hf(hf.config.to_dict())).to(next(hf.parameters()).dtype).eval()
    model.load_state_dict(hf.state_dict(), strict=True)
    return model


@pytest.mark.parametrize("shape", list(HF_CONFIGS))
def test_logits_match_transformers_float32(shape):
    hf = make_hf_model(shape)
    model = twin(hf)
    idx = torch.randint(0, 1000, (3, 77), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx).logits
        logits, loss = model(idx)
    assert loss is None and logits.shape == expected.shape == (3, 77, 1000)
    assert relative_error(logits, expected) < 1e-5


@pytest.mark.parametrize("shape", list(HF_CONFIGS))
def test_logits_match_transformers_float64(shape):
    # transformers' "eager" attention softmaxes in float32 even for float64 inputs; sdpa does not
    hf = make_hf_model(shape, dtype=torch.float64, attn="sdpa")
    model = twin(hf)
    idx = torch.randint(0, 1000, (2, 128), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert relative_error(model(idx)[0], hf(idx).logits) < 1e-12


def test_rotary_dims_matter():
    # a model that rotated the wrong dims (or all of them) would fail the parity tests: check that
    # the parity tests can fail, by changing rotary_dim alone
    hf = make_hf_model("head64_rotary32")
    model = twin(hf)
    wrong = Phi(PhiConfig(**{**model.config.__dict__, "rotary_dim": 64})).eval()
    wrong.load_state_dict(hf.state_dict())
    idx = torch.randint(0, 1000, (1, 40))
    with torch.no_grad():
        assert relative_error(wrong(idx)[0], hf(idx).logits) > 1e-3


def test_loss_is_mean_next_token_cross_entropy_ignoring_minus_one():
    hf = make_hf_model("head64_rotary32", dtype=torch.float64)
    model = twin(hf)
    idx = torch.randint(0, 1000, (2, 33), generator=torch.Generator().manual_seed(3))
    x, y = idx[:, :-1], idx[:, 1:].clone()
    with torch.no_grad():
        hf_loss = hf(idx, labels=idx).loss  # transformers shifts the labels itself
        _, loss = model(x, y)
    assert abs(loss.item() - hf_loss.item()) < 1e-10
    # ignored targets (-1) drop out of the mean: recompute it by hand in float64
    y[0, 5:9] = -1
    y[1, 0] = -1
    with torch.no_grad():
        logits, loss = model(x, y)
    logp = torch.log_softmax(logits.double(), -1)
    keep = y != -1
    by_hand = -logp[keep].gather(-1, y[keep][:, None]).mean()
    # the loss is computed in float32, as transformers does
    assert abs(loss.item() - by_hand.item()) < 1e-6 * by_hand.item()


def test_only_last_computes_the_last_row():
    model = Phi(PhiConfig.from_name("phi-test")).eval()
    idx = torch.randint(0, 512, (2, 20))
    with torch.no_grad():
        full, _ = model(idx)
        last, _ = model(idx, only_last=True)
    assert last.shape == (2, 1, 512)
    torch.testing.assert_close(last[:, 0], full[:, -1])


def test_initialisation_follows_the_official_model():
    torch.manual_seed(0)
    model = Phi(PhiConfig.from_name("phi-mini"))
    for name, p in model.named_parameters():
        if "layernorm" in name:
            assert torch.all(p == (1 if name.endswith("weight") else 0)), name
        elif name.endswith("bias"):
            assert torch.all(p == 0), name
        else:
            assert abs(p.std().item() - 0.02) < 0.002 and abs(p.mean().item()) < 0.002, name


def test_official_shapes_and_parameter_count():
    with torch.device("meta"):
        phi15 = Phi(PhiConfig.from_name("phi-1.5"))
        phi2 = Phi(PhiConfig.from_name("phi-2"))
    # arithmetic from the published shapes: 24 x (4 x 2048^2 + 2 x 2048 x 8192 + 6 x 2048 + 8192 + 2 x 2048)
    # + 51200 x 2048 (embedding) + 2 x 2048 (final LayerNorm) + 51200 x 2048 + 51200 (lm_head)
    assert phi15.num_params() == 1_418_270_720
    assert phi2.config.head_dim == 80 and phi2.config.rotary_dim == 32
    assert phi2.config.to_hf()["partial_rotary_factor"] == pytest.approx(0.4)
    hf15 = PhiConfig.from_name("phi-1.5").to_hf()
    assert (hf15["hidden_size"], hf15["intermediate_size"], hf15["num_hidden_layers"],
            hf15["num_attention_heads"], hf15["partial_rotary_factor"], hf15["vocab_size"],
            hf15["max_position_embeddings"]) == (2048, 8192, 24, 32, 0.5, 51200, 2048)


def test_config_dialects():
    # transformers >= 5 nests rope settings; the official files have them at the top level
    new = dict(model_type="phi", vocab_size=51200, hidden_size=2560, intermediate_size=10240,
               num_hidden_layers=32, num_attention_heads=32,
               rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.4))
    old = dict(model_type="phi", vocab_size=51200, hidden_size=2560, intermediate_size=10240,
               num_hidden_layers=32, num_attention_heads=32, partial_rotary_factor=0.4, rope_theta=10000.0,
               rope_scaling=None, resid_pdrop=0.1)
    mixformer = dict(model_type="mixformer-sequential", vocab_size=51200, n_embd=2560, n_head=32, n_layer=32,
                     n_inner=None, rotary_dim=32, n_positions=2048, layer_norm_epsilon=1e-5, resid_pdrop=0.1)
    configs = [PhiConfig.from_hf(c) for c in (new, old, mixformer)]
    assert configs[0].rotary_dim == configs[1].rotary_dim == configs[2].rotary_dim == 32
    assert configs[1] == configs[2] == PhiConfig.from_name("phi-2")


@pytest.mark.parametrize("bad, message", [
    (dict(qk_layernorm=True), "qk_layernorm"),
    (dict(num_key_value_heads=8), "grouped-query"),
    (dict(rope_scaling=dict(type="linear", factor=2.0)), "RoPE scaling"),
    (dict(hidden_act="relu"), "hidden_act"),
    (dict(model_type="llama"), "model_type"),
])
def test_unsupported_configs_are_clear_errors(bad, message):
    base = dict(model_type="phi", vocab_size=100, hidden_size=64, intermediate_size=256,
                num_hidden_layers=1, num_attention_heads=4)
    with pytest.raises(ValueError, match=message):
        PhiConfig.from_hf({**base, **bad})


def test_bad_presets_and_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model preset"):
        PhiConfig.from_name("phi-3")
    with pytest.raises(ValueError, match="divisible"):
        PhiConfig(n_embd=100, n_head=3)
    model = Phi(PhiConfig.from_name("phi-test"))
    with pytest.raises(ValueError, match="longer than the context"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_gelu_is_gelu_new():
    # phi's gelu_new, written out in float64, against the model's MLP activation
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    gelu_new = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    torch.testing.assert_close(F.gelu(x, approximate="tanh"), gelu_new, rtol=1e-14, atol=1e-14)
