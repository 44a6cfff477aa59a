"""
phi's weights and checkpoints on disk, in every format nanophi reads or writes.

    load_model(init_from)          the model an --init_from value names: scratch:PRESET, a nanophi
                                   .pt checkpoint, an int8 .safetensors file (quantize.py), or Hugging
                                   Face weights (a directory or hub name); quantize="int8" quantizes
                                   each Linear while loading, one tensor at a time
    from_pretrained(path)          Hugging Face weights: config.json (three dialects) plus
                                   model.safetensors, sharded safetensors or pytorch_model.bin, with
                                   transformers' names or Microsoft's original MixFormer names
    save_pretrained(model, path)   the official layout, which transformers loads
    save_quantized(model, path)    an int8 model as one safetensors file, with its config
    write_checkpoint / read_checkpoint   train.py's ckpt.pt and ckpt-STEP.pt files

Nothing here runs code from a file: safetensors, and torch.load(weights_only=True) for .pt and .bin.
Everything is checked before a model is built (check_state_dict), so a config much larger than its
weights, a shard outside its directory or a corrupt file is one clear error, not a huge allocation.
"""

import errno
import functools
import json
import os
import pickle
import re
import shlex
import shutil
import sys
from dataclasses import asdict, fields
from typing import Iterator, Optional

import torch

from common import atomic_write, write_text
from model import MAX_BLOCK_SIZE, Phi, PhiConfig, rope_tables
from quantize import METHODS, Int8Linear, quantize_int8, quantize_model


# -----------------------------------------------------------------------------
# config.json <-> PhiConfig. Three dialects exist: "phi" (transformers' PhiForCausalLM, the current
# official repos), and Microsoft's earlier "mixformer-sequential" (phi-1, phi-1.5 at release) and
# "phi-msft" (phi-2 at release), which use GPT-2-style names.

