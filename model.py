"""
The phi decoder (phi-1, phi-1.5, phi-2) in one file, computing exactly what Hugging Face's
PhiForCausalLM computes.

    x = embed_tokens(idx)
    for each layer:  n = input_layernorm(x);  x = x + attention(n) + mlp(n)     (a *parallel* block)
    logits = lm_head(final_layernorm(x))

What makes phi different from GPT-2: the attention and the MLP read the same LayerNorm output and
are added to the residual together; rotary position embeddings rotate only the first rotary_dim
dims of each head; every Linear has a bias, including the untied lm_head.

Module and parameter names are the official ones (model.layers.0.self_attn.q_proj.weight, ...), so
loading the Hugging Face weights is a 1:1 name map. Decoding uses a preallocated static KV cache
(as gpt-fast does): one prefill, then one token per step.

References: transformers/models/phi/modeling_phi.py, Microsoft's modeling_mixformer_sequential.py.
"""

import functools
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, fields
from typing import Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


# -----------------------------------------------------------------------------
# Config

# The longest context a config may ask for. The rotary tables (block_size x rotary_dim, cos and sin,
# float32) are made when the model is built, before any weight is read: 2**20 positions make them
# 256 MiB for phi's rotary_dim of 32 (max_position_embeddings: 10**12 asked for 4 TB).
MAX_BLOCK_SIZE = 2 ** 20


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


