"""Loading and saving the official weight formats, and clear errors for bad checkpoints."""

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import save_file

from conftest import ROOT, make_hf_model, relative_error
from checkpoint import config_from_hf, load_model, load_state_dict, parameter_shapes
from model import Phi, PhiConfig

IDX = torch.randint(0, 1000, (2, 40), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def hf():
    return make_hf_model("head64_rotary32")


@pytest.fixture(scope="module")
def hf_logits(hf):
    with torch.no_grad():
        return hf(IDX).logits


@pytest.fixture(scope="module")
def twin_logits(hf, hf_logits):
    """Logits of nanophi holding the reference's weights, loaded in memory: what every loaded
    checkpoint must reproduce bit for bit. They equal transformers' to float32 precision."""
    model = Phi(config_from_hf(hf.config.to_dict()))
    model.load_state_dict(hf.state_dict())
    logits = logits_of(model)
    assert relative_error(logits, hf_logits) < 1e-5
    return logits


def logits_of(model):
    with torch.no_grad():
        return model.eval()(IDX)


def test_save_pretrained_loads_in_transformers_with_identical_logits(hf, hf_logits, tmp_path):
    from transformers import AutoModelForCausalLM
    model = Phi(config_from_hf(hf.config.to_dict()))
    model.load_state_dict(hf.state_dict())
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert type(reloaded).__name__ == "PhiForCausalLM"
    with torch.no_grad():
        assert torch.equal(reloaded(IDX).logits, hf_logits)


@pytest.mark.parametrize("layout", ["safetensors", "sharded", "bin"])
def test_loads_transformers_checkpoints_with_identical_logits(hf, twin_logits, tmp_path, layout):
    if layout == "bin":  # the older layout: pytorch_model.bin beside config.json
        hf.config.save_pretrained(tmp_path)
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    else:
        hf.save_pretrained(tmp_path, max_shard_size="300KB" if layout == "sharded" else "50GB")
    if layout == "sharded":
        assert os.path.isfile(tmp_path / "model.safetensors.index.json")
        assert len([f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]) > 2
    model = Phi.from_pretrained(str(tmp_path))
    assert torch.equal(logits_of(model), twin_logits)


def test_loads_in_the_checkpoint_dtype_or_the_requested_one(tmp_path):
    make_hf_model("head64_rotary32", dtype=torch.float16).save_pretrained(tmp_path)
    assert Phi.from_pretrained(str(tmp_path)).lm_head.weight.dtype == torch.float16
    model = Phi.from_pretrained(str(tmp_path), dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.rope_cos.device.type == "cpu" and not model.rope_cos.is_meta


def mixformer_state(hf, layout: str) -> dict:
    """Microsoft's original key names, written out by hand from phi-facts.md."""
    sd, n = hf.state_dict(), hf.config.num_hidden_layers
    block = (lambda i: f"layers.{i + 1}.") if layout == "mixformer-sequential" else (lambda i: f"transformer.h.{i}.")
    out = {("layers.0.wte.weight" if layout == "mixformer-sequential" else "transformer.embd.wte.weight"):
           sd["model.embed_tokens.weight"]}
    for i in range(n):
        p = f"model.layers.{i}."
        for kind in ("weight", "bias"):
            out[block(i) + "ln." + kind] = sd[p + "input_layernorm." + kind]
            out[block(i) + "mixer.Wqkv." + kind] = torch.cat(
                [sd[p + f"self_attn.{x}_proj." + kind] for x in "qkv"], 0)
            out[block(i) + "mixer.out_proj." + kind] = sd[p + "self_attn.dense." + kind]
            out[block(i) + "mlp.fc1." + kind] = sd[p + "mlp.fc1." + kind]
            out[block(i) + "mlp.fc2." + kind] = sd[p + "mlp.fc2." + kind]
    head = f"layers.{n + 1}." if layout == "mixformer-sequential" else "lm_head."
    for kind in ("weight", "bias"):
        out[head + "ln." + kind] = sd["model.final_layernorm." + kind]
        out[head + "linear." + kind] = sd["lm_head." + kind]
    return {k: v.clone() for k, v in out.items()}


@pytest.mark.parametrize("layout", ["mixformer-sequential", "phi-msft"])
def test_loads_microsoft_mixformer_format(hf, twin_logits, tmp_path, layout):
    c = hf.config
    config = dict(model_type=layout, vocab_size=c.vocab_size, n_embd=c.hidden_size, n_head=c.num_attention_heads,
                  n_layer=c.num_hidden_layers, n_inner=c.intermediate_size, rotary_dim=32,
                  n_positions=c.max_position_embeddings, layer_norm_epsilon=1e-5, n_head_kv=None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    torch.save(mixformer_state(hf, layout), tmp_path / "pytorch_model.bin")
    assert torch.equal(logits_of(Phi.from_pretrained(str(tmp_path))), twin_logits)


def test_hub_name_resolves_from_the_local_cache(hf, twin_logits, tmp_path, monkeypatch):
    snapshot = tmp_path / "models--microsoft--phi-1_5" / "snapshots" / "abc123"
    hf.save_pretrained(snapshot)
    (tmp_path / "models--microsoft--phi-1_5" / "refs").mkdir()
    (tmp_path / "models--microsoft--phi-1_5" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert torch.equal(logits_of(Phi.from_pretrained("microsoft/phi-1_5")), twin_logits)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="microsoft/phi-2"):
        Phi.from_pretrained("microsoft/phi-2")


def test_nanophi_checkpoint_round_trip(hf, twin_logits, tmp_path):
    model = Phi(config_from_hf(hf.config.to_dict()))
    model.load_state_dict(hf.state_dict())
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "model_args": model.config.__dict__, "iter_num": 3}, path)
    assert torch.equal(logits_of(load_model(str(path))), twin_logits)
    assert load_model(str(path), dtype=torch.bfloat16).lm_head.weight.dtype == torch.bfloat16
    assert load_model("scratch:phi-test").config == PhiConfig.from_name("phi-test")


class NotATensor:
    pass


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "model_args": {}, "payload": NotATensor()}, path)
    with pytest.raises(ValueError, match="not a readable nanophi checkpoint"):
        load_model(str(path))