def is_finite_number(value) -> bool:
    """An int or a float, not a bool, that a finite float can hold: not nan, inf or 10**400."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= sys.float_info.max


def config_field(hf: dict, source: str, key: str, kind: type, default=..., at_most: Optional[int] = None):
    """hf[key] (default where it is absent or null), checked: int is a positive integer (at most
    at_most), float a finite number, dict a JSON object, str a string. A wrong type is one line
    naming the file and the field, not a traceback, or a model that fails in its forward."""
    value = hf.get(key)
    if value is None:
        if default is ...:
            raise ValueError(f"{source} has no {key}")
        return default
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value <= (at_most or value)
        what = "a positive integer" + (f" of at most {at_most}" if at_most else "")
    elif kind is float:
        ok, what = is_finite_number(value), "a finite number"
    else:
        ok, what = isinstance(value, kind), {dict: "a JSON object", str: "a string"}[kind]
    if not ok:
        raise ValueError(f"{source}: {key} must be {what}, got {value!r}")
    return value


def config_from_hf(hf: dict, source: str = "config.json") -> PhiConfig:
    """The PhiConfig of a Hugging Face config.json (any of the three dialects). source: the file hf
    was read from, named in the error messages."""
    if not isinstance(hf, dict):
        raise ValueError(f"{source} must hold a JSON object, not a {type(hf).__name__}")
    get = functools.partial(config_field, hf, source)

    def build(**kwargs) -> PhiConfig:
        try:
            return PhiConfig(**kwargs)
        except ValueError as e:  # what the fields say together (rotary_dim, divisibility)
            raise ValueError(f"{source}: {e}") from None

    model_type = get("model_type", str, "phi")
    if model_type in ("mixformer-sequential", "phi-msft"):
        n_head, n_embd = get("n_head", int), get("n_embd", int)
        if get("n_head_kv", int, n_head) != n_head:
            raise ValueError(f"{source}: grouped-query attention (n_head_kv) is not a phi-1/1.5/2 "
                             "feature and is not supported")
        return build(vocab_size=get("vocab_size", int), n_layer=get("n_layer", int), n_head=n_head,
                     n_embd=n_embd, n_inner=get("n_inner", int, 4 * n_embd),
                     rotary_dim=get("rotary_dim", int),
                     block_size=get("n_positions", int, 2048, at_most=MAX_BLOCK_SIZE),
                     layer_norm_eps=get("layer_norm_epsilon", float, 1e-5),
                     embd_pdrop=get("embd_pdrop", float, 0.0), resid_pdrop=get("resid_pdrop", float, 0.0),
                     attn_pdrop=get("attn_pdrop", float, 0.0),
                     initializer_range=get("initializer_range", float, 0.02))
    if model_type != "phi":
        raise ValueError(f"{source} has model_type {model_type!r}; nanophi loads phi-1, phi-1.5 "
                         f"and phi-2 ('phi', 'mixformer-sequential' or 'phi-msft')")
    n_head = get("num_attention_heads", int)
    if get("num_key_value_heads", int, n_head) != n_head:
        raise ValueError(f"{source}: num_key_value_heads != num_attention_heads (grouped-query "
                         "attention) is not a phi-1/1.5/2 feature and is not supported")
    if hf.get("qk_layernorm"):
        raise ValueError(f"{source}: qk_layernorm is not a phi-1/1.5/2 feature and is not supported")
    if get("hidden_act", str, "gelu_new") != "gelu_new":
        raise ValueError(f"{source}: hidden_act {hf['hidden_act']!r} is not supported (phi uses gelu_new)")
    # transformers >= 5 nests the rope settings in rope_parameters; older files have them on top
    rope = get("rope_parameters", dict, {})
    scaling = get("rope_scaling", dict, None)
    if rope.get("rope_type", "default") != "default" or (scaling and scaling.get("rope_type", scaling.get("type")) != "default"):
        raise ValueError(f"{source}: RoPE scaling is not supported (phi-1/1.5/2 use plain RoPE)")
    get_rope = functools.partial(config_field, {**hf, **rope}, source)  # the nested value wins
    factor = get_rope("partial_rotary_factor", float, 0.5)
    n_embd = get("hidden_size", int)
    head_dim = get("head_dim", int, n_embd // n_head)
    if head_dim * n_head != n_embd:
        raise ValueError(f"{source}: head_dim * num_attention_heads != hidden_size is not supported")
    return build(vocab_size=get("vocab_size", int), n_layer=get("num_hidden_layers", int), n_head=n_head,
                 n_embd=n_embd, n_inner=get("intermediate_size", int),
                 rotary_dim=int(head_dim * factor),  # int() as transformers does
                 rope_theta=float(get_rope("rope_theta", float, 10000.0)),
                 block_size=get("max_position_embeddings", int, 2048, at_most=MAX_BLOCK_SIZE),
                 layer_norm_eps=get("layer_norm_eps", float, 1e-5),
                 embd_pdrop=get("embd_pdrop", float, 0.0), resid_pdrop=get("resid_pdrop", float, 0.0),
                 attn_pdrop=get("attention_dropout", float, 0.0),
                 initializer_range=get("initializer_range", float, 0.02))


def config_to_hf(config: PhiConfig) -> dict:
    """config.json in the layout of the official microsoft/phi-1_5 repository."""
    return {
        "architectures": ["PhiForCausalLM"], "model_type": "phi",
        "vocab_size": config.vocab_size, "hidden_size": config.n_embd, "intermediate_size": config.n_inner,
        "num_hidden_layers": config.n_layer, "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_head, "max_position_embeddings": config.block_size,
        "partial_rotary_factor": config.rotary_dim / config.head_dim, "rope_theta": config.rope_theta,
        "rope_scaling": None, "layer_norm_eps": config.layer_norm_eps, "hidden_act": "gelu_new",
        "resid_pdrop": config.resid_pdrop, "embd_pdrop": config.embd_pdrop,
        "attention_dropout": config.attn_pdrop, "initializer_range": config.initializer_range,
        "qk_layernorm": False, "tie_word_embeddings": False, "use_cache": True,
        # <|endoftext|> is bos and eos, when the vocabulary has it
        "bos_token_id": 50256 if config.vocab_size > 50256 else None,
        "eos_token_id": 50256 if config.vocab_size > 50256 else None,
    }


# -----------------------------------------------------------------------------
# Hugging Face weights

def from_pretrained(path: str, dtype: Optional[torch.dtype] = None, device="cpu",
                    quantize: Optional[str] = None) -> Phi:
    """Load phi weights in the Hugging Face layout: a local directory (config.json plus
    model.safetensors, sharded safetensors with model.safetensors.index.json, or
    pytorch_model.bin), or a hub name such as microsoft/phi-1_5 (see resolve_checkpoint).
    Both transformers' key names and Microsoft's original MixFormer names are accepted.
    dtype None keeps the checkpoint's dtype. quantize: see from_state_dict."""
    directory = resolve_checkpoint(path)
    config_path = os.path.join(directory, "config.json")
    try:
        with open(config_path, encoding="utf-8") as f:
            hf = json.load(f)
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, or nested too deep
        raise ValueError(f"{config_path} is not a valid phi config ({e!r})") from None
    config = config_from_hf(hf, config_path)
    # read on the CPU, memory-mapped: from_state_dict moves (or quantizes) one tensor at a time
    state = to_official_names(load_state_dict(directory), config.n_layer)
    return from_state_dict(config, state, dtype, device, source=directory, quantize=quantize)


