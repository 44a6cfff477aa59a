"""quantize.py: int8 weights within half a step of their scale, the int8 matmul against float64 math
on each of its paths, a model quantized while loading against one quantized after, the quantized
model against float64 math and against float32, the memory that loading takes, and one-line errors."""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import eval as ev
import sample
from checkpoint import config_from_hf, from_state_dict, load_model, save_quantized
from conftest import HF_CONFIGS, ROOT, make_hf_model, relative_error
from model import Phi, PhiConfig
from quantize import Int8Linear, quantize_int8, quantize_model

U = {torch.float32: 2.0 ** -24, torch.bfloat16: 2.0 ** -8}  # unit roundoff


# -----------------------------------------------------------------------------
# One matrix, one layer

@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantize_then_dequantize_is_within_half_a_step(dtype):
    torch.manual_seed(0)
    # rows of magnitudes 1e-6 to 1e3, a row of zeros, and a row with one nonzero entry
    w = torch.randn(64, 300) * torch.logspace(-6, 3, 64)[:, None]
    w[3] = 0
    w[5] = 0
    w[5, 7] = -2.5
    w = w.to(dtype)
    q, scales = quantize_int8(w)
    assert q.dtype == torch.int8 and q.shape == w.shape
    assert scales.dtype == torch.float32 and scales.shape == (64,)
    err = (q.double() * scales.double()[:, None] - w.double()).abs()
    # half a step, plus the float32 rounding of w / scales (at most 127 steps, relative 2^-24)
    # before it is rounded to an integer
    assert (err <= scales.double()[:, None] * (0.5 + 128 * U[torch.float32])).all()
    assert err.max() > 0.45 * scales.max()  # (the test sees rounding, not exact values)
    # the largest |w| of each row is +-127: the scale wastes none of the range
    assert (q.abs().amax(1) == 127).sum() == 63 and (q[3] == 0).all()
    assert q[5, 7] == -127 and q[5].count_nonzero() == 1


def test_weights_with_nan_or_inf_are_refused():
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="nan or inf"):
            quantize_int8(torch.tensor([[1.0, bad], [0.5, 0.25]]))


def float64_reference(layer: Int8Linear, x: torch.Tensor):
    """x W^T + b in float64 with the dequantized W, and sum_k |x_k W_jk| + |b_j|, which bounds
    the rounding of any order of summation."""
    w = layer.weight.double() * layer.scales.double()[:, None]
    b = layer.bias.double()
    return x.double() @ w.T + b, x.double().abs() @ w.abs().T + b.abs()


@pytest.mark.numerics
@pytest.mark.parametrize("rows", [1, 7])  # a decode step (the CPU's int8 kernel), a prompt (dequantize, matmul)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_matmul_equals_float64_dequantized_math(rows, dtype):
    torch.manual_seed(0)
    K = 256
    linear = nn.Linear(K, 96)
    nn.init.normal_(linear.bias)
    layer = Int8Linear.from_linear(linear.to(dtype))
    x = torch.randn(3, rows, K).to(dtype)  # three sequences: three rows for the int8 kernel
    with torch.no_grad():
        y = layer(x)
    assert y.dtype == dtype and y.shape == (3, rows, 96)
    ref, size = float64_reference(layer, x)
    # float32 products and sums: (K + 3) units of float32's rounding of the sum of |terms|, for any
    # order of summation (a product, the scale, the bias). bfloat16 computes the same in float32,
    # then rounds the scales to bfloat16 (the int8 kernel takes them in x's dtype), the result,
    # and the sum with the bias: three units of bfloat16's rounding more.
    bound = (K + 3) * U[torch.float32] * size + (3 * U[dtype] * size if dtype == torch.bfloat16 else 0)
    assert ((y.double() - ref).abs() <= bound).all()
    # the bound sees a scale off by 0.1% in float32 (by 10% in bfloat16, whose bound is 1% of the size)
    layer.scales *= 1.001 if dtype == torch.float32 else 1.1
    with torch.no_grad():
        assert not ((layer(x).double() - ref).abs() <= bound).all()


@pytest.mark.numerics
def test_the_compiled_decode_step_equals_float64_dequantized_math():
    # under torch.compile a decode step on the CPU is a multiply and a sum, which inductor fuses
    torch.manual_seed(0)
    K = 256
    linear = nn.Linear(K, 96)
    nn.init.normal_(linear.bias)
    layer = Int8Linear.from_linear(linear)
    x = torch.randn(2, 1, K)
    with torch.no_grad():
        y = torch.compile(layer, dynamic=False)(x)
    ref, size = float64_reference(layer, x)
    assert ((y.double() - ref).abs() <= (K + 3) * U[torch.float32] * size).all()