@pytest.fixture
def good_dir(hf, tmp_path):
    hf.save_pretrained(tmp_path)
    return tmp_path


def rewrite(directory, edit):
    from safetensors.torch import load_file
    state = load_file(directory / "model.safetensors")
    edit(state)
    save_file(state, directory / "model.safetensors")


def test_missing_key_is_named(good_dir):
    rewrite(good_dir, lambda s: s.pop("model.layers.1.mlp.fc2.bias"))
    with pytest.raises(ValueError, match="missing key 'model.layers.1.mlp.fc2.bias'"):
        Phi.from_pretrained(str(good_dir))


def test_unexpected_key_is_named(good_dir):
    rewrite(good_dir, lambda s: s.update({"model.layers.9.extra.weight": torch.zeros(1)}))
    with pytest.raises(ValueError, match="unexpected key 'model.layers.9.extra.weight'"):
        Phi.from_pretrained(str(good_dir))


def test_wrong_shape_is_named(good_dir):
    rewrite(good_dir, lambda s: s.update({"lm_head.bias": torch.zeros(999)}))
    with pytest.raises(ValueError, match=r"'lm_head.bias' has shape \(999,\), the config expects \(1000,\)"):
        Phi.from_pretrained(str(good_dir))


def test_truncated_or_corrupt_files_are_clear_errors(good_dir):
    weights = good_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        Phi.from_pretrained(str(good_dir))
    weights.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        Phi.from_pretrained(str(good_dir))
    weights.unlink()
    (good_dir / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        Phi.from_pretrained(str(good_dir))
    (good_dir / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not a valid phi config"):
        Phi.from_pretrained(str(good_dir))


def test_missing_paths_are_clear_errors(good_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Phi.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "nope.pt"))
    (good_dir / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        Phi.from_pretrained(str(good_dir))
    (good_dir / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        Phi.from_pretrained(str(good_dir))


def test_missing_shard_is_a_clear_error(hf, tmp_path):
    hf.save_pretrained(tmp_path, max_shard_size="300KB")
    shard = sorted(f for f in os.listdir(tmp_path) if f.endswith(".safetensors"))[0]
    (tmp_path / shard).unlink()
    with pytest.raises(FileNotFoundError, match=shard):
        Phi.from_pretrained(str(tmp_path))


def test_save_pretrained_is_atomic(hf, tmp_path, monkeypatch):
    model = Phi(config_from_hf(hf.config.to_dict()))
    model.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def crash(state, path, metadata=None):  # dies half way through writing the file
        with open(path, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]


def test_bfloat16_loading_matches_transformers_bfloat16(hf, tmp_path):
    # both load float32 files into bfloat16 (rotary tables stay float32 and are cast at use, as
    # transformers' from_pretrained does); agreement is to bfloat16 precision, not bit for bit
    from transformers import AutoModelForCausalLM
    hf.save_pretrained(tmp_path)
    ref = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    model = Phi.from_pretrained(str(tmp_path), dtype=torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert relative_error(logits_of(model), ref(IDX).logits) < 1e-2


def test_saved_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        Phi(PhiConfig.from_name("phi-test")).save_pretrained(tmp_path)
    finally:
        os.umask(old)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o644


# -----------------------------------------------------------------------------
# Hostile or malformed files: one clear line naming the file and the field, and nothing read from
# outside the model's directory, nothing built before the config is checked against the weights

@pytest.mark.parametrize("index", ["model.safetensors.index.json", "pytorch_model.bin.index.json"])
def test_an_index_cannot_name_a_file_outside_the_model_directory(hf, tmp_path, index):
    hf.save_pretrained(tmp_path / "outside")  # good weights, which the index must still not reach
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text((tmp_path / "outside" / "config.json").read_text())
    for name in ["../outside/model.safetensors", str(tmp_path / "outside" / "model.safetensors"),
                 "../../../../etc/passwd", "..", "sub/model.safetensors"]:
        (model_dir / index).write_text(json.dumps({"weight_map": {"lm_head.weight": name}}))
        with pytest.raises(ValueError, match=re.escape(f"{index}: weight_map names {name!r}, which is not a plain file")):
            Phi.from_pretrained(str(model_dir))


def test_shards_linked_into_the_hf_cache_blobs_still_load(hf, twin_logits, tmp_path):
    # the Hugging Face cache keeps snapshot files as symlinks to ../../blobs: names are checked, not targets
    hf.save_pretrained(tmp_path / "saved", max_shard_size="300KB")
    (tmp_path / "blobs").mkdir()
    snapshot = tmp_path / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    for name in os.listdir(tmp_path / "saved"):
        os.rename(tmp_path / "saved" / name, tmp_path / "blobs" / name)
        os.symlink(os.path.join("..", "..", "blobs", name), snapshot / name)
    assert os.path.isfile(snapshot / "model.safetensors.index.json")
    assert torch.equal(logits_of(Phi.from_pretrained(str(snapshot))), twin_logits)


def test_a_weight_map_that_is_not_a_dict_is_one_line(hf, tmp_path):
    hf.save_pretrained(tmp_path, max_shard_size="300KB")
    index = {"weight_map": ["model-00001-of-00002.safetensors"]}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"model.safetensors.index.json: weight_map must map tensor names to "
                                         r"file names, not a list"):
        Phi.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("edit, message", [
    (lambda c: [c], "config.json must hold a JSON object, not a list"),
    (lambda c: {**c, "rope_scaling": "yes"}, "config.json: rope_scaling must be a JSON object, got 'yes'"),
    (lambda c: {**c, "rope_parameters": 2}, "config.json: rope_parameters must be a JSON object, got 2"),
    (lambda c: {**c, "layer_norm_eps": "x"}, "config.json: layer_norm_eps must be a finite number, got 'x'"),
    (lambda c: {**c, "rope_parameters": {**c["rope_parameters"], "rope_theta": float("nan")}},
     "config.json: rope_theta must be a finite number, got nan"),
    (lambda c: {**c, "resid_pdrop": float("inf")}, "config.json: resid_pdrop must be a finite number, got inf"),
    (lambda c: {**c, "num_hidden_layers": True}, "config.json: num_hidden_layers must be a positive integer, got True"),
    (lambda c: {**c, "hidden_size": 256.0}, "config.json: hidden_size must be a positive integer, got 256.0"),
    (lambda c: {k: v for k, v in c.items() if k != "vocab_size"}, "config.json has no vocab_size"),
    (lambda c: {**c, "num_attention_heads": 3, "num_key_value_heads": 3},
     r"config.json: head_dim \* num_attention_heads != hidden_size"),
])
def test_a_malformed_config_is_one_line_naming_the_file_and_field(good_dir, edit, message):
    config = json.loads((good_dir / "config.json").read_text())
    (good_dir / "config.json").write_text(json.dumps(edit(config)))
    with pytest.raises(ValueError) as e:
        Phi.from_pretrained(str(good_dir))
    assert str(e.value).startswith(str(good_dir / "config.json")) and "\n" not in str(e.value)
    assert re.search(message, str(e.value)), str(e.value)


@pytest.fixture
def good_pt(hf, tmp_path):
    model = Phi(config_from_hf(hf.config.to_dict()))
    return tmp_path / "ckpt.pt", {"model": model.state_dict(), "model_args": asdict(model.config)}


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(model=list(c["model"].values())), "'model' must be a dict, not a list"),
    (lambda c: c.update(model={k: 1 for k in c["model"]}),
     "key 'model.embed_tokens.weight' holds int, not a floating-point tensor"),
    (lambda c: c.update(model_args=[1, 2]), "'model_args' must be a dict, not a list"),
    (lambda c: c["model_args"].update(n_layer="2"), "model_args: PhiConfig.n_layer must be a positive integer, got '2'"),
    (lambda c: c["model_args"].update(n_layer=True), "model_args: PhiConfig.n_layer must be a positive integer, got True"),
    (lambda c: c["model_args"].update(layer_norm_eps="x"),
     "model_args: PhiConfig.layer_norm_eps must be a finite number, got 'x'"),
    (lambda c: c["model_args"].update(block_size=10**12), "model_args: PhiConfig.block_size must be at most 1048576"),
])
def test_a_malformed_nanophi_checkpoint_is_one_line_naming_the_file_and_field(good_pt, edit, message):
    path, ckpt = good_pt
    edit(ckpt)
    torch.save(ckpt, path)
    with pytest.raises(ValueError) as e:
        load_model(str(path))
    assert str(e.value).startswith(f"{path}") and message in str(e.value) and "\n" not in str(e.value), str(e.value)