def save_pretrained(model: Phi, path: str, dtype: Optional[torch.dtype] = None) -> None:
    """Write config.json and model.safetensors in the official layout, each atomically."""
    from safetensors.torch import save_file
    os.makedirs(path, exist_ok=True)
    hf = config_to_hf(model.config)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    state = {k: v.contiguous().cpu() for k, v in state.items()}
    hf["torch_dtype"] = str(next(iter(state.values())).dtype).removeprefix("torch.")
    atomic_write(os.path.join(path, "model.safetensors"),
                 lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    atomic_write(os.path.join(path, "config.json"),
                 lambda tmp: write_text(tmp, json.dumps(hf, indent=2) + "\n"))


def resolve_checkpoint(path: str) -> str:
    """A local directory is used as it is. A hub name (microsoft/phi-1_5) is looked up in the local
    Hugging Face cache (HF_HUB_CACHE, or HF_HOME/hub, or ~/.cache/huggingface/hub); if it is not
    there it is downloaded, only when huggingface_hub is installed and the network is reachable."""
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"{path} has no config.json; expected a Hugging Face phi directory")
        return path
    if os.path.exists(path):
        raise ValueError(f"{path} is a file; pass the directory that holds config.json and the weights")
    if path.count("/") != 1 or path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub")
    repo = os.path.join(cache, "models--" + path.replace("/", "--"))
    try:
        with open(os.path.join(repo, "refs", "main")) as f:
            snapshot = os.path.join(repo, "snapshots", f.read().strip())
        if os.path.isfile(os.path.join(snapshot, "config.json")):
            return snapshot
    except OSError:
        pass
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(f"{path} is neither a local directory nor in the Hugging Face cache at "
                                f"{cache}; download it first (pip install huggingface_hub; "
                                f"huggingface-cli download {path}) or pass a local directory") from None
    try:
        return snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.bin"])
    except Exception as e:
        raise FileNotFoundError(f"could not find or download {path} ({type(e).__name__}: {e}); "
                                f"pass a local directory with config.json and the weights") from None