@dataclass
class PhiConfig:
    vocab_size: int = 51200       # 50295 real tokens, padded to a multiple of 64 (rows past 50294 are unused)
    n_layer: int = 24
    n_head: int = 32
    n_embd: int = 2048
    n_inner: int = 8192           # MLP hidden width
    rotary_dim: int = 32          # how many dims of each head rotate (phi-1.5: 32 of 64)
    rope_theta: float = 10000.0
    block_size: int = 2048        # context length (max_position_embeddings)
    layer_norm_eps: float = 1e-5
    embd_pdrop: float = 0.0
    resid_pdrop: float = 0.0
    attn_pdrop: float = 0.0
    initializer_range: float = 0.02
    # attention and LayerNorm: "triton" = kernels.py's Triton kernels (on the CPU only under
    # TRITON_INTERPRET=1), "torch" = PyTorch's SDPA and F.layer_norm, "auto" = triton on CUDA
    # tensors when triton imports, torch otherwise. Not part of the Hugging Face config.json.
    kernels: str = "auto"

    def __post_init__(self):
        # a checkpoint's model_args arrive here unchecked: True would pass for the integer 1, and a
        # string layer_norm_eps would fail only in the forward
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type is int and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"PhiConfig.{f.name} must be an integer, got {value!r}")
            if f.type is float and not is_finite_number(value):
                raise ValueError(f"PhiConfig.{f.name} must be a finite number, got {value!r}")
        for f in ("vocab_size", "n_layer", "n_head", "n_embd", "n_inner", "block_size"):
            if getattr(self, f) <= 0:
                raise ValueError(f"PhiConfig.{f} must be a positive integer, got {getattr(self, f)!r}")
        if self.block_size > MAX_BLOCK_SIZE:
            raise ValueError(f"PhiConfig.block_size must be at most {MAX_BLOCK_SIZE}, got {self.block_size}")
        if self.n_embd % self.n_head:
            raise ValueError(f"PhiConfig: n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if not (0 <= self.rotary_dim <= self.head_dim and self.rotary_dim % 2 == 0):
            raise ValueError(f"PhiConfig: rotary_dim {self.rotary_dim} must be even and at most "
                             f"head_dim {self.head_dim}")
        if self.kernels not in ("auto", "triton", "torch"):
            raise ValueError(f"PhiConfig: kernels must be 'auto', 'triton' or 'torch', got {self.kernels!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_name(cls, name: str) -> "PhiConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**PRESETS[name])

    # Hugging Face config.json <-> PhiConfig. Three dialects exist: "phi" (transformers'
    # PhiForCausalLM, the current official repos), and Microsoft's earlier "mixformer-sequential"
    # (phi-1, phi-1.5 at release) and "phi-msft" (phi-2 at release), which use GPT-2-style names.
    @classmethod
    def from_hf(cls, hf: dict, source: str = "config.json") -> "PhiConfig":
        """source: the file hf was read from, named in the error messages."""
        if not isinstance(hf, dict):
            raise ValueError(f"{source} must hold a JSON object, not a {type(hf).__name__}")
        get = functools.partial(config_field, hf, source)

        def build(**kwargs) -> "PhiConfig":
            try:
                return cls(**kwargs)
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

    def to_hf(self) -> dict:
        """config.json in the layout of the official microsoft/phi-1_5 repository."""
        return {
            "architectures": ["PhiForCausalLM"], "model_type": "phi",
            "vocab_size": self.vocab_size, "hidden_size": self.n_embd, "intermediate_size": self.n_inner,
            "num_hidden_layers": self.n_layer, "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_head, "max_position_embeddings": self.block_size,
            "partial_rotary_factor": self.rotary_dim / self.head_dim, "rope_theta": self.rope_theta,
            "rope_scaling": None, "layer_norm_eps": self.layer_norm_eps, "hidden_act": "gelu_new",
            "resid_pdrop": self.resid_pdrop, "embd_pdrop": self.embd_pdrop,
            "attention_dropout": self.attn_pdrop, "initializer_range": self.initializer_range,
            "qk_layernorm": False, "tie_word_embeddings": False, "use_cache": True,
            # <|endoftext|> is bos and eos, when the vocabulary has it
            "bos_token_id": 50256 if self.vocab_size > 50256 else None,
            "eos_token_id": 50256 if self.vocab_size > 50256 else None,
        }


PRESETS = {
    # the official shapes
    "phi-1": dict(n_layer=24, n_head=32, n_embd=2048, n_inner=8192, rotary_dim=32),
    "phi-1.5": dict(n_layer=24, n_head=32, n_embd=2048, n_inner=8192, rotary_dim=32),
    "phi-2": dict(n_layer=32, n_head=32, n_embd=2560, n_inner=10240, rotary_dim=32, resid_pdrop=0.1),
    # small shapes with phi's proportions (head_dim 64, rotary 32, MLP 4x), for CPU runs
    "phi-mini": dict(n_layer=6, n_head=8, n_embd=512, n_inner=2048, rotary_dim=32),  # benchmarks
    "phi-nano": dict(n_layer=4, n_head=4, n_embd=256, n_inner=1024, rotary_dim=32, block_size=256),  # CPU demo
    "phi-test": dict(n_layer=2, n_head=4, n_embd=64, n_inner=256, rotary_dim=8, vocab_size=512, block_size=64),
}


# -----------------------------------------------------------------------------
# The building blocks. LayerNorm, attend(), the rotary embedding and the MLP's GELU are where
# kernels.py's Triton kernels replace PyTorch on CUDA (see use_triton).

def use_triton(kernels: str, x: torch.Tensor) -> bool:
    """Whether PhiConfig.kernels picks kernels.py's Triton kernels for tensors like x. kernels.py
    (and triton) is imported only when it does, so model.py runs where triton is not installed."""
    if kernels == "torch":
        return False
    if kernels == "triton":
        if not _triton_imports():
            raise RuntimeError("PhiConfig.kernels='triton' but kernels.py does not import (is triton "
                               "installed?); pip install triton, or use kernels='torch'")
        return True
    return x.is_cuda and _triton_imports()


@functools.cache
def _triton_imports() -> bool:
    try:
        import kernels as _  # noqa: F401
        return True
    except ImportError:
        return False


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm with the official parameter names (weight, bias); the seam for a fused kernel."""

    def __init__(self, n_embd: int, eps: float, kernels: str = "torch"):
        super().__init__(n_embd, eps=eps)
        self.kernels = kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_triton(self.kernels, x):
            from kernels import layer_norm
            return layer_norm(x, self.weight, self.bias, self.eps)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class Linear(nn.Linear):
    """nn.Linear, with one exception for decoding on the CPU under torch.compile.

    Decoding one token multiplies a vector by every weight matrix: the time goes into reading the
    weights. On the CPU the BLAS sgemv that F.linear becomes streams them at a fraction of the
    memory bandwidth (measured: ~16 GB/s on 2 cores), while the same product written as multiply
    + sum is fused by inductor into one vectorized, multi-threaded reduction (~50 GB/s). Same math,
    another summation order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] == 1 and x.device.type == "cpu" and torch.compiler.is_compiling():
            return (x.unsqueeze(-2) * self.weight).sum(-1) + self.bias
        return F.linear(x, self.weight, self.bias)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
           dropout_p: float, kernels: str = "torch") -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim) + causal mask) v, for (B, H, T, D) tensors. With mask=None the
    mask is the plain causal one (training, or a forward without the cache); with the KV cache the
    boolean mask (T, S) says which cache slots each query may see.
    The Triton kernel (kernels.attention) takes the plain causal case without dropout. Decoding with
    the static KV cache stays on SDPA: the cache's valid length is a tensor (input_pos), not a shape."""
    if mask is None and dropout_p == 0.0 and use_triton(kernels, q):
        from kernels import attention
        return attention(q, k, v, causal=True)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