def sample_cli(*argv):
    return subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize("field, value, message", [
    ("num_hidden_layers", 10**9, "is missing key 'model.layers.2.input_layernorm.weight'"),  # hung, at 11 MB/s
    ("hidden_size", 2**40, "has shape (1000, 256), the config expects (1000, 1099511627776)"),
    ("max_position_embeddings", 10**12, "config.json: max_position_embeddings must be a positive integer of "
                                        "at most 1048576"),  # a 4 TB rotary table
])
def test_a_config_too_large_for_its_weights_fails_before_anything_is_built(good_dir, field, value, message):
    config = json.loads((good_dir / "config.json").read_text())
    (good_dir / "config.json").write_text(json.dumps({**config, field: value}))
    result = sample_cli("--init_from", str(good_dir), "--max_new_tokens", "1")  # 60 s timeout: not hanging
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert str(good_dir) in result.stderr


def test_the_config_arithmetic_gives_the_models_parameter_shapes():
    # check_state_dict compares checkpoints with shapes computed from the config, not with a built model
    for name in ("phi-test", "phi-nano"):
        config = PhiConfig.from_name(name)
        with torch.device("meta"):
            model = Phi(config)
        assert dict(parameter_shapes(config)) == {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without an MPS device")
def test_a_device_error_is_not_called_a_corrupt_file(good_dir):
    with pytest.raises(Exception) as e:
        load_state_dict(str(good_dir), device="mps")
    assert "mps" in str(e.value) and "corrupt" not in str(e.value)


# -----------------------------------------------------------------------------
# config.json dialects

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
    configs = [config_from_hf(c) for c in (new, old, mixformer)]
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
        config_from_hf({**base, **bad})