def read_safetensors(file: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors of a safetensors file, and its metadata. Each tensor is memory-mapped on its own,
    so its pages are read when it is used and leave memory with it. (safetensors' load_file maps the
    file once, and that mapping keeps every page read until the last tensor is freed: quantizing
    while loading would hold the whole float model after all.)"""
    from safetensors import safe_open
    with safe_open(file, framework="pt") as f:
        keys, metadata = list(f.keys()), f.metadata() or {}
    tensors = {}
    for key in keys:
        with safe_open(file, framework="pt") as f:
            tensors[key] = f.get_tensor(key)
    return tensors, metadata


def load_state_dict(directory: str, device="cpu") -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory, memory-mapped (read_safetensors)."""
    from safetensors import SafetensorError
    single = os.path.join(directory, "model.safetensors")
    index = os.path.join(directory, "model.safetensors.index.json")
    bins = [os.path.join(directory, "pytorch_model.bin")]
    bin_index = os.path.join(directory, "pytorch_model.bin.index.json")
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index) or os.path.isfile(bin_index):
        idx_path = index if os.path.isfile(index) else bin_index
        try:
            with open(idx_path) as f:
                weight_map = json.load(f)["weight_map"]
        except (ValueError, KeyError, TypeError, RecursionError) as e:  # also not UTF-8, or not an object
            raise ValueError(f"{idx_path} is not a valid index file ({e!r})") from None
        if not isinstance(weight_map, dict):
            raise ValueError(f"{idx_path}: weight_map must map tensor names to file names, not a "
                             f"{type(weight_map).__name__}")
        # A shard is a file of this directory, named plainly: "../../etc/passwd" or "/etc/passwd"
        # would read any file. The names are checked, not where they lead: the Hugging Face cache
        # makes every snapshot file a symlink into ../../blobs.
        for name in weight_map.values():
            if not isinstance(name, str) or name in ("", ".", "..") or os.path.basename(name) != name:
                raise ValueError(f"{idx_path}: weight_map names {name!r}, which is not a plain file name; "
                                 f"a shard must be a file in {directory}")
        files = [os.path.join(directory, name) for name in sorted(set(weight_map.values()))]
    elif os.path.isfile(bins[0]):
        files = bins
    else:
        raise FileNotFoundError(f"{directory} has no model.safetensors, model.safetensors.index.json or "
                                f"pytorch_model.bin")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if not os.path.isfile(file):
            raise FileNotFoundError(f"weights file {file} named in the index is missing")
        # read on the CPU (memory-mapped) and moved to the device after, so that only what the
        # file holds can be called corrupt, not a device that cannot take the tensors
        try:
            if file.endswith(".safetensors"):
                part = read_safetensors(file)[0]
            else:  # weights_only: tensors and plain containers, never arbitrary pickled objects
                part = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except (SafetensorError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
            raise ValueError(f"{file} is truncated or corrupt ({type(e).__name__}: {e}); "
                             f"download it again") from None
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise ValueError(f"{file} does not hold a dict of tensors")
        for key in part:
            if key in state:
                raise ValueError(f"key {key} appears in more than one weights file")
        state.update((k, v.to(device)) for k, v in part.items())
    return state


def to_official_names(state: dict, n_layer: int) -> dict:
    """Map Microsoft's original key names to transformers' names (which are ours). Two layouts:
      mixformer-sequential (phi-1, phi-1.5 at release): layers.0.wte = embedding,
          layers.{1..n} = blocks 0..n-1 (ln, mixer.Wqkv, mixer.out_proj, mlp.fc1, mlp.fc2),
          layers.{n+1}.ln = final LayerNorm, layers.{n+1}.linear = lm_head;
      phi-msft (phi-2 at release): transformer.embd.wte, transformer.h.{0..n-1}.*, lm_head.{ln,linear}.
    Wqkv's rows are [all q | all k | all v]: split into thirds, with no per-head reordering."""
    if not any(k.startswith(("layers.", "transformer.")) for k in state):
        return state
    out = {}
    for key, t in state.items():
        if key.endswith("inv_freq"):  # a rotary buffer some files carry; recomputed here
            continue
        # phi-msft -> mixformer-sequential numbering
        name = re.sub(r"^transformer\.embd\.", "layers.0.", key)
        name = re.sub(r"^transformer\.h\.(\d+)\.", lambda m: f"layers.{int(m[1]) + 1}.", name)
        name = re.sub(r"^lm_head\.(ln|linear)\.", lambda m: f"layers.{n_layer + 1}.{m[1]}.", name)
        m = re.fullmatch(r"layers\.(\d+)\.(.+)\.(weight|bias)", name)
        if m is None:
            out[key] = t  # reported as unexpected by check_state_dict
            continue
        j, sub, kind = int(m[1]), m[2], m[3]
        if j == 0 and sub == "wte":
            out["model.embed_tokens." + kind] = t
        elif j == n_layer + 1 and sub in ("ln", "linear"):
            out[("model.final_layernorm." if sub == "ln" else "lm_head.") + kind] = t
        elif 1 <= j <= n_layer and sub == "mixer.Wqkv":
            for proj, part in zip(("q_proj", "k_proj", "v_proj"), t.chunk(3, dim=0)):
                out[f"model.layers.{j - 1}.self_attn.{proj}.{kind}"] = part
        elif 1 <= j <= n_layer and sub in _MIXFORMER_BLOCK_NAMES:
            out[f"model.layers.{j - 1}.{_MIXFORMER_BLOCK_NAMES[sub]}.{kind}"] = t
        else:
            out[key] = t
    return out


_MIXFORMER_BLOCK_NAMES = {"ln": "input_layernorm", "mixer.out_proj": "self_attn.dense",
                          "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def parameter_shapes(config: PhiConfig) -> Iterator[tuple[str, tuple[int, ...]]]:
    """The name and shape of each parameter of Phi(config), in the module's order, worked out from
    the config alone. A generator: a config that asks for 10**9 layers is never listed in full."""
    C, I, V = config.n_embd, config.n_inner, config.vocab_size
    yield "model.embed_tokens.weight", (V, C)
    for i in range(config.n_layer):
        p = f"model.layers.{i}."
        yield from ((p + "input_layernorm.weight", (C,)), (p + "input_layernorm.bias", (C,)))
        for proj in ("q_proj", "k_proj", "v_proj", "dense"):
            yield from ((p + f"self_attn.{proj}.weight", (C, C)), (p + f"self_attn.{proj}.bias", (C,)))
        yield from ((p + "mlp.fc1.weight", (I, C)), (p + "mlp.fc1.bias", (I,)),
                    (p + "mlp.fc2.weight", (C, I)), (p + "mlp.fc2.bias", (C,)))
    yield from (("model.final_layernorm.weight", (C,)), ("model.final_layernorm.bias", (C,)),
                ("lm_head.weight", (V, C)), ("lm_head.bias", (V,)))


def is_linear_weight(name: str, shape: tuple) -> bool:
    """Whether an entry of parameter_shapes is a Linear's weight: the 2-D ones but the embedding."""
    return len(shape) == 2 and name != "model.embed_tokens.weight"


def check_state_dict(config: PhiConfig, state: dict, source: str = "checkpoint",
                     quantize: Optional[str] = None) -> None:
    """Name the first missing, unexpected or mis-shaped key, so a bad checkpoint fails clearly.
    It runs before the model is built: a config much larger than its weights (num_hidden_layers
    10**9, hidden_size 2**40) stops here, at the first key it lacks or the first shape that differs,
    instead of in an endless module construction or a huge allocation. With quantize, a Linear's
    weight may also be int8, and then its float scales (out_features,) must be there too."""
    state.pop("model.rotary_emb.inv_freq", None)  # an old transformers buffer, recomputed here
    expected, int8 = {}, set()
    for k, shape in parameter_shapes(config):  # stops at the first key the checkpoint lacks
        if k not in state:
            raise ValueError(f"{source} is missing key {k!r}")
        expected[k] = shape
        if quantize and is_linear_weight(k, shape) and getattr(state[k], "dtype", None) == torch.int8:
            scales = k.removesuffix("weight") + "scales"
            if scales not in state:
                raise ValueError(f"{source} is missing key {scales!r}, the scales of the int8 {k!r}; "
                                 f"write the file again with quantize.py")
            expected[scales] = shape[:1]
            int8.add(k)
    for k, t in state.items():
        if k not in expected:
            raise ValueError(f"{source} has unexpected key {k!r}")
        if not isinstance(t, torch.Tensor) or not (t.is_floating_point() or k in int8):
            what = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{source}: key {k!r} holds {what}, not a floating-point tensor")
        if tuple(t.shape) != expected[k]:
            raise ValueError(f"{source}: key {k!r} has shape {tuple(t.shape)}, the config expects {expected[k]}")


def from_state_dict(config: PhiConfig, state: dict, dtype: Optional[torch.dtype] = None,
                    device="cpu", source: str = "checkpoint", quantize: Optional[str] = None) -> Phi:
    """Build the model around the tensors of state (official names) without copying them: the
    module is created on the meta device and takes the tensors with load_state_dict(assign=True),
    so a checkpoint is never held twice. dtype None keeps the tensors' dtype. source: the file
    or directory state came from, named in the error messages.

    quantize "int8": every Linear becomes a quantize.Int8Linear. Its float weight is quantized here,
    one tensor at a time as it is moved to the device, so the float model is never whole in memory
    (the result equals quantize_model of the float model); an int8 weight (a quantized checkpoint)
    comes with its scales, which stay float32."""
    if quantize is not None and quantize not in METHODS:
        raise ValueError(f"quantize {quantize!r} is not a method; choose one of {', '.join(METHODS)}")
    check_state_dict(config, state, source, quantize)  # before anything is built from the config
    with torch.device("meta"):
        model = Phi(config)
    if quantize:
        quantize_model(model)  # empty Int8Linear layers, filled below
    to_quantize = {name + ".weight" for name, m in model.named_modules() if isinstance(m, Int8Linear)}
    if dtype is None:  # (the int8 weights and float32 scales of a quantized checkpoint aside)
        dtypes = {t.dtype for k, t in state.items() if t.dtype != torch.int8 and not k.endswith(".scales")}
        if len(dtypes) > 1:
            raise ValueError(f"checkpoint mixes dtypes {sorted(map(str, dtypes))}; pass a dtype to choose one")
    for k in list(state):  # one tensor at a time, so two full copies never coexist
        t = state.pop(k)
        if k.endswith(".scales") or t.dtype == torch.int8:  # a quantized checkpoint's, as they are
            state[k] = t.to(device)
        elif k in to_quantize:
            try:
                state[k], state[k.removesuffix("weight") + "scales"] = quantize_int8(t.to(device=device, dtype=dtype))
            except ValueError as e:
                raise ValueError(f"{source}: key {k!r} {e}") from None
        else:
            state[k] = t.to(device=device, dtype=dtype)
        del t  # the float tensor (and the pages read for it) go now, not after the next one
    model.load_state_dict(state, assign=True)
    model.rope_cos, model.rope_sin = rope_tables(config)  # buffers are not in checkpoints
    return model.to(device)


# -----------------------------------------------------------------------------
# --init_from values, and nanophi's own .pt files

def load_model(source: str, device="cpu", dtype: Optional[torch.dtype] = None,
               quantize: Optional[str] = None) -> Phi:
    """The model named by an --init_from value:
      scratch:PRESET   fresh random weights of a preset, e.g. scratch:phi-nano;
      FILE.pt          a nanophi checkpoint from train.py: a dict with "model" (the state dict,
                       official names) and "model_args" (the PhiConfig fields), read with
                       torch.load(weights_only=True), so it cannot run code;
      FILE.safetensors an int8 checkpoint written by quantize.py (save_quantized): it loads
                       quantized whatever quantize says;
      anything else    Hugging Face weights: a local directory or a hub name (from_pretrained).
    quantize "int8": each Linear quantized while loading (from_state_dict)."""
    if source.startswith("scratch:"):
        model = Phi(PhiConfig.from_name(source.removeprefix("scratch:"))).to(device=device, dtype=dtype)
        return quantize_model(model) if quantize else model
    if source.endswith(".safetensors"):
        return load_quantized(source, device, dtype)
    if source.endswith(".pt") or os.path.isfile(source):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"checkpoint {source} does not exist; train one with train.py or "
                                    f"pass --init_from=<Hugging Face phi directory>")
        try:  # on the CPU, memory-mapped: from_state_dict moves (or quantizes) one tensor at a time
            ckpt = torch.load(source, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # truncated zip, not a torch file, or pickled objects
            raise ValueError(f"{source} is not a readable nanophi checkpoint ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
        if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
            raise ValueError(f"{source} is not a nanophi checkpoint (expected keys 'model' and 'model_args')")
        if not isinstance(ckpt["model"], dict):
            raise ValueError(f"{source}: 'model' must be a dict, not a {type(ckpt['model']).__name__}")
        config = config_from_model_args(ckpt["model_args"], source)
        return from_state_dict(config, dict(ckpt["model"]), dtype, device, source=source, quantize=quantize)
    return from_pretrained(source, dtype=dtype, device=device, quantize=quantize)


def config_from_model_args(model_args, source: str) -> PhiConfig:
    """The PhiConfig of a checkpoint's model_args (the PhiConfig fields, as a dict)."""
    if not isinstance(model_args, dict):
        raise ValueError(f"{source}: 'model_args' must be a dict, not a {type(model_args).__name__}")
    unknown = set(model_args) - {f.name for f in fields(PhiConfig)}
    if unknown:
        raise ValueError(f"{source}: unknown model_args {sorted(map(str, unknown))}")
    try:
        return PhiConfig(**model_args)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{source}: model_args: {e}") from None


# -----------------------------------------------------------------------------
# int8 checkpoints: one safetensors file, the quantized model's tensors (each Linear's weight in int8
# with its float32 scales, the rest in the model's dtype), and in its metadata under "nanophi", JSON
# with the PhiConfig fields ("model_args") and the method ("quantize"). Not a Hugging Face layout on
# purpose: transformers would read the int8 weights as floats.

def save_quantized(model: Phi, path: str) -> None:
    """Write a quantized model (quantize.quantize_model, or load_model(..., quantize="int8")) to path,
    atomically; load_model reads it back."""
    from safetensors.torch import save_file
    if not any(isinstance(m, Int8Linear) for m in model.modules()):
        raise ValueError("the model is not quantized; load it with quantize='int8' first")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "nanophi": json.dumps({"model_args": asdict(model.config), "quantize": "int8"})}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def load_quantized(path: str, device="cpu", dtype: Optional[torch.dtype] = None) -> Phi:
    """A checkpoint written by save_quantized. dtype converts what is not int8 (the scales stay float32)."""
    from safetensors import SafetensorError
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist; write one with python quantize.py")
    try:
        state, metadata = read_safetensors(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}); write it again with "
                         f"python quantize.py") from None
    try:
        info = json.loads(metadata["nanophi"])
        model_args, method = info["model_args"], info["quantize"]
    except (KeyError, TypeError, ValueError, RecursionError):
        raise ValueError(f"{path} is not a nanophi int8 checkpoint (its metadata has no 'nanophi' entry with "
                         f"model_args and quantize); write it with python quantize.py, or for Hugging Face "
                         f"weights pass the directory that holds config.json") from None
    if method not in METHODS:
        raise ValueError(f"{path} is quantized as {method!r}, which this nanophi does not read "
                         f"({', '.join(METHODS)})")
    return from_state_dict(config_from_model_args(model_args, path), state, dtype, device, source=path,
                           quantize=method)