# -----------------------------------------------------------------------------
# Rotary position embedding (partial, rotate-half)

def rope_cache(config: PhiConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of shape (block_size, rotary_dim), in float32 as the reference computes
    them: inv_freq_i = theta^(-2i/rotary_dim), angle = position * inv_freq, cat(angles, angles)."""
    rd = config.rotary_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, rd, 2, dtype=torch.float32) / rd))
    pos = torch.arange(config.block_size, dtype=torch.float32)
    angles = torch.outer(pos, inv_freq)
    emb = torch.cat((angles, angles), dim=-1)
    return emb.cos().to(device), emb.sin().to(device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first rotary_dim dims of each head of x (B, H, T, D); the rest pass through.
    Inside the rotated slice, dim i pairs with dim i + rotary_dim/2 ("rotate half", as GPT-NeoX)."""
    rd = cos.shape[-1]
    x_rot, x_pass = x[..., :rd], x[..., rd:]
    x1, x2 = x_rot[..., : rd // 2], x_rot[..., rd // 2:]
    rotated = torch.cat((-x2, x1), dim=-1)
    return torch.cat((x_rot * cos + rotated * sin, x_pass), dim=-1)


# -----------------------------------------------------------------------------
# The loss: lm_head and cross-entropy, fused and chunked
#
#     loss = mean over the rows r with a target of  logsumexp_v(z_rv) - z_r,target_r,   z = x W^T + b
#     dloss/dz_rv = (softmax(z_r)_v - [v == target_r]) / n_rows
# phi's 51200-word vocabulary makes the logits the biggest tensor of training (B*T x 51200; 0.4 GB
# for 4 x 512 tokens in float32), and the plain loss makes four of them: the logits, log_softmax,
# and two gradients. Here one workspace of chunk_rows rows is reused: a chunk's logits are computed
# into it, overwritten in place with their gradient, and turned into dx, dW and db by three matmuls
# right away, in the forward (the loss is a scalar: the backward only scales). The flops are the
# plain loss's; what goes is the memory, and on the CPU the time of touching it: filling a fresh
# 0.4 GB tensor took 101 ms on our 2-core VM (page faults), refilling a reused one 11 ms.

WORKSPACE_BYTES = 256 << 20  # the logits of one chunk: 1310 rows of 51200 in float32


def rows_per_chunk(vocab_size: int, dtype: torch.dtype) -> int:
    """How many rows of logits fit in WORKSPACE_BYTES."""
    return max(1, WORKSPACE_BYTES // (vocab_size * dtype.itemsize))


def cross_entropy_rows_(logits: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor,
                        ignore_index: int, grad: bool) -> None:
    """For each row r of logits (R, V): losses[r] = logsumexp(z_r) - z_r,targets[r] (0 where the
    target is ignore_index), and with grad, logits[r] overwritten by softmax(z_r) - onehot(targets[r])
    (zeros for an ignored row). In float32 (float64 for float64 logits), as the reference's
    logits.float(). The PyTorch version of kernels.cross_entropy_rows_."""
    z = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    valid = targets != ignore_index
    t = torch.where(valid, targets, 0)[:, None]
    z_target = z.gather(1, t)[:, 0]
    m = z.amax(1, keepdim=True)
    z.sub_(m).exp_()  # exp(z - max): at most 1, so the sum cannot overflow
    s = z.sum(1)
    losses.copy_(torch.where(valid, m[:, 0] + s.log() - z_target, 0.0))
    if grad:
        z.mul_((valid / s)[:, None])
        z.scatter_add_(1, t, -valid.to(z.dtype)[:, None])
        if z is not logits:
            logits.copy_(z)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, targets, workspace, ignore_index, needs, kernels):
        # x (M, C), weight (V, C), bias (V,): one dtype (the autocast one, cast by the caller);
        # workspace (chunk_rows, V) of that dtype; needs: which of dx, dW, db to compute
        M, V = x.shape[0], weight.shape[0]
        rows_ = cross_entropy_rows_
        if use_triton(kernels, x):
            from kernels import cross_entropy_rows_ as rows_
        # dW and db add up M rows: in float32 for lower precisions (float64 stays float64)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        n = (targets != ignore_index).sum()  # rows counted, on the device
        losses = torch.empty(M, dtype=acc, device=x.device)
        dx = torch.empty_like(x) if needs[0] else None
        dw = torch.empty(weight.shape, dtype=acc, device=x.device) if needs[1] else None  # set by chunk 0
        db = torch.zeros(V, dtype=acc, device=x.device) if needs[2] else None
        grad = any(needs)
        for start in range(0, M, workspace.shape[0]):
            rows = slice(start, min(start + workspace.shape[0], M))
            z = workspace[: rows.stop - start]
            torch.addmm(bias, x[rows], weight.t(), out=z)
            rows_(z, targets[rows], losses[rows], ignore_index, grad)
            if dx is not None:  # z now holds softmax - onehot
                torch.mm(z, weight, out=dx[rows])
            if dw is not None and z.dtype == acc:
                torch.addmm(dw, z.t(), x[rows], beta=0 if start == 0 else 1, out=dw)
            elif dw is not None:
                dw.copy_(z.t() @ x[rows]) if start == 0 else dw.add_(z.t() @ x[rows])
            if db is not None:
                db += z.sum(0, dtype=acc)
        inv_n = 1.0 / n.to(acc)  # a 0-dim tensor: no host synchronisation
        ctx.grads = [g.mul_(inv_n) if g is not None else None for g in (dx, dw, db)]
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype)
        return losses.sum() * inv_n

    @staticmethod
    def backward(ctx, dloss):
        if ctx.grads is None:
            raise RuntimeError("linear_cross_entropy: backward through the same loss twice; its gradients "
                               "are made in the forward and used up by the first backward")
        grads, ctx.grads = ctx.grads, None
        # scaled in place: these tensors belong to this loss alone
        grads = [g.mul_(dloss).to(dt) if g is not None else None for g, dt in zip(grads, ctx.dtypes)]
        return (*grads, None, None, None, None, None)


def logits_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype lm_head(x) has: autocast's where autocast is on, x's otherwise."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


@torch.compiler.disable  # eager under torch.compile: three matmuls per chunk, nothing for a compiler to fuse
def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = -1, chunk_rows: Optional[int] = None, kernels: str = "auto",
                         workspace: Optional[torch.Tensor] = None) -> torch.Tensor:
    """F.cross_entropy(F.linear(x, weight, bias).float(), targets, ignore_index=ignore_index) (the
    mean over the rows whose target is not ignore_index), differentiable in x, weight and bias,
    without ever holding more than chunk_rows rows of logits. x (..., C), targets x's leading shape,
    weight (V, C), bias (V,). The logits are in the autocast dtype where autocast is on, x's
    otherwise, and their softmax in float32, as the reference. kernels: as PhiConfig.kernels, for the
    softmax step. workspace: a (rows, V) tensor of the logits' dtype to reuse, rows at a time (see
    Phi.loss); without one, a chunk of chunk_rows rows (default: rows_per_chunk) is allocated."""
    C = x.shape[-1]
    if weight.dim() != 2 or weight.shape[1] != C or bias.shape != (weight.shape[0],):
        raise ValueError(f"linear_cross_entropy: x (..., C) needs weight (V, C) and bias (V,); got x "
                         f"{tuple(x.shape)}, weight {tuple(weight.shape)}, bias {tuple(bias.shape)}")
    if targets.shape != x.shape[:-1] or targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"linear_cross_entropy: targets must be integers of shape {tuple(x.shape[:-1])}, "
                         f"got {targets.dtype} {tuple(targets.shape)}")
    if len({t.device for t in (x, weight, bias, targets)}) != 1:
        raise ValueError("linear_cross_entropy: x, weight, bias and targets must be on one device")
    V = weight.shape[0]
    bad = ((targets < 0) & (targets != ignore_index)) | (targets >= V)
    if bool(bad.any()):  # the kernels would read out of bounds
        raise ValueError(f"linear_cross_entropy: target {targets[bad][0].item()} is outside the vocabulary "
                         f"[0, {V}) and is not ignore_index ({ignore_index})")
    dtype = logits_dtype(x)
    if not torch.is_autocast_enabled(x.device.type) and not (x.dtype == weight.dtype == bias.dtype):
        raise ValueError(f"linear_cross_entropy: x, weight and bias must share one dtype (or run under autocast); "
                         f"got {x.dtype}, {weight.dtype}, {bias.dtype}")
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"linear_cross_entropy: logits must be float16, bfloat16, float32 or float64, not {dtype}")
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"linear_cross_entropy: chunk_rows must be positive, got {chunk_rows}")
    if workspace is None:
        rows = min(chunk_rows or rows_per_chunk(V, dtype), max(1, targets.numel()))
        workspace = torch.empty(rows, V, dtype=dtype, device=x.device)
    elif workspace.shape[1:] != (V,) or workspace.dtype != dtype or workspace.device != x.device:
        raise ValueError(f"linear_cross_entropy: workspace must be (rows, {V}) {dtype} on {x.device}, got "
                         f"{tuple(workspace.shape)} {workspace.dtype} on {workspace.device}")
    # the gradients are made in the forward, only those that will be asked for
    needs = tuple(torch.is_grad_enabled() and t.requires_grad for t in (x, weight, bias))
    with torch.autocast(x.device.type, enabled=False):
        return _LinearCrossEntropy.apply(x.reshape(-1, C).to(dtype).contiguous(), weight.to(dtype).contiguous(),
                                         bias.to(dtype).contiguous(), targets.reshape(-1), workspace,
                                         int(ignore_index), needs, kernels)


