"""model.py computes what transformers' PhiForCausalLM computes: logits, the loss and its gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

import kernels
from checkpoint import config_from_hf, config_to_hf
from conftest import HF_CONFIGS, make_hf_model, relative_error
from model import Phi, PhiConfig

pytestmark = pytest.mark.numerics


def twin(hf) -> Phi:
    """nanophi with the reference's weights, loaded by name: the 1:1 name map is part of the test."""
    model = Phi(config_from_hf(hf.config.to_dict())).to(next(hf.parameters()).dtype).eval()
    model.load_state_dict(hf.state_dict(), strict=True)
    return model


@pytest.mark.parametrize("shape", list(HF_CONFIGS))
def test_logits_match_transformers_float32(shape):
    hf = make_hf_model(shape)
    model = twin(hf)
    idx = torch.randint(0, 1000, (3, 77), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx).logits
        logits = model(idx)
    assert logits.shape == expected.shape == (3, 77, 1000)
    assert relative_error(logits, expected) < 1e-5


@pytest.mark.parametrize("shape", list(HF_CONFIGS))
def test_logits_match_transformers_float64(shape):
    # transformers' "eager" attention softmaxes in float32 even for float64 inputs; sdpa does not
    hf = make_hf_model(shape, dtype=torch.float64, attn="sdpa")
    model = twin(hf)
    idx = torch.randint(0, 1000, (2, 128), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert relative_error(model(idx), hf(idx).logits) < 1e-12


def test_rotary_dims_matter():
    # a model that rotated the wrong dims (or all of them) would fail the parity tests: check that
    # the parity tests can fail, by changing rotary_dim alone
    hf = make_hf_model("head64_rotary32")
    model = twin(hf)
    wrong = Phi(PhiConfig(**{**model.config.__dict__, "rotary_dim": 64})).eval()
    wrong.load_state_dict(hf.state_dict())
    idx = torch.randint(0, 1000, (1, 40))
    with torch.no_grad():
        assert relative_error(wrong(idx), hf(idx).logits) > 1e-3


def test_loss_is_mean_next_token_cross_entropy_ignoring_minus_one():
    # a float64 model gives a float64 loss, checked against float64 math by hand to float64
    # precision; transformers computes its loss in float32 (logits.float()), so against it the
    # bound is float32's: a logsumexp over 1000 terms and a mean of 64 rows, a few units of 2^-24
    hf = make_hf_model("head64_rotary32", dtype=torch.float64)
    model = twin(hf)
    idx = torch.randint(0, 1000, (2, 33), generator=torch.Generator().manual_seed(3))
    x, y = idx[:, :-1], idx[:, 1:].clone()
    y[0, 5:9] = -1
    y[1, 0] = -1
    with torch.no_grad():
        logits, loss = model(x), model(x, y)
        # transformers shifts the labels itself and ignores -100
        hf_loss = hf(idx, labels=torch.cat([idx[:, :1], y.masked_fill(y == -1, -100)], 1)).loss
    assert loss.dtype == torch.float64
    logp = torch.log_softmax(logits, -1)
    keep = y != -1
    by_hand = -logp[keep].gather(-1, y[keep][:, None]).mean()  # ignored targets (-1) drop out of the mean
    assert keep.sum() == 2 * 32 - 5
    assert abs(loss.item() - by_hand.item()) < 1e-12 * by_hand.item()
    assert abs(loss.item() - hf_loss.item()) < 1e-6 * hf_loss.item()


# The training loss is kernels.linear_cross_entropy: lm_head and the loss fused, a chunk of rows at
# a time, the gradients made in the forward (tests/test_kernels.py tests it alone).

def test_training_loss_and_gradients_match_transformers():
    hf = make_hf_model("head64_rotary32").train()
    model = twin(hf).train()
    idx = torch.randint(0, 1000, (3, 41), generator=torch.Generator().manual_seed(4))
    x, y = idx[:, :-1], idx[:, 1:].clone()
    y[0, 2:7] = y[2, 39] = -100
    hf_loss = hf(input_ids=x, labels=y, shift_labels=y).loss  # -100 is transformers' ignore index
    hf_loss.backward()
    y[y == -100] = -1
    loss = model(x, y)
    loss.backward()
    assert abs(loss.item() - hf_loss.item()) < 1e-6 * hf_loss.item()
    hf_params = dict(hf.named_parameters())
    for name, p in model.named_parameters():
        assert relative_error(p.grad, hf_params[name].grad) < 1e-5, name


def test_training_loss_workspace_follows_batch_size_and_dtype():
    # the loss's logits workspace is reused across calls: a bigger batch, a smaller one and a
    # float64 model each still get their own correct loss
    model = Phi(PhiConfig.from_name("phi-test"))
    for batch, dtype in ((1, torch.float32), (3, torch.float32), (2, torch.float32), (2, torch.float64)):
        model = model.to(dtype)
        idx = torch.randint(0, 512, (batch, 17), generator=torch.Generator().manual_seed(batch))
        x, y = idx[:, :-1], idx[:, 1:]
        with torch.no_grad():
            logits, loss = model(x), model(x, y)
        ref = F.cross_entropy(logits.double().reshape(-1, 512), y.reshape(-1))
        assert loss.dtype == dtype
        assert abs(loss.item() - ref.item()) < 1e-5 * ref.item()
    assert (torch.device("cpu"), torch.float64) in kernels._workspaces


def test_decoding_computes_the_last_row_only():
    model = Phi(PhiConfig.from_name("phi-test")).eval()
    idx = torch.randint(0, 512, (2, 20))
    with torch.no_grad():
        full = model(idx)
        model.setup_cache(2, 20)
        last = model(idx, input_pos=torch.arange(20))
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
    assert config_to_hf(phi2.config)["partial_rotary_factor"] == pytest.approx(0.4)
    hf15 = config_to_hf(PhiConfig.from_name("phi-1.5"))
    assert (hf15["hidden_size"], hf15["intermediate_size"], hf15["num_hidden_layers"],
            hf15["num_attention_heads"], hf15["partial_rotary_factor"], hf15["vocab_size"],
            hf15["max_position_embeddings"]) == (2048, 8192, 24, 32, 0.5, 51200, 2048)


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
    torch.testing.assert_close(kernels.gelu_tanh(x, use="torch"), gelu_new, rtol=1e-14, atol=1e-14)