# -----------------------------------------------------------------------------
# train.py's checkpoints: out_dir/ckpt.pt, the newest, and ckpt-STEP.pt, the keep_last before it
#
# Each is a file of its own, written once: a copy or truncation of one never changes another. A save
# writes the new ckpt.pt to a temporary file; just before renaming it into place, the ckpt.pt it
# replaces gets its own step's name (a hard link, so ckpt.pt is never missing; once renamed, no file
# has two names).

def write_checkpoint(out_dir: str, ckpt: dict, keep_last: int) -> None:
    """Write ckpt (a dict with "step") as out_dir/ckpt.pt, keep the one it replaces as ckpt-STEP.pt,
    and delete the numbered checkpoints older than the newest keep_last. A full disk is one line
    that says where, and how much was free."""
    latest = os.path.join(out_dir, "ckpt.pt")
    previous, step = checkpoint_step(latest), ckpt["step"]

    def keep_previous():
        if previous is None or previous == step:  # (an unreadable ckpt.pt, or a run resumed at its end)
            return
        kept = os.path.join(out_dir, f"ckpt-{previous:07d}.pt")
        link = os.path.join(out_dir, f".ckpt-{previous:07d}.pt.link.tmp")
        if os.path.lexists(link):
            os.unlink(link)
        try:
            os.link(latest, link)
        except OSError:  # a file system without hard links: ckpt.pt is missing until the rename
            os.replace(latest, kept)
        else:
            os.replace(link, kept)

    free = shutil.disk_usage(out_dir).free
    try:
        atomic_write(latest, lambda tmp: torch.save(ckpt, tmp), before_replace=keep_previous)
    except (OSError, RuntimeError) as e:
        # torch.save reports a full disk as a RuntimeError of its zip writer, without an errno. (Now
        # the free space can be less than before: the exception holds the unlinked temporary file open.)
        need = tensor_bytes(ckpt)
        if (getattr(e, "errno", None) not in (errno.ENOSPC, errno.EDQUOT)
                and min(free, shutil.disk_usage(out_dir).free) >= need):
            raise
        intact = f"{latest} (step {previous}) is intact" if previous is not None else "no checkpoint was saved"
        raise OSError(f"the disk is full: the step-{step} checkpoint (about {need / 1e6:.1f} MB) does not fit in "
                      f"{os.path.abspath(out_dir)}, which has {free / 1e6:.1f} MB free; {intact}. Free "
                      f"some space there (or lower --keep_last) and continue with --init_from=resume") from None
    for old in numbered_checkpoints(out_dir)[:-keep_last]:
        os.unlink(os.path.join(out_dir, old))