# -----------------------------------------------------------------------------
# The model

@pytest.fixture
def hf_dir(tmp_path):
    hf = make_hf_model("head64_rotary32")
    hf.save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def assert_same_tensors(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_quantized_while_loading_equals_quantized_after_loading(hf_dir, tmp_path, dtype):
    during = load_model(str(hf_dir), dtype=dtype, quantize="int8")
    after = quantize_model(load_model(str(hf_dir), dtype=dtype))
    assert_same_tensors(during, after)
    linears = [m for m in during.modules() if isinstance(m, nn.Linear)]
    int8 = [m for m in during.modules() if isinstance(m, Int8Linear)]
    assert not linears and len(int8) == 2 * 6 + 1  # q, k, v, dense, fc1, fc2 per layer, and lm_head
    assert all(m.weight.dtype == torch.int8 and m.scales.dtype == torch.float32 for m in int8)
    assert during.lm_head.bias.dtype == during.model.embed_tokens.weight.dtype == (dtype or torch.float32)
    # the int8 checkpoint reads back as it was written; a .pt from train.py quantizes as the directory does
    save_quantized(during, str(tmp_path / "int8.safetensors"))
    assert_same_tensors(load_model(str(tmp_path / "int8.safetensors"), dtype=dtype), during)
    float_model = load_model(str(hf_dir), dtype=dtype)
    torch.save({"model": float_model.state_dict(), "model_args": float_model.config.__dict__}, tmp_path / "c.pt")
    assert_same_tensors(load_model(str(tmp_path / "c.pt"), dtype=dtype, quantize="int8"), during)


@pytest.mark.numerics
@pytest.mark.parametrize("shape", list(HF_CONFIGS))
def test_quantized_forward_is_float32_math_on_the_dequantized_weights(shape):
    # the int8 model in float32 against a float64 model holding scales * q: within float32's
    # rounding, the bound the float32 model meets against transformers (test_model.py)
    hf = make_hf_model(shape)
    config = config_from_hf(hf.config.to_dict())
    int8 = from_state_dict(config, dict(hf.state_dict()), quantize="int8").eval()
    state = {k: v for k, v in int8.state_dict().items() if not k.endswith(".scales")}
    for name, m in int8.named_modules():
        if isinstance(m, Int8Linear):
            state[name + ".weight"] = m.weight.double() * m.scales.double()[:, None]
    ref = from_state_dict(config, state, dtype=torch.float64).eval()
    idx = torch.randint(0, 1000, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert relative_error(int8(idx), ref(idx)) < 1e-5  # prompts: dequantize and matmul
        # decode steps, through the KV cache: the int8 kernel
        int8.setup_cache(3, 40)
        int8(idx[:, :30], input_pos=torch.arange(30))
        steps = torch.cat([int8(idx[:, [t]], input_pos=torch.tensor([t])) for t in range(30, 40)], 1)
        assert relative_error(steps, ref(idx)[:, 30:]) < 1e-5


@pytest.mark.numerics
@pytest.mark.parametrize("shape", list(HF_CONFIGS))
def test_quantized_logits_are_within_two_percent_of_float32(shape):
    # Each weight moves by at most half a step, max|w_row| / 254. These rows hold 256 to 1280
    # normal weights, whose largest is about 3 sigma: the moves are about 3 sigma / (254 sqrt 3),
    # 0.7% of sigma rms, and with random signs each Linear's output moves by that fraction of
    # itself. The logits pass about three such layers in a row (attention or MLP, twice, then
    # lm_head): sqrt(3) x 0.7% = 1.2%. Measured: 1.0% and 1.2% (of the largest logit).
    hf = make_hf_model(shape)
    model = Phi(config_from_hf(hf.config.to_dict())).eval()
    model.load_state_dict(hf.state_dict())
    int8 = quantize_model(copy.deepcopy(model))
    idx = torch.randint(0, 1000, (3, 77), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert relative_error(int8(idx), model(idx)) < 0.02


TINY = dict(vocab_size=51200, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, partial_rotary_factor=0.5, max_position_embeddings=256)


def test_eval_quantize_flag_scores_the_quantized_model(tmp_path):
    make_hf_model(TINY, std=0.1).save_pretrained(tmp_path / "hf")
    text = tmp_path / "text.txt"
    text.write_text("def add(a, b):\n    return a + b\n" * 40)
    results = ev.main(["--init_from", str(tmp_path / "hf"), "--tasks", "ppl", "--ppl_file", str(text),
                       "--out_dir", str(tmp_path / "eval"), "--device", "cpu", "--quantize", "int8"])
    model = quantize_model(load_model(str(tmp_path / "hf"))).eval()
    tokenizer = ev.Tokenizer()
    expected = ev.perplexity(model, ev.read_tokens(str(text), tokenizer), ev.token_bytes(tokenizer, 51200))
    assert results["ppl"]["perplexity"] == expected["perplexity"]


# -----------------------------------------------------------------------------
# Memory: the float weights are read one tensor at a time

PEAK = """
import sys
import checkpoint
if sys.argv[2] == "one mapping":  # how safetensors.torch.load_file reads a file
    from safetensors.torch import load_file
    checkpoint.read_safetensors = lambda file: (load_file(file), {})
def status(field):  # kB
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak so far (importing torch) is forgotten: VmHWM starts again from VmRSS
before = status("VmRSS")
model = checkpoint.load_model(sys.argv[1], quantize="int8")
print(1024 * (status("VmHWM") - before), sum(t.nbytes for t in model.state_dict().values()))
"""


def peak_growth(path, how: str) -> tuple[int, int]:
    """(the most that loading with quantize="int8" added to the resident memory of a process, the int8
    model's bytes). glibc is told to return every freed block over 1 MB at once: by default it keeps
    up to 64 MB of freed blocks under 32 MB for reuse, which is the allocator's, not the loader's."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    out = subprocess.run([sys.executable, "-c", PEAK, path, how], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return tuple(map(int, out.stdout.split()))


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="reads /proc (Linux)")
def test_loading_with_quantize_never_holds_the_float_model(tmp_path):
    # 2 layers 1024 wide: 109 MB of float32 weights, 32 MB quantized, 17 MB the largest tensor
    shape = dict(vocab_size=1024, hidden_size=1024, intermediate_size=4096, num_hidden_layers=2,
                 num_attention_heads=16, partial_rotary_factor=0.5, max_position_embeddings=64)
    make_hf_model(shape, std=0.02).save_pretrained(tmp_path)
    grown, size = peak_growth(str(tmp_path), "a mapping per tensor")
    # the int8 model, plus one float tensor read and the quantizer's float32 temporary of it
    assert grown < size + 2 * 17e6 + 10e6, (grown, size)  # (10 MB: code paged in at first use, and such)
    # the test can fail: one mapping of the file keeps every page read, the float model in the end
    grown, size = peak_growth(str(tmp_path), "one mapping")
    assert grown > size + 100e6, (grown, size)


# -----------------------------------------------------------------------------
# Errors: one line, naming the file and what to do

@pytest.fixture
def int8_file(hf_dir, tmp_path):
    path = tmp_path / "int8.safetensors"
    save_quantized(load_model(str(hf_dir), quantize="int8"), str(path))
    return path


def rewrite(path, edit_state=None, metadata=None):
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(path), framework="pt") as f:
        state, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    if edit_state:
        edit_state(state)
    save_file(state, str(path), metadata=meta if metadata is None else metadata)


@pytest.mark.parametrize("edit, metadata, message", [
    (lambda s: s.pop("model.layers.1.mlp.fc1.scales"), None,
     "is missing key 'model.layers.1.mlp.fc1.scales', the scales of the int8 'model.layers.1.mlp.fc1.weight'; "
     "write the file again with quantize.py"),
    (lambda s: s.update({"lm_head.scales": torch.ones(3)}), None,
     "key 'lm_head.scales' has shape (3,), the config expects (1000,)"),
    (lambda s: s.update({"lm_head.scales": torch.ones(1000, dtype=torch.int8)}), None,
     "key 'lm_head.scales' holds torch.int8, not a floating-point tensor"),
    (lambda s: s.update({"model.embed_tokens.weight": torch.ones(1000, 256, dtype=torch.int8)}), None,
     "key 'model.embed_tokens.weight' holds torch.int8"),
    (None, {"format": "pt"}, "is not a nanophi int8 checkpoint"),
    (None, {"nanophi": json.dumps({"model_args": {}, "quantize": "int4"})}, "is quantized as 'int4'"),
])
def test_a_bad_int8_checkpoint_is_one_clear_error(int8_file, edit, metadata, message):
    rewrite(int8_file, edit, metadata)
    with pytest.raises(ValueError) as e:
        load_model(str(int8_file))
    assert message in str(e.value) and str(int8_file) in str(e.value) and "\n" not in str(e.value)


def test_a_truncated_int8_checkpoint_is_one_clear_error(int8_file):
    data = int8_file.read_bytes()
    for broken in (data[: len(data) // 2], b"\x00" * 100):
        int8_file.write_bytes(broken)
        with pytest.raises(ValueError, match="is truncated or corrupt .*; write it again with python quantize.py"):
            load_model(str(int8_file))


def test_training_an_int8_checkpoint_is_one_clear_error(int8_file):
    # its fused loss would read lm_head's int8 weight without the scales: refused before any step
    import train
    cfg = train.TrainConfig(init_from=str(int8_file))
    with pytest.raises(train.ConfigError, match=r"holds int8 weights \(quantize.py\), which can be sampled and "
                                                 r"evaluated but not trained; fine-tune the float checkpoint"):
        train.build(cfg, None, torch.device("cpu"))


def test_the_training_loss_of_an_int8_model_is_one_clear_error():
    # the fused loss would read lm_head's int8 weight without its scales (under autocast, silently)
    model = quantize_model(Phi(PhiConfig.from_name("phi-test")))
    idx = torch.randint(0, 512, (1, 8))
    with pytest.raises(ValueError, match="this lm_head has none: score its logits, model\\(idx\\), instead"):
        model(idx, idx)


def test_compare_decodes_both_models_from_a_corpus_and_refuses_foreign_token_ids(tmp_path):
    import numpy as np
    for name, top in (("ok", 512), ("foreign", 50000)):
        d = tmp_path / name
        d.mkdir()
        for split in ("train", "val"):
            np.random.default_rng(0).integers(0, top, 4096).astype(np.uint16).tofile(d / f"{split}.bin")
    out = cli("quantize.py", "--init_from", "scratch:phi-test", "--compare", str(tmp_path / "ok"))
    assert out.returncode == 0, out.stderr
    assert "greedy decoding, 20 prompts of" in out.stdout and "continuations identical" in out.stdout
    out = cli("quantize.py", "--init_from", "scratch:phi-test", "--compare", str(tmp_path / "foreign"))
    assert out.returncode == 1 and out.stdout == "" and out.stderr.count("\n") == 1, out.stderr
    assert "outside the model's vocabulary of 512" in out.stderr


def test_nan_weights_name_the_key(hf_dir):
    from safetensors.torch import load_file, save_file
    state = load_file(hf_dir / "model.safetensors")
    state["model.layers.1.self_attn.v_proj.weight"][2, 3] = float("nan")
    save_file(state, hf_dir / "model.safetensors")
    with pytest.raises(ValueError, match=r"'model.layers.1.self_attn.v_proj.weight' holds nan or inf"):
        load_model(str(hf_dir), quantize="int8")


def cli(script, *argv):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *argv], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_the_command_lines_say_it_in_one_line(int8_file, capsys):
    for script in (sample, ev):
        with pytest.raises(SystemExit) as e:
            script.parse_args(["--quantize", "int4"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1
        assert "argument --quantize: invalid choice: 'int4' (choose from 'int8')" in err, err
    rewrite(int8_file, lambda s: s.pop("lm_head.scales"))
    out = cli("sample.py", "--init_from", str(int8_file), "--max_new_tokens", "1")
    assert out.returncode == 1 and out.stdout == "" and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"sample.py: error: {int8_file} is missing key 'lm_head.scales'"), out.stderr


@pytest.mark.slow
def test_bench_sample_runs_int8_and_each_row_has_its_reference_tokens():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), "sample", "--shape", "phi-test",
                          "--new_tokens", "8", "--repeats", "1", "--device", "cpu"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith(("transformers", "nanophi"))]
    assert [r[:24].strip() for r in rows] == ["transformers generate", "nanophi", "nanophi --compile",
                                              "nanophi int8", "nanophi int8 --compile"], out.stdout
    assert all(r.endswith("True") for r in rows), out.stdout
    assert "measured read bandwidth" in out.stdout
