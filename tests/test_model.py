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
        logits, loss = model(x, y)
        # transformers shifts the labels itself and ignores -100
        hf_loss = hf(idx, labels=torch.cat([idx[:, :1], y.masked_fill(y == -1, -100)], 1)).loss
    assert loss.dtype == torch.float64
    logp = torch.log_softmax(logits, -1)
    keep = y != -1
    by_hand = -logp[keep].gather(-1, y[keep][:, None]).mean()  # ignored targets (-1) drop out of the mean
    assert keep.sum() == 2 * 32 - 5
    assert abs(loss.item() - by_hand.item()) < 1e-12 * by_hand.item()
    assert abs(loss.item() - hf_loss.item()) < 1e-6 * hf_loss.item()


# The training loss (return_logits=False) is model.linear_cross_entropy: lm_head and the loss fused,
# a chunk of rows at a time, the gradients made in the forward. On the CPU its softmax step is
# model.cross_entropy_rows_ (tests/test_kernels.py covers the Triton one).

def cross_entropy_float64(x, w, b, targets):
    """The reference loss by hand: mean of logsumexp - target logit over rows whose target is not -1."""
    z = F.linear(x.double(), w.double(), b.double()).reshape(-1, w.shape[0])
    t = targets.reshape(-1)
    keep = t != -1
    return (torch.logsumexp(z[keep], -1) - z[keep].gather(1, t[keep][:, None])[:, 0]).mean()


def test_training_loss_and_gradients_match_transformers():
    hf = make_hf_model("head64_rotary32").train()
    model = twin(hf).train()
    idx = torch.randint(0, 1000, (3, 41), generator=torch.Generator().manual_seed(4))
    x, y = idx[:, :-1], idx[:, 1:].clone()
    y[0, 2:7] = y[2, 39] = -100
    hf_loss = hf(input_ids=x, labels=y, shift_labels=y).loss  # -100 is transformers' ignore index
    hf_loss.backward()
    y[y == -100] = -1
    logits, loss = model(x, y, return_logits=False)
    loss.backward()
    assert logits is None
    assert abs(loss.item() - hf_loss.item()) < 1e-6 * hf_loss.item()
    hf_params = dict(hf.named_parameters())
    for name, p in model.named_parameters():
        assert relative_error(p.grad, hf_params[name].grad) < 1e-5, name


@pytest.mark.parametrize("chunk_rows", [1, 16, 39, 1000])
def test_linear_cross_entropy_matches_float64_in_any_chunks(chunk_rows):
    from model import linear_cross_entropy
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 13, 64, generator=g).requires_grad_()
    w = (0.3 * torch.randn(3000, 64, generator=g)).requires_grad_()  # logits of std ~2.4
    b = torch.randn(3000, generator=g).requires_grad_()
    targets = torch.randint(0, 3000, (3, 13), generator=g)
    targets[0, 3] = targets[2, 12] = -1
    loss = linear_cross_entropy(x, w, b, targets, chunk_rows=chunk_rows)
    (3.0 * loss).backward()  # the backward scales the gradients made in the forward
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    ref = cross_entropy_float64(x64, w64, b64, targets)
    (3.0 * ref).backward()
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert abs(loss.item() - ref.item()) < 1e-6 * ref.item()
    for ours, theirs in ((x.grad, x64.grad), (w.grad, w64.grad), (b.grad, b64.grad)):
        assert ours.dtype == torch.float32
        assert relative_error(ours, theirs) < 1e-5


def test_linear_cross_entropy_makes_only_the_gradients_asked_for():
    from model import linear_cross_entropy
    g = torch.Generator().manual_seed(6)
    x, w, b = torch.randn(10, 32, generator=g), torch.randn(500, 32, generator=g), torch.randn(500, generator=g)
    targets = torch.arange(10) * 7
    ref = cross_entropy_float64(x, w, b, targets).item()
    with torch.no_grad():
        assert abs(linear_cross_entropy(x, w, b, targets, chunk_rows=4).item() - ref) < 1e-6 * ref
    x.requires_grad_()  # a frozen lm_head: dW and db are neither made nor returned
    loss = linear_cross_entropy(x, w, b, targets, chunk_rows=4)
    loss.backward()
    assert w.grad is None and b.grad is None
    x64 = x.detach().double().requires_grad_()
    cross_entropy_float64(x64, w, b, targets).backward()
    assert relative_error(x.grad, x64.grad) < 1e-5


def test_linear_cross_entropy_under_bfloat16_autocast_matches_the_plain_loss():
    # autocast: bfloat16 logits, then float32 for the softmax, as the reference's logits.float()
    from model import linear_cross_entropy
    g = torch.Generator().manual_seed(7)
    x = torch.randn(24, 64, generator=g).requires_grad_()
    w = (0.3 * torch.randn(700, 64, generator=g)).requires_grad_()
    b = torch.randn(700, generator=g).requires_grad_()
    targets = torch.randint(0, 700, (24,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = F.cross_entropy(F.linear(x, w, b).float(), targets)
        fused = linear_cross_entropy(x, w, b, targets, chunk_rows=5)
    expected = torch.autograd.grad(plain, (x, w, b))
    got = torch.autograd.grad(fused, (x, w, b))
    assert abs(fused.item() - plain.item()) < 1e-4 * plain.item()
    for ours, theirs in zip(got, expected):
        assert ours.dtype == torch.float32
        assert relative_error(ours, theirs) < 2e-2  # bfloat16 products, summed in another order


def test_linear_cross_entropy_refuses_bad_targets_and_a_second_backward():
    from model import linear_cross_entropy
    x, w, b = torch.zeros(4, 8, requires_grad=True), torch.zeros(10, 8), torch.zeros(10)
    with pytest.raises(ValueError, match="target 10 is outside the vocabulary"):
        linear_cross_entropy(x, w, b, torch.tensor([0, 1, 10, 2]))
    with pytest.raises(ValueError, match="target -5 is outside"):
        linear_cross_entropy(x, w, b, torch.tensor([0, -5, 1, 2]))
    with pytest.raises(ValueError, match="targets must be integers of shape"):
        linear_cross_entropy(x, w, b, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="must share one dtype"):
        linear_cross_entropy(x, w.double(), b, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="chunk_rows must be positive"):
        linear_cross_entropy(x, w, b, torch.tensor([0, 1, 2, 3]), chunk_rows=0)
    loss = linear_cross_entropy(x, w, b, torch.tensor([0, 1, 2, 3]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward through the same loss twice"):
        loss.backward()


def test_training_loss_workspace_follows_batch_size_and_dtype():
    # the model keeps one logits workspace across calls: a bigger batch, a smaller one and a
    # float64 model each still get their own correct loss
    model = Phi(PhiConfig.from_name("phi-test"))
    for batch, dtype in ((1, torch.float32), (3, torch.float32), (2, torch.float32), (2, torch.float64)):
        model = model.to(dtype)
        idx = torch.randint(0, 512, (batch, 17), generator=torch.Generator().manual_seed(batch))
        x, y = idx[:, :-1], idx[:, 1:]
        with torch.no_grad():
            logits, plain = model(x, y)
            _, fused = model(x, y, return_logits=False)
        ref = F.cross_entropy(logits.double().reshape(-1, 512), y.reshape(-1))
        assert fused.dtype == dtype
        assert abs(fused.item() - ref.item()) < 1e-5 * ref.item()
    assert model._loss_workspace.dtype == torch.float64

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