def tidy_checkpoints(out_dir: str) -> None:
    """What a crash in the middle of a save leaves: temporary files, and the old ckpt.pt with its
    numbered name too (a crash between the link and the rename; or an out_dir from before, where
    ckpt.pt was a link to the newest numbered checkpoint)."""
    latest = os.path.join(out_dir, "ckpt.pt")
    for name in os.listdir(out_dir):
        path = os.path.join(out_dir, name)
        if name.startswith((".ckpt", "ckpt.pt.link")) and name.endswith(".tmp"):
            os.unlink(path)
        elif re.fullmatch(r"ckpt-\d{7}\.pt", name) and os.path.isfile(latest) and os.path.samefile(path, latest):
            os.unlink(path)


def read_checkpoint(path: str) -> dict:
    """A train.py checkpoint, to resume from. A corrupt one names the newest one that loads."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path} to resume; train from scratch first, or "
                                f"point --out_dir at the run to continue")
    try:
        # mmap: the processes of a node share one copy of the file in the page cache
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # truncated, not a torch file, or pickled objects
        out_dir = os.path.dirname(path) or "."
        found = newest_checkpoint(out_dir)
        advice = (f"the newest checkpoint that loads is {found[0]} (step {found[1]}): "
                  f"{copy_command(found[0], path)}, then resume again" if found is not None else
                  f"no checkpoint in {out_dir} loads: start again with --overwrite=true")
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); {advice}") from None
    missing = {"model", "model_args", "optimizer", "step", "samples_seen", "config"} - set(ckpt)
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)}: it is not a train.py checkpoint")
    return ckpt


def tensor_bytes(obj) -> int:
    """The bytes of the tensors in nested dicts and lists: about the size of their torch.save file."""
    if isinstance(obj, torch.Tensor):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def numbered_checkpoints(out_dir: str) -> list[str]:
    """The names of the numbered checkpoints ckpt-STEP.pt in out_dir, oldest first."""
    return sorted(f for f in os.listdir(out_dir) if re.fullmatch(r"ckpt-\d{7}\.pt", f))


def checkpoint_step(path: str) -> Optional[int]:
    """The step of the checkpoint at path, or None if it is missing or does not load. Cheap: with
    mmap, torch.load reads the index and the pickle, not the tensors."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"])
    except Exception:
        return None


def newest_checkpoint(out_dir: str, before: Optional[int] = None) -> Optional[tuple[str, int]]:
    """(path, step) of the newest checkpoint in out_dir that loads (of a step below `before` if
    given), or None: ckpt.pt, then the numbered ones from the newest."""
    for name in ["ckpt.pt", *reversed(numbered_checkpoints(out_dir))]:
        path = os.path.join(out_dir, name)
        step = checkpoint_step(path)
        if step is not None and (before is None or step < before):
            return path, step
    return None


def copy_command(path: str, latest: str) -> str:
    return f"cp {shlex.quote(path)} {shlex.quote(latest)}"