# -----------------------------------------------------------------------------
# The model, in the order data flows

class KVCache(nn.Module):
    """Preallocated keys and values of one layer, (B, H, max_seq_len, D), written in place."""

    def __init__(self, batch_size: int, max_seq_len: int, n_head: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch_size, n_head, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        self.k.index_copy_(2, input_pos, k)
        self.v.index_copy_(2, input_pos, v)
        return self.k, self.v


class PhiAttention(nn.Module):
    def __init__(self, config: PhiConfig):
        super().__init__()
        self.n_head, self.head_dim, self.attn_pdrop = config.n_head, config.head_dim, config.attn_pdrop
        self.kernels = config.kernels
        self.q_proj = Linear(config.n_embd, config.n_embd)
        self.k_proj = Linear(config.n_embd, config.n_embd)
        self.v_proj = Linear(config.n_embd, config.n_embd)
        self.dense = Linear(config.n_embd, config.n_embd)
        self.kv_cache: Optional[KVCache] = None

    def forward(self, x, cos, sin, input_pos=None, mask=None):
        B, T, C = x.shape
        # (B, T, C) -> (B, H, T, D)
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        if use_triton(self.kernels, q):
            from kernels import rope
            q, k = rope(q, cos, sin), rope(k, cos, sin)
        else:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if input_pos is not None:  # decoding: store this step's keys (rotated) and values, read all
            k, v = self.kv_cache.update(input_pos, k, v)
        y = attend(q, k, v, mask, self.attn_pdrop if self.training else 0.0, self.kernels)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.dense(y)


class PhiMLP(nn.Module):
    def __init__(self, config: PhiConfig):
        super().__init__()
        self.fc1 = Linear(config.n_embd, config.n_inner)
        self.fc2 = Linear(config.n_inner, config.n_embd)
        self.kernels = config.kernels

    def forward(self, x):
        # gelu_new = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the tanh approximation
        h = self.fc1(x)
        if use_triton(self.kernels, h):
            from kernels import gelu_tanh
            return self.fc2(gelu_tanh(h))
        return self.fc2(F.gelu(h, approximate="tanh"))


class PhiBlock(nn.Module):
    def __init__(self, config: PhiConfig):
        super().__init__()
        self.input_layernorm = LayerNorm(config.n_embd, eps=config.layer_norm_eps, kernels=config.kernels)
        self.self_attn = PhiAttention(config)
        self.mlp = PhiMLP(config)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x, cos, sin, input_pos=None, mask=None):
        n = self.input_layernorm(x)  # one LayerNorm feeds both branches
        attn = self.resid_dropout(self.self_attn(n, cos, sin, input_pos, mask))
        mlp = self.resid_dropout(self.mlp(n))
        return attn + mlp + x  # the reference's order of additions, so float32 results match closely


class Phi(nn.Module):
    def __init__(self, config: PhiConfig):
        super().__init__()
        self.config = config
        # nn.ModuleDict named "model" so that parameter names are exactly the official ones
        self.model = nn.ModuleDict(dict(
            embed_tokens=nn.Embedding(config.vocab_size, config.n_embd),
            embed_dropout=nn.Dropout(config.embd_pdrop),
            layers=nn.ModuleList(PhiBlock(config) for _ in range(config.n_layer)),
            final_layernorm=LayerNorm(config.n_embd, eps=config.layer_norm_eps, kernels=config.kernels),
        ))
        self.lm_head = Linear(config.n_embd, config.vocab_size)  # with bias, not tied
        cos, sin = rope_cache(config)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        # as the official model: N(0, 0.02) weights, zero biases; LayerNorm keeps weight 1, bias 0
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.compiler.disable
    def loss(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """linear_cross_entropy of lm_head(x) against targets (-1 ignored), with a workspace kept on
        the model and reused every step: up to 256 MiB of logits (a plain attribute, not a buffer, so
        it is never saved, moved or broadcast; it is remade when the device or dtype changes)."""
        V, dtype = self.config.vocab_size, logits_dtype(x)
        rows = min(rows_per_chunk(V, dtype), max(1, targets.numel()))
        ws = getattr(self, "_loss_workspace", None)
        if ws is None or ws.shape[0] < rows or ws.dtype != dtype or ws.device != x.device:
            ws = self._loss_workspace = torch.empty(rows, V, dtype=dtype, device=x.device)
        return linear_cross_entropy(x, self.lm_head.weight, self.lm_head.bias, targets, ignore_index=-1,
                                    kernels=self.config.kernels, workspace=ws[:rows])

    def forward(self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None,
                input_pos: Optional[torch.Tensor] = None, only_last: bool = False, return_logits: bool = True):
        """idx (B, T) token ids -> (logits, loss).

        targets (B, T): the next token of each position; loss is their mean cross-entropy, with
        target -1 ignored (nanoGPT's convention). input_pos (T,): positions of idx in the KV cache
        (set up with setup_cache); None means a plain causal forward from position 0.
        only_last: compute logits for the last position only (decoding; saves a (B, T, vocab) matmul).
        return_logits=False (with targets): return (None, loss), with the loss fused with lm_head and
        chunked (linear_cross_entropy), so the (B, T, vocab) logits never exist at once (training).
        """
        B, T = idx.shape
        if input_pos is None:
            if T > self.config.block_size:
                raise ValueError(f"sequence of {T} tokens is longer than the context ({self.config.block_size})")
            cos, sin, mask = self.rope_cos[:T], self.rope_sin[:T], None
        else:
            if self.model.layers[0].self_attn.kv_cache is None:
                raise RuntimeError("input_pos given but no KV cache: call model.setup_cache() first")
            cos, sin = self.rope_cos[input_pos], self.rope_sin[input_pos]
            # query at position p sees cache slots 0..p
            slots = torch.arange(self.model.layers[0].self_attn.kv_cache.k.shape[2], device=idx.device)
            mask = slots[None, :] <= input_pos[:, None]
        x = self.model.embed_dropout(self.model.embed_tokens(idx))
        # the reference computes cos/sin in float32 and casts them to the activations' dtype
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for block in self.model.layers:
            x = block(x, cos, sin, input_pos, mask)
        x = self.model.final_layernorm(x)
        if targets is not None and not return_logits:
            return None, self.loss(x, targets)
        if targets is not None:
            logits = self.lm_head(x)
            # in float32 at least, as the reference's logits.float(), but a float64 model keeps float64
            z = logits.to(torch.promote_types(logits.dtype, torch.float32))
            loss = F.cross_entropy(z.view(-1, z.size(-1)), targets.reshape(-1), ignore_index=-1)
            return (logits if return_logits else None), loss
        if only_last:
            x = x[:, [-1], :]
        return self.lm_head(x), None

    # -------------------------------------------------------------------------
    # Decoding

    def setup_cache(self, batch_size: int, max_seq_len: int) -> None:
        """Allocate the static KV cache for batch_size sequences of up to max_seq_len tokens."""
        if max_seq_len > self.config.block_size:
            raise ValueError(f"{max_seq_len} tokens do not fit in the context of {self.config.block_size}")
        p = self.lm_head.weight
        for block in self.model.layers:
            c = block.self_attn.kv_cache
            if c is None or c.k.shape[0] != batch_size or c.k.shape[2] != max_seq_len or c.k.dtype != p.dtype:
                block.self_attn.kv_cache = KVCache(batch_size, max_seq_len, self.config.n_head,
                                                   self.config.head_dim, p.dtype, p.device)

    def check_fits(self, n_prompt: int, max_new_tokens: int) -> None:
        """The error generate() gives when the prompt and max_new_tokens exceed the context, for a
        caller to check before it prints anything."""
        if n_prompt + max_new_tokens > self.config.block_size:
            raise ValueError(f"the prompt has {n_prompt} tokens and max_new_tokens is {max_new_tokens}: together "
                             f"they exceed the context of {self.config.block_size} tokens; shorten the "
                             f"prompt or lower max_new_tokens")

    @torch.inference_mode()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, top_p: Optional[float] = None,
                 stop_id: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 step=None) -> Iterator[torch.Tensor]:
        """Yield the next token of each row, (B,), max_new_tokens times or until every row has
        produced stop_id. One prefill of the prompt idx (B, T) fills the KV cache, then each step
        feeds one token. temperature 0 is greedy. step: the function that runs one decode step,
        default self.forward (sample.py passes a torch.compile'd one)."""
        B, T = idx.shape
        if T == 0:
            raise ValueError("empty prompt: start from the <|endoftext|> token instead")
        self.check_fits(T, max_new_tokens)
        if max_new_tokens <= 0:
            return
        step = self if step is None else step
        self.setup_cache(B, T + max_new_tokens)
        logits, _ = self(idx, input_pos=torch.arange(T, device=idx.device), only_last=True)
        done = torch.zeros(B, dtype=torch.bool, device=idx.device)
        pos = torch.tensor([T], device=idx.device)
        for i in range(max_new_tokens):
            token = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
            yield token
            if stop_id is not None:
                done |= token == stop_id
                if bool(done.all()):
                    return
            if i + 1 < max_new_tokens:
                logits, _ = step(token[:, None], input_pos=pos)
                pos += 1

    # -------------------------------------------------------------------------
    # Official weights: loading and saving

    @classmethod
    def from_pretrained(cls, path: str, dtype: Optional[torch.dtype] = None, device="cpu") -> "Phi":
        """Load phi weights in the Hugging Face layout: a local directory (config.json plus
        model.safetensors, sharded safetensors with model.safetensors.index.json, or
        pytorch_model.bin), or a hub name such as microsoft/phi-1_5 (see resolve_checkpoint).
        Both transformers' key names and Microsoft's original MixFormer names are accepted.
        dtype None keeps the checkpoint's dtype."""
        directory = resolve_checkpoint(path)
        config_path = os.path.join(directory, "config.json")
        try:
            with open(config_path, encoding="utf-8") as f:
                hf = json.load(f)
        except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, or nested too deep
            raise ValueError(f"{config_path} is not a valid phi config ({e!r})") from None
        config = PhiConfig.from_hf(hf, config_path)
        state = to_official_names(load_state_dict(directory, device=device), config.n_layer)
        return cls.from_state_dict(config, state, dtype, device, source=directory)

    @classmethod
    def from_state_dict(cls, config: PhiConfig, state: dict, dtype: Optional[torch.dtype] = None,
                        device="cpu", source: str = "checkpoint") -> "Phi":
        """Build the model around the tensors of state (official names) without copying them: the
        module is created on the meta device and takes the tensors with load_state_dict(assign=True),
        so a checkpoint is never held twice. dtype None keeps the tensors' dtype. source: the file
        or directory state came from, named in the error messages."""
        check_state_dict(config, state, source)  # before anything is built from the config
        with torch.device("meta"):
            model = cls(config)
        if dtype is not None:
            for k in state:  # one tensor at a time, so two full copies never coexist
                state[k] = state[k].to(device=device, dtype=dtype)
        else:
            dtypes = {t.dtype for t in state.values()}
            if len(dtypes) > 1:
                raise ValueError(f"checkpoint mixes dtypes {sorted(map(str, dtypes))}; pass a dtype to choose one")
        model.load_state_dict(state, assign=True)
        model.rope_cos, model.rope_sin = rope_cache(config)  # buffers are not in checkpoints
        return model.to(device)

    def save_pretrained(self, path: str, dtype: Optional[torch.dtype] = None) -> None:
        """Write config.json and model.safetensors in the official layout, each atomically."""
        from safetensors.torch import save_file
        os.makedirs(path, exist_ok=True)
        hf = self.config.to_hf()
        state = {k: v.detach() for k, v in self.state_dict().items()}
        if dtype is not None:
            state = {k: v.to(dtype) for k, v in state.items()}
        state = {k: v.contiguous().cpu() for k, v in state.items()}
        hf["torch_dtype"] = str(next(iter(state.values())).dtype).removeprefix("torch.")
        atomic_write(os.path.join(path, "model.safetensors"),
                     lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
        atomic_write(os.path.join(path, "config.json"),
                     lambda tmp: write_text(tmp, json.dumps(hf, indent=2) + "\n"))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                top_p: Optional[float] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Pick the next token from logits (B, V). temperature 0: argmax. Otherwise sample from
    softmax(logits / temperature) restricted to the top_k tokens and then to the smallest set whose
    probability reaches top_p (nucleus sampling)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens before it already reach top_p (the first one always stays)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


# -----------------------------------------------------------------------------
# Checkpoint files

def load_model(source: str, device="cpu", dtype: Optional[torch.dtype] = None) -> Phi:
    """The model named by an --init_from value:
      scratch:PRESET   fresh random weights of a preset, e.g. scratch:phi-nano;
      FILE.pt          a nanophi checkpoint from train.py: a dict with "model" (the state dict,
                       official names) and "model_args" (the PhiConfig fields), read with
                       torch.load(weights_only=True), so it cannot run code;
      anything else    Hugging Face weights: a local directory or a hub name (Phi.from_pretrained)."""
    if source.startswith("scratch:"):
        model = Phi(PhiConfig.from_name(source.removeprefix("scratch:")))
        return model.to(device=device, dtype=dtype)
    if source.endswith(".pt") or os.path.isfile(source):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"checkpoint {source} does not exist; train one with train.py or "
                                    f"pass --init_from=<Hugging Face phi directory>")
        try:
            ckpt = torch.load(source, map_location=device, weights_only=True, mmap=True)
        except Exception as e:  # truncated zip, not a torch file, or pickled objects
            raise ValueError(f"{source} is not a readable nanophi checkpoint ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
        if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
            raise ValueError(f"{source} is not a nanophi checkpoint (expected keys 'model' and 'model_args')")
        for key in ("model", "model_args"):
            if not isinstance(ckpt[key], dict):
                raise ValueError(f"{source}: '{key}' must be a dict, not a {type(ckpt[key]).__name__}")
        known = {f.name for f in fields(PhiConfig)}
        unknown = set(ckpt["model_args"]) - known
        if unknown:
            raise ValueError(f"{source}: unknown model_args {sorted(map(str, unknown))}")
        try:
            config = PhiConfig(**ckpt["model_args"])
        except ValueError as e:
            raise ValueError(f"{source}: model_args: {e}") from None
        return Phi.from_state_dict(config, dict(ckpt["model"]), dtype, device, source=source)
    return Phi.from_pretrained(source, dtype=dtype, device=device)



HUB_NAMES = {"microsoft/phi-1", "microsoft/phi-1_5", "microsoft/phi-2"}


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


def load_state_dict(directory: str, device="cpu") -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory, read once (safetensors memory-maps the file)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
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
                part = load_file(file)
            else:  # weights_only: tensors and plain containers, never arbitrary pickled objects
                part = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except (SafetensorError, RuntimeError, EOFError, ValueError) as e:
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


def check_state_dict(config: PhiConfig, state: dict, source: str = "checkpoint") -> None:
    """Name the first missing, unexpected or mis-shaped key, so a bad checkpoint fails clearly.
    It runs before the model is built: a config much larger than its weights (num_hidden_layers
    10**9, hidden_size 2**40) stops here, at the first key it lacks or the first shape that differs,
    instead of in an endless module construction or a huge allocation."""
    state.pop("model.rotary_emb.inv_freq", None)  # an old transformers buffer, recomputed here
    expected = {}
    for k, shape in parameter_shapes(config):  # stops at the first key the checkpoint lacks
        if k not in state:
            raise ValueError(f"{source} is missing key {k!r}")
        expected[k] = shape
    for k, t in state.items():
        if k not in expected:
            raise ValueError(f"{source} has unexpected key {k!r}")
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            what = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{source}: key {k!r} holds {what}, not a floating-point tensor")
        if tuple(t.shape) != expected[k]:
            raise ValueError(f"{source}: key {k!r} has shape {tuple(t.shape)}, the config expects {expected[k]}")


def write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def atomic_write(path: str, write, before_replace=None) -> None:
    """write(tmp_path) to a temporary file next to path, then rename it over path: a crash never
    leaves a half-written file where a good one was. before_replace(), if given, runs once the
    file is complete, just before the rename (train.py keeps the file it replaces there)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the mode open() would
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
