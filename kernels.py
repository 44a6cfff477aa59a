"""
The arithmetic of phi's layers, each with its backward, and the one place that picks who runs it.

    attention(q, k, v, mask, dropout_p, use)    softmax(q k^T / sqrt(D) + mask) v
    layer_norm(x, weight, bias, eps, use)       (x - mean) / sqrt(var + eps) * weight + bias
    rope(x, cos, sin, use)                      partial rotary embedding, rotate-half
    gelu_tanh(x, use)                           0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    linear_cross_entropy(x, W, b, targets, use) mean cross-entropy of x W^T + b, fused and chunked

model.py calls these five and does not know what runs them. `use` is PhiConfig.kernels, and
use_triton reads it: "torch" runs PyTorch (SDPA, F.layer_norm, ...); "triton" runs the Triton
kernels below (FlashAttention-2, LayerNorm, rope, GELU and the cross-entropy row step, all
computing in float32 whatever the input dtype); "auto" runs Triton on CUDA tensors when triton
imports and the kernel has passed its first-use probe there, PyTorch otherwise.

The probe (trusted): the first time "auto" would run a kernel for a (device, dtype, head dim or
width, causal), it runs it on a small input, forward and backward, with each autotune config it may
be given, against PyTorch in float64; on an exception or a wrong value it warns once, in one line,
and PyTorch computes that kernel from then on. Under torch.compile it runs while Dynamo traces,
eagerly, and its verdict is a constant of the graph.

The pruning (ATTENTION_CONFIGS): each attention autotune config states the shared memory it needs,
measured by tests/compile_kernels.py for sm_80, 86, 89 and 90; a GPU is offered only the configs
whose need fits the shared memory it gives a program, so no launch fails for lack of it.

Without a GPU the Triton kernels run on CPU tensors through Triton's interpreter: set
TRITON_INTERPRET=1 before triton is first imported (tests/conftest.py does).
tests/compile_kernels.py compiles them for GPUs without one. Where triton is not installed (its
wheels are Linux-only) this file still imports, and PyTorch runs everything.

References for the algorithms (read to learn, not copied): Dao, "FlashAttention-2" (2023), the
Triton tutorials "Fused Attention" and "Layer Normalization".
"""

from __future__ import annotations  # Triton's `tl.constexpr` annotations stay strings without triton

import math
import os
import warnings
from typing import Optional

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # no Triton kernels here: PyTorch runs everything
    triton = tl = None

# True when this module's kernels were built for Triton's CPU interpreter (TRITON_INTERPRET=1 at import)
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def jit(fn):
    """triton.jit where triton is installed; elsewhere the kernel stays a Python function never launched."""
    return triton.jit(fn) if triton else fn


# -----------------------------------------------------------------------------
# Who runs what

# "auto" runs Triton on these device types. The tests add "cpu", where Triton's interpreter runs
# the kernels, to check the probe without a GPU.
AUTO_DEVICES = {"cuda"}
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # what the kernels take


def use_triton(use: str, kernel: str, x: torch.Tensor, dims: tuple = (), causal: bool = False) -> bool:
    """Whether `use` (PhiConfig.kernels) picks the Triton kernel named `kernel` for tensors like x.
    "auto": for float16, bfloat16 and float32 tensors on CUDA, if triton imports and the kernel
    passed its first-use probe (trusted) for x's device and dtype, the sizes dims that shape its
    code (head dim, hidden size, ...) and causal."""
    if use == "torch":
        return False
    if use == "triton":
        if triton is None:
            raise RuntimeError("PhiConfig.kernels='triton' but triton is not installed; pip install triton, "
                               "or use kernels='torch'")
        return True
    return (triton is not None and x.device.type in AUTO_DEVICES and x.dtype in TRITON_DTYPES
            and trusted(kernel, x.device, x.dtype, dims, causal))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None,
              dropout_p: float = 0.0, use: str = "auto") -> torch.Tensor:
    """softmax(q k^T / sqrt(head_dim) + mask) v for (B, H, T, D) tensors. mask None: the plain causal
    mask (training, or a forward without the cache); with the KV cache, a boolean (T, S) saying which
    cache slots each query may see. Triton takes the plain causal case without dropout; decoding
    stays on SDPA, as the cache's valid length is a tensor (input_pos), not a shape."""
    if mask is None and dropout_p == 0.0 and use_triton(use, "attention", q, (q.shape[-1],), causal=True):
        return triton_attention(q, k, v, causal=True)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, use: str = "auto"):
    if use_triton(use, "layer_norm", x, (weight.shape[0],)):
        return triton_layer_norm(x, weight, bias, eps)
    return F.layer_norm(x, weight.shape, weight, bias, eps)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, use: str = "auto") -> torch.Tensor:
    """Rotate the first rotary_dim dims of each head of x (B, H, T, D) with the tables cos, sin
    (T, rotary_dim); the rest pass through. Inside the rotated slice, dim i pairs with dim
    i + rotary_dim/2 ("rotate half", as GPT-NeoX)."""
    if use_triton(use, "rope", x, (x.shape[-1], cos.shape[-1])):
        return triton_rope(x, cos, sin)
    rd = cos.shape[-1]
    x_rot, x_pass = x[..., :rd], x[..., rd:]
    x1, x2 = x_rot[..., : rd // 2], x_rot[..., rd // 2:]
    return torch.cat((x_rot * cos + torch.cat((-x2, x1), dim=-1) * sin, x_pass), dim=-1)


def gelu_tanh(x: torch.Tensor, use: str = "auto") -> torch.Tensor:
    """phi's gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), the tanh approximation."""
    if use_triton(use, "gelu_tanh", x):
        return triton_gelu_tanh(x)
    return F.gelu(x, approximate="tanh")


# -----------------------------------------------------------------------------
# The loss: lm_head and cross-entropy, fused and chunked
#
#     loss = mean over the rows r with a target of  logsumexp_v(z_rv) - z_r,target_r,   z = x W^T + b
#     dloss/dz_rv = (softmax(z_r)_v - [v == target_r]) / n_rows
# phi's 51200-word vocabulary makes the logits the biggest tensor of training (B*T x 51200; 0.4 GB
# for 4 x 512 tokens in float32), and the plain loss makes four of them: the logits, log_softmax,
# and two gradients. Here one workspace of chunk rows is reused: a chunk's logits are computed
# into it, overwritten in place with their gradient, and turned into dx, dW and db by three matmuls
# right away, in the forward (the loss is a scalar: the backward only scales). The flops are the
# plain loss's; what goes is the memory, and on the CPU the time of touching fresh memory (page
# faults). The workspace is kept per device and dtype and reused by every call (so not for calls
# from several threads at once).

WORKSPACE_BYTES = 256 << 20  # the logits of one chunk: 1310 rows of 51200 in float32
_workspaces: dict = {}       # (device, dtype) -> the reused workspace


def rows_per_chunk(vocab_size: int, dtype: torch.dtype) -> int:
    """How many rows of logits fit in WORKSPACE_BYTES."""
    return max(1, WORKSPACE_BYTES // (vocab_size * dtype.itemsize))


def workspace(rows: int, vocab_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A (rows, vocab_size) tensor to compute logits into, reused from call to call."""
    ws = _workspaces.get((device, dtype))
    if ws is None or ws.shape[0] < rows or ws.shape[1] != vocab_size:
        ws = _workspaces[(device, dtype)] = torch.empty(rows, vocab_size, dtype=dtype, device=device)
    return ws[:rows]


def cross_entropy_rows_(logits: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor,
                        ignore_index: int, grad: bool) -> None:
    """For each row r of logits (R, V): losses[r] = logsumexp(z_r) - z_r,targets[r] (0 where the
    target is ignore_index), and with grad, logits[r] overwritten by softmax(z_r) - onehot(targets[r])
    (zeros for an ignored row). In float32 (float64 for float64 logits), as the reference's
    logits.float(). The PyTorch version of triton_cross_entropy_rows_."""
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
    def forward(ctx, x, weight, bias, targets, ws, ignore_index, needs, use):
        # x (M, C), weight (V, C), bias (V,): one dtype (the autocast one, cast by the caller);
        # ws (chunk rows, V) of that dtype; needs: which of dx, dW, db to compute
        M, V = x.shape[0], weight.shape[0]
        rows_ = triton_cross_entropy_rows_ if use_triton(use, "cross_entropy", x, (V,)) else cross_entropy_rows_
        # dW and db add up M rows: in float32 for lower precisions (float64 stays float64)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        n = (targets != ignore_index).sum()  # rows counted, on the device
        losses = torch.empty(M, dtype=acc, device=x.device)
        dx = torch.empty_like(x) if needs[0] else None
        dw = torch.empty(weight.shape, dtype=acc, device=x.device) if needs[1] else None  # set by chunk 0
        db = torch.zeros(V, dtype=acc, device=x.device) if needs[2] else None
        for start in range(0, M, ws.shape[0]):
            rows = slice(start, min(start + ws.shape[0], M))
            z = ws[: rows.stop - start]
            torch.addmm(bias, x[rows], weight.t(), out=z)
            rows_(z, targets[rows], losses[rows], ignore_index, any(needs))
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


@torch.compiler.disable  # eager under torch.compile: three matmuls per chunk, nothing for a compiler to fuse
def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = -1, chunk_rows: Optional[int] = None, use: str = "auto") -> torch.Tensor:
    """F.cross_entropy(F.linear(x, weight, bias).float(), targets, ignore_index=ignore_index) (the
    mean over the rows whose target is not ignore_index), differentiable in x, weight and bias,
    without ever holding more than chunk_rows rows of logits (default: WORKSPACE_BYTES of them).
    x (..., C), targets x's leading shape, weight (V, C), bias (V,). The logits are in the autocast
    dtype where autocast is on, x's otherwise, and their softmax in float32 (float64 stays float64),
    as the reference. use: as PhiConfig.kernels, for the softmax step."""
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
    bad = ((targets < 0) & (targets != ignore_index)) | (targets >= V)  # the kernels would read out of bounds
    if x.is_cuda:  # checked on the GPU: a check on the host would wait for it every step
        torch._assert_async(~bad.any(), "linear_cross_entropy: a target is outside the vocabulary")
    elif bool(bad.any()):
        raise ValueError(f"linear_cross_entropy: target {targets[bad][0].item()} is outside the vocabulary "
                         f"[0, {V}) and is not ignore_index ({ignore_index})")
    autocast = torch.is_autocast_enabled(x.device.type)
    dtype = torch.get_autocast_dtype(x.device.type) if autocast else x.dtype  # the dtype of lm_head(x)
    if not autocast and not (x.dtype == weight.dtype == bias.dtype):
        raise ValueError(f"linear_cross_entropy: x, weight and bias must share one dtype (or run under autocast); "
                         f"got {x.dtype}, {weight.dtype}, {bias.dtype}")
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"linear_cross_entropy: logits must be float16, bfloat16, float32 or float64, not {dtype}")
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"linear_cross_entropy: chunk_rows must be positive, got {chunk_rows}")
    rows = min(chunk_rows or rows_per_chunk(V, dtype), max(1, targets.numel()))
    # the gradients are made in the forward, only those that will be asked for
    needs = tuple(torch.is_grad_enabled() and t.requires_grad for t in (x, weight, bias))
    with torch.autocast(x.device.type, enabled=False):
        return _LinearCrossEntropy.apply(x.reshape(-1, C).to(dtype).contiguous(), weight.to(dtype).contiguous(),
                                         bias.to(dtype).contiguous(), targets.reshape(-1),
                                         workspace(rows, V, dtype, x.device), int(ignore_index), needs, use)


# =============================================================================
# The first-use probe
#
# A kernel that compiles on one card can fail on another (its resources, a compiler or driver
# bug), and a wrong kernel in training shows only as a worse loss. So "auto" trusts a Triton kernel
# on a device only once it has checked it there: the first time it is asked for with a given
# (device, dtype, dims, causal), it runs on a small input, forward and backward, once per autotune
# config it may be given (none is benchmarked), and is compared with the PyTorch path in float64.
# An exception, a value that is not finite or a relative error beyond PROBE_TOL makes it warn once,
# in one line naming the kernel, the card and what went wrong, and PyTorch computes that kernel in
# this process from then on. The probe's arithmetic takes milliseconds. The compilation it starts
# is, in eager mode, the one the first real call would start (its sizes are multiples of 16, as
# phi's are, so Triton's specialisation on divisibility by 16 gives the same binaries); under
# torch.compile, Inductor compiles its own copy of the kernels besides.

# relative error allowed against float64: a few times what the tests hold the kernels to (1e-4,
# 2e-3, 2e-2), far below the O(1) error of a broken kernel
PROBE_TOL = {torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 5e-2}
_verdicts: dict = {}  # (kernel, device, dtype, dims, causal) -> whether Triton computes it


@torch.compiler.assume_constant_result
def trusted(kernel: str, device: torch.device, dtype: torch.dtype, dims: tuple, causal: bool) -> bool:
    """Whether the Triton kernel passed its probe on device for (dtype, dims, causal); the first
    call for a key runs the probe, the others return its verdict.

    Why this is safe under torch.compile: Dynamo does not trace a function marked
    assume_constant_result. It calls it, with the constant arguments it sees while tracing, and
    writes its answer into the graph as a constant. So the probe runs eagerly, on real tensors,
    before the graph that depends on it exists, never inside a compiled region or a CUDA graph; a
    recompilation calls it again and gets the stored verdict. (Were an argument symbolic, Dynamo
    would break the graph here and call it eagerly: slower, still right. model.py's dims come from
    module attributes and parameter shapes, which stay static.)"""
    key = (kernel, device, dtype, tuple(dims), bool(causal))
    if key not in _verdicts:
        _verdicts[key] = _probe(*key)
    return _verdicts[key]


def _probe_case(kernel: str, randn, dims: tuple, causal: bool):
    """A small problem for kernel: (the Triton function, the PyTorch function, inputs, how many of
    the first inputs to differentiate, names of the output and gradients). Each function returns a
    tuple of tensors; the first is differentiated."""
    small = INTERPRET  # the interpreter runs Python: a few blocks are enough
    if kernel == "attention":
        (D,) = dims
        H, T = (1, 48) if small else (16, 384)
        q, k, v = (randn(1, T, H, D).transpose(1, 2) for _ in range(3))  # the model's (B, T, H, D) layout
        return (lambda q, k, v: (triton_attention(q, k, v, causal=causal),),
                lambda q, k, v: (F.scaled_dot_product_attention(q, k, v, is_causal=causal),),
                (q, k, v), 3, ("out", "dq", "dk", "dv"))
    if kernel == "layer_norm":
        (N,) = dims
        x, w, b = randn(64, N, scale=3.0), 1 + randn(N, scale=0.5), randn(N, scale=0.5)
        return (lambda x, w, b: (triton_layer_norm(x, w, b, 1e-5),), lambda x, w, b: (layer_norm(x, w, b, 1e-5, "torch"),),
                (x, w, b), 3, ("y", "dx", "dweight", "dbias"))
    if kernel == "rope":
        D, rd = dims
        H, T = (1, 16) if small else (16, 384)
        angles = torch.arange(T, dtype=torch.float32)[:, None] * 10000.0 ** (-torch.arange(0, rd, 2) / max(rd, 1))
        angles = torch.cat((angles, angles), -1).to(randn(1).device)
        x = randn(1, T, H, D).transpose(1, 2)
        return (lambda x, cos, sin: (triton_rope(x, cos, sin),), lambda x, cos, sin: (rope(x, cos, sin, "torch"),),
                (x, angles.cos().to(x.dtype), angles.sin().to(x.dtype)), 1, ("y", "dx"))
    if kernel == "gelu_tanh":
        return (lambda x: (triton_gelu_tanh(x),), lambda x: (gelu_tanh(x, "torch"),), (randn(64, 256, scale=3.0),), 1,
                ("y", "dx"))
    if kernel == "cross_entropy":
        (V,) = dims
        z = randn(16, V, scale=2.0)
        targets = torch.randint(0, V, (16,), generator=torch.Generator().manual_seed(0)).to(z.device)
        targets[3] = -1  # an ignored row

        def fn(rows_):
            def step(z):
                z = z.clone()  # overwritten by its gradient
                losses = torch.empty(16, dtype=torch.float64 if z.dtype == torch.float64 else torch.float32,
                                     device=z.device)
                rows_(z, targets, losses, -1, True)
                return losses, z
            return step
        return fn(triton_cross_entropy_rows_), fn(cross_entropy_rows_), (z,), 0, ("loss", "dlogits")
    raise ValueError(f"kernels.py: no probe for a kernel named {kernel!r}")


def _run(fn, inputs, n_diff: int, dy):
    """fn's outputs, then the gradient of sum(out * dy) for the first n_diff inputs."""
    inputs = [t.detach().requires_grad_(i < n_diff) for i, t in enumerate(inputs)]
    out = fn(*inputs)
    grads = torch.autograd.grad(out[0], inputs[:n_diff], dy(out[0])) if n_diff else ()
    return [t.detach() for t in (*out, *grads)]


def _probe(kernel: str, device: torch.device, dtype: torch.dtype, dims: tuple, causal: bool) -> bool:
    gen = torch.Generator().manual_seed(0)  # its own: the caller's random streams are left alone

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen)).to(device=device, dtype=dtype)

    dys = {}  # one incoming gradient per output shape, the same for both paths

    def dy(out):
        if out.shape not in dys:
            dys[out.shape] = randn(*out.shape)
        return dys[out.shape].to(out.dtype)

    tuners = _attention_kernels(dtype) if kernel == "attention" and triton else ()
    saved = [t.configs for t in tuners]
    what, current = None, ""
    try:
        # gradients even when called under torch.no_grad or inference_mode (generate); no autocast,
        # so that the float64 reference stays float64
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
            fn, ref, inputs, n_diff, names = _probe_case(kernel, randn, dims, causal)
            expected = _run(ref, [t.double() for t in inputs], n_diff, dy)
            # every config the autotuner may run here, one at a time: each autotuner offers only its
            # i-th (cycling), so that none is benchmarked (the autotuner runs a lone config as it is)
            offered = [_offered(t, device) for t in tuners]
            for i in range(max(map(len, offered), default=1)):
                for t, configs in zip(tuners, offered):
                    t.configs = [configs[i % len(configs)]]
                if tuners:  # (BLOCK_M, BLOCK_N, warps, stages), for the warning
                    current = f", with configs {', '.join(str(config_key(t.configs[0])) for t in tuners)}"
                for name, got, want in zip(names, _run(fn, inputs, n_diff, dy), expected):
                    err = (got.double() - want).abs().max().item() / (want.abs().max().item() or 1.0)
                    if not err <= PROBE_TOL[dtype]:  # NaN too
                        what = f"{name} differs from PyTorch's by {err:.1e} (tolerance {PROBE_TOL[dtype]:.0e}){current}"
                        break
                if what:
                    break
    except Exception as e:  # whatever it is, PyTorch takes over; the warning says what it was
        what = " ".join(f"{type(e).__name__}: {e}".split())[:300] + current
    finally:
        for t, configs in zip(tuners, saved):
            t.configs = configs
    if what is None:
        return True
    shape = ", ".join([str(dtype).removeprefix("torch."), *(f"{n} {d}" for n, d in zip(_DIM_NAMES[kernel], dims))]
                      + (["causal" if causal else "not causal"] if kernel == "attention" else []))
    warnings.warn(f"kernels.py: the Triton {kernel} kernel ({shape}) failed its first-use check on "
                  f"{describe(device)}: {what}. PyTorch computes {kernel} in this process from now on.",
                  RuntimeWarning, stacklevel=2)
    return False


_DIM_NAMES = {"attention": ("head dim",), "layer_norm": ("hidden size",), "rope": ("head dim", "rotary dim"),
              "gelu_tanh": (), "cross_entropy": ("vocabulary",)}


def describe(device: torch.device) -> str:
    """The card, in words: name and architecture."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"
    return f"{device} (Triton's interpreter)" if INTERPRET else str(device)


# =============================================================================
# The Triton kernels
#
# Each opens with the math it computes. All but triton_cross_entropy_rows_ (an in-place step inside
# linear_cross_entropy, which is differentiable) are differentiable (torch.autograd.Function).

def _check_device(*tensors: torch.Tensor) -> None:
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"kernels.py: tensors are on different devices {sorted(map(str, devices))}")
    device = tensors[0].device
    if device.type != "cuda" and not (INTERPRET and device.type == "cpu"):
        raise ValueError(f"kernels.py: Triton kernels need CUDA tensors, got {device}; on the CPU set "
                         f"TRITON_INTERPRET=1 before importing kernels (slow, for tests), or use "
                         f"kernels='torch'")


def _dot_precision(dtype: torch.dtype) -> str:
    # float32 inputs: exact float32 products ("ieee"), not tf32, so float32 results hold to 1e-4 on a
    # GPU too. float16/bfloat16 ignore this and use the tensor cores.
    return "ieee" if dtype == torch.float32 else "tf32"


# =============================================================================
# Attention
#
# FlashAttention-2. S = Q K^T * scale is never stored: each program owns BLOCK_M query rows and walks
# over the keys BLOCK_N at a time, keeping a running row maximum m, a running row sum l of exp(S - m)
# and an unnormalised output acc; when a new block raises the maximum, l and acc are rescaled by
# exp(m_old - m_new) (the "online softmax"). Memory is O(T) instead of the O(T^2) of S and P.
# The forward also stores L = m + log(l) per row, the logsumexp, so the backward can recompute
# P = exp(S - L) block by block instead of saving it.
#
# Causal masking is aligned to the end: with Tq queries and Tk >= Tq keys, query i sees keys
# j <= i + (Tk - Tq) (for Tq == Tk the usual lower triangle; for Tq < Tk the last queries of a
# longer sequence whose first keys are already cached).
#
# Exponentials are taken in base 2 (exp2 is one instruction): S is scaled by scale * log2(e), and L
# is stored in those base-2 units.

LOG2E = 1.4426950408889634


@jit
def _load_tile(ptrs, rows, n_rows, offs_d, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """A (rows, BLOCK_D) tile; rows past n_rows and the padding dims past HEAD_DIM read as 0 (a
    head_dim of 80 is computed as 128 with zero padding, which changes no dot product)."""
    mask = rows[:, None] < n_rows
    if HEAD_DIM != BLOCK_D:
        mask = mask & (offs_d[None, :] < HEAD_DIM)
    return tl.load(ptrs, mask=mask, other=0.0)


@jit
def _store_tile(ptrs, value, rows, n_rows, offs_d, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    mask = rows[:, None] < n_rows
    if HEAD_DIM != BLOCK_D:
        mask = mask & (offs_d[None, :] < HEAD_DIM)
    tl.store(ptrs, value.to(ptrs.dtype.element_ty), mask=mask)


@jit
def _attn_fwd_blocks(acc, m_i, l_i, q, K_bh, V_bh, stride_kt, stride_vt, offs_m, offs_n, offs_d,
                     start, end, Tk, offset, qk_scale,
                     CAUSAL: tl.constexpr, MASKED: tl.constexpr, HEAD_DIM: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr):
    """The online softmax over key blocks [start, end). MASKED: the blocks on the causal diagonal or
    past the last key, where some scores must be -inf; the blocks before them need no mask."""
    for start_n in range(start, end, BLOCK_N):
        cols = start_n + offs_n
        k = _load_tile(K_bh + cols[:, None] * stride_kt + offs_d[None, :], cols, Tk, offs_d, HEAD_DIM, BLOCK_D)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
        if MASKED:
            visible = cols[None, :] < Tk
            if CAUSAL:
                visible = visible & (cols[None, :] <= offs_m[:, None] + offset)
            s = tl.where(visible, s, float("-inf"))
        # every row sees key 0 in the first block it visits, so m_new is finite from then on
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)  # rescales what was accumulated under the old maximum
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_tile(V_bh + cols[:, None] * stride_vt + offs_d[None, :], cols, Tk, offs_d, HEAD_DIM, BLOCK_D)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        m_i = m_new
    return acc, m_i, l_i


@jit
def _attn_fwd(Q, K, V, O, LSE,
              stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
              stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot,
              H, Tq, Tk, qk_scale,
              HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, DOT_PREC: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """O = softmax(Q K^T * scale + mask) V for BLOCK_M query rows of one (batch, head), and their
    logsumexp L. Grid: (cdiv(Tq, BLOCK_M), B * H)."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    offset = Tk - Tq
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q = _load_tile(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                   offs_m, Tq, offs_d, HEAD_DIM, BLOCK_D)
    # this (batch, head)'s keys and values; tile addresses are formed inside the loops, since a
    # (BLOCK_N, BLOCK_D) tensor of 64-bit pointers kept alive across them costs registers and spills
    K_bh = K + b * stride_kb + h * stride_kh
    V_bh = V + b * stride_vb + h * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if CAUSAL:
        # key blocks [0, full) are seen whole by every row of this block; [full, end) need the mask
        full = tl.minimum((start_m + offset + 1) // BLOCK_N, Tk // BLOCK_N) * BLOCK_N
        end = tl.minimum(start_m + BLOCK_M + offset, Tk)
    else:
        full = Tk // BLOCK_N * BLOCK_N
        end = Tk
    acc, m_i, l_i = _attn_fwd_blocks(acc, m_i, l_i, q, K_bh, V_bh, stride_kt, stride_vt, offs_m,
                                     offs_n, offs_d, 0, full, Tk, offset, qk_scale, CAUSAL, False,
                                     HEAD_DIM, BLOCK_D, BLOCK_N, DOT_PREC)
    acc, m_i, l_i = _attn_fwd_blocks(acc, m_i, l_i, q, K_bh, V_bh, stride_kt, stride_vt, offs_m,
                                     offs_n, offs_d, full, end, Tk, offset, qk_scale, CAUSAL, True,
                                     HEAD_DIM, BLOCK_D, BLOCK_N, DOT_PREC)

    acc = acc / l_i[:, None]
    _store_tile(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
                acc, offs_m, Tq, offs_d, HEAD_DIM, BLOCK_D)
    tl.store(LSE + bh.to(tl.int64) * Tq + offs_m, m_i + tl.log2(l_i), mask=offs_m < Tq)


# The backward. With P = exp(S - L) recomputed per block and dO the incoming gradient:
#   dV = P^T dO,   dP = dO V^T,   dS = P * (dP - delta),   dQ = dS K * scale,   dK = dS^T Q * scale
# where delta_i = sum_j P_ij dP_ij = rowsum(dO * O)_i (a preprocess computes it once per row).
# dK and dV of a key block need every query block: one program per key block loops over queries.
# dQ of a query block needs every key block: one program per query block loops over keys. Each
# program owns what it writes, so there are no atomics and the result is deterministic.

@jit
def _attn_bwd_delta(O, DO, DELTA, stride_ob, stride_oh, stride_ot, stride_dob, stride_doh, stride_dot,
                    H, Tq, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta = rowsum(dO * O) in float32, for BLOCK_M rows. Grid: (cdiv(Tq, BLOCK_M), B * H)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    bh = tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    o = _load_tile(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
                   offs_m, Tq, offs_d, HEAD_DIM, BLOCK_D)
    do = _load_tile(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
                    offs_m, Tq, offs_d, HEAD_DIM, BLOCK_D)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bh.to(tl.int64) * Tq + offs_m, delta, mask=offs_m < Tq)


@jit
def _attn_bwd_dkdv_blocks(dk, dv, k, v, Q_bh, DO_bh, LSE_bh, DELTA_bh, stride_qt, stride_dot,
                          offs_m, cols, offs_d, start, end, Tq, offset, qk_scale,
                          MASKED: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                          BLOCK_M: tl.constexpr, DOT_PREC: tl.constexpr):
    """Accumulate dK and dV of one key block over query blocks [start, end). MASKED: blocks on the
    causal diagonal. Query rows past Tq read as zero (q = dO = 0, L = delta = 0) and so add exactly
    0; key columns past Tk only produce dK, dV columns that are never stored."""
    for start_m in range(start, end, BLOCK_M):
        rows = start_m + offs_m
        q = _load_tile(Q_bh + rows[:, None] * stride_qt + offs_d[None, :], rows, Tq, offs_d, HEAD_DIM, BLOCK_D)
        do = _load_tile(DO_bh + rows[:, None] * stride_dot + offs_d[None, :], rows, Tq, offs_d, HEAD_DIM, BLOCK_D)
        lse = tl.load(LSE_bh + rows, mask=rows < Tq, other=0.0)
        delta = tl.load(DELTA_bh + rows, mask=rows < Tq, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale  # (BLOCK_M, BLOCK_N)
        p = tl.exp2(s - lse[:, None])
        if MASKED:
            p = tl.where(cols[None, :] <= rows[:, None] + offset, p, 0.0)
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PREC)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=DOT_PREC)
    return dk, dv


@jit
def _attn_bwd_dkdv(Q, K, V, DO, LSE, DELTA, DK, DV,
                   stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                   stride_vb, stride_vh, stride_vt, stride_dob, stride_doh, stride_dot,
                   stride_dkb, stride_dkh, stride_dkt, stride_dvb, stride_dvh, stride_dvt,
                   H, Tq, Tk, sm_scale, qk_scale,
                   HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, DOT_PREC: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """dK and dV for BLOCK_N keys of one (batch, head). Grid: (cdiv(Tk, BLOCK_N), B * H)."""
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    offset = Tk - Tq
    cols = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    k = _load_tile(K + b * stride_kb + h * stride_kh + cols[:, None] * stride_kt + offs_d[None, :],
                   cols, Tk, offs_d, HEAD_DIM, BLOCK_D)
    v = _load_tile(V + b * stride_vb + h * stride_vh + cols[:, None] * stride_vt + offs_d[None, :],
                   cols, Tk, offs_d, HEAD_DIM, BLOCK_D)
    Q_bh = Q + b * stride_qb + h * stride_qh
    DO_bh = DO + b * stride_dob + h * stride_doh
    LSE_bh = LSE + bh.to(tl.int64) * Tq
    DELTA_bh = DELTA + bh.to(tl.int64) * Tq

    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    if CAUSAL:
        # query blocks before `start` see none of these keys; [start, full) see part of them (mask);
        # [full, Tq) see all of them
        start = tl.maximum(start_n - offset, 0) // BLOCK_M * BLOCK_M
        full = tl.minimum(tl.cdiv(tl.maximum(start_n + BLOCK_N - 1 - offset, 0), BLOCK_M) * BLOCK_M, Tq)
    else:
        start = 0
        full = 0
    dk, dv = _attn_bwd_dkdv_blocks(dk, dv, k, v, Q_bh, DO_bh, LSE_bh, DELTA_bh, stride_qt,
                                   stride_dot, offs_m, cols, offs_d, start, full, Tq, offset, qk_scale,
                                   True, HEAD_DIM, BLOCK_D, BLOCK_M, DOT_PREC)
    dk, dv = _attn_bwd_dkdv_blocks(dk, dv, k, v, Q_bh, DO_bh, LSE_bh, DELTA_bh, stride_qt,
                                   stride_dot, offs_m, cols, offs_d, full, Tq, Tq, offset, qk_scale,
                                   False, HEAD_DIM, BLOCK_D, BLOCK_M, DOT_PREC)
    dk = dk * sm_scale
    _store_tile(DK + b * stride_dkb + h * stride_dkh + cols[:, None] * stride_dkt + offs_d[None, :],
                dk, cols, Tk, offs_d, HEAD_DIM, BLOCK_D)
    _store_tile(DV + b * stride_dvb + h * stride_dvh + cols[:, None] * stride_dvt + offs_d[None, :],
                dv, cols, Tk, offs_d, HEAD_DIM, BLOCK_D)


@jit
def _attn_bwd_dq_blocks(dq, q, do, lse, delta, K_bh, V_bh, stride_kt, stride_vt, offs_m, offs_n,
                        offs_d, start, end, Tk, offset, qk_scale,
                        CAUSAL: tl.constexpr, MASKED: tl.constexpr, HEAD_DIM: tl.constexpr,
                        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr):
    """Accumulate dQ of one query block over key blocks [start, end). MASKED: the causal diagonal
    and the last, partial key block (its padding keys must not reach the real rows of dQ)."""
    for start_n in range(start, end, BLOCK_N):
        cols = start_n + offs_n
        k = _load_tile(K_bh + cols[:, None] * stride_kt + offs_d[None, :], cols, Tk, offs_d, HEAD_DIM, BLOCK_D)
        v = _load_tile(V_bh + cols[:, None] * stride_vt + offs_d[None, :], cols, Tk, offs_d, HEAD_DIM, BLOCK_D)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * qk_scale
        p = tl.exp2(s - lse[:, None])
        if MASKED:
            visible = cols[None, :] < Tk
            if CAUSAL:
                visible = visible & (cols[None, :] <= offs_m[:, None] + offset)
            p = tl.where(visible, p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)
    return dq


@jit
def _attn_bwd_dq(Q, K, V, DO, LSE, DELTA, DQ,
                 stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
                 stride_vb, stride_vh, stride_vt, stride_dob, stride_doh, stride_dot,
                 stride_dqb, stride_dqh, stride_dqt,
                 H, Tq, Tk, sm_scale, qk_scale,
                 HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, DOT_PREC: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """dQ for BLOCK_M queries of one (batch, head). Grid: (cdiv(Tq, BLOCK_M), B * H)."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    offset = Tk - Tq
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q = _load_tile(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                   offs_m, Tq, offs_d, HEAD_DIM, BLOCK_D)
    do = _load_tile(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
                    offs_m, Tq, offs_d, HEAD_DIM, BLOCK_D)
    lse = tl.load(LSE + bh.to(tl.int64) * Tq + offs_m, mask=offs_m < Tq, other=0.0)
    delta = tl.load(DELTA + bh.to(tl.int64) * Tq + offs_m, mask=offs_m < Tq, other=0.0)
    K_bh = K + b * stride_kb + h * stride_kh
    V_bh = V + b * stride_vb + h * stride_vh

    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if CAUSAL:  # the same split of the keys as in the forward
        full = tl.minimum((start_m + offset + 1) // BLOCK_N, Tk // BLOCK_N) * BLOCK_N
        end = tl.minimum(start_m + BLOCK_M + offset, Tk)
    else:
        full = Tk // BLOCK_N * BLOCK_N
        end = Tk
    dq = _attn_bwd_dq_blocks(dq, q, do, lse, delta, K_bh, V_bh, stride_kt, stride_vt, offs_m, offs_n,
                             offs_d, 0, full, Tk, offset, qk_scale, CAUSAL, False, HEAD_DIM, BLOCK_D,
                             BLOCK_N, DOT_PREC)
    dq = _attn_bwd_dq_blocks(dq, q, do, lse, delta, K_bh, V_bh, stride_kt, stride_vt, offs_m, offs_n,
                             offs_d, full, end, Tk, offset, qk_scale, CAUSAL, True, HEAD_DIM, BLOCK_D,
                             BLOCK_N, DOT_PREC)
    dq = dq * sm_scale
    _store_tile(DQ + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqt + offs_d[None, :],
                dq, offs_m, Tq, offs_d, HEAD_DIM, BLOCK_D)


# Block sizes. On a GPU the autotuner times the candidates once per shape (Tq, Tk, head_dim, causal,
# dtype) and keeps the fastest; the interpreter gets one small configuration, small enough that the
# tests' odd lengths span several blocks. float16 and bfloat16 get tensor-core tiles; float32, whose
# exact dots run on the CUDA cores, gets one small tile per kernel: its large tiles spill, need more
# than the 99 KiB of shared memory an RTX 3090 or 4090 gives a program, and take minutes to compile.
#
# Each candidate comes with its need: the shared memory, in bytes, that one program of it uses, the
# most over sm_80, 86, 89 and 90 and head dims up to 128, as triton allocates it (measured by
# tests/compile_kernels.py --all, which fails wherever a kernel uses more than is written here).
# The pruning rule (_fitting): a GPU is offered a config only if its need is at most the shared
# memory a program may use there (sm_80 163 KiB, sm_86 and sm_89 99 KiB, sm_90 227 KiB; read from
# the device), so no launch fails for lack of it. Every config here fits all four; the rule keeps
# smaller cards (sm_75: 64 KiB) and new configs honest.
ATTENTION_CONFIGS = {  # kernel -> element size -> {(BLOCK_M, BLOCK_N, warps, stages): need}
    "forward": {2: {(128, 64, 8, 3): 49152, (128, 64, 8, 4): 49152, (128, 128, 8, 3): 65536, (64, 64, 4, 3): 40960,
                    (64, 128, 8, 3): 65536, (128, 32, 8, 3): 40960},
                4: {(32, 32, 4, 2): 53248}},
    "dkdv": {2: {(32, 128, 8, 3): 98816, (16, 128, 8, 3): 82176, (64, 64, 8, 3): 74752, (32, 64, 8, 3): 66048,
                 (16, 64, 8, 3): 49408, (32, 64, 4, 3): 66048},
             4: {(16, 32, 4, 2): 32896}},
    "dq": {2: {(128, 32, 8, 3): 81920, (128, 64, 8, 3): 98304, (64, 64, 4, 3): 65536, (64, 32, 4, 3): 49152,
               (64, 64, 8, 3): 65536, (32, 64, 4, 3): 40960},
           4: {(16, 32, 4, 2): 51200}},
}
_AUTOTUNE_KEY = ["Tq", "Tk", "HEAD_DIM", "CAUSAL"]  # the autotuner adds the tensors' dtypes


def config_key(config) -> tuple:
    """(BLOCK_M, BLOCK_N, warps, stages) of a triton.Config."""
    return config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps, config.num_stages


_shared_limits: dict = {}  # CUDA device index -> bytes


@torch.compiler.assume_constant_result  # called while Dynamo traces (see trusted): a constant in the graph
def shared_memory_per_block(device: torch.device) -> int:
    """The most shared memory one program may use on device: the number triton checks at launch."""
    if device.type != "cuda":
        return 1 << 40  # the interpreter has no such limit
    index = torch.cuda.current_device() if device.index is None else device.index
    if index not in _shared_limits:
        _shared_limits[index] = triton.runtime.driver.active.utils.get_device_properties(index)["max_shared_mem"]
    return _shared_limits[index]


def _fitting(name: str, needs: dict):
    """The autotuner's early_config_prune: the configs whose need fits Q's GPU."""
    def prune(configs, named_args, **kwargs):
        limit = shared_memory_per_block(named_args["Q"].device)
        kept = [c for c in configs if needs[config_key(c)] <= limit]
        if not kept:
            raise RuntimeError(f"triton_attention: no {name} config fits in the {limit} bytes of shared memory "
                               f"a program may use on this GPU")
        return kept
    return prune


def _configs(candidates):
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32})]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in candidates]


def _autotuned(kernel, name: str, itemsize: int):
    needs = ATTENTION_CONFIGS[name][itemsize]
    return triton.autotune(_configs(needs), key=_AUTOTUNE_KEY,
                           prune_configs_by={"early_config_prune": _fitting(name, needs)})(kernel)


if triton:  # (forward, dK and dV, dQ), autotuned for 2-byte dtypes and for float32
    _ATTENTION_16 = tuple(_autotuned(k, n, 2) for k, n in [(_attn_fwd, "forward"), (_attn_bwd_dkdv, "dkdv"),
                                                           (_attn_bwd_dq, "dq")])
    _ATTENTION_32 = tuple(_autotuned(k, n, 4) for k, n in [(_attn_fwd, "forward"), (_attn_bwd_dkdv, "dkdv"),
                                                           (_attn_bwd_dq, "dq")])


def _attention_kernels(dtype: torch.dtype) -> tuple:
    return _ATTENTION_32 if dtype == torch.float32 else _ATTENTION_16


def _offered(tuner, device: torch.device) -> list:
    """The configs tuner may run on device (the autotuner runs a lone config unpruned)."""
    if len(tuner.configs) == 1:
        return tuner.configs
    return tuner.early_config_prune(tuner.configs, {"Q": torch.empty(0, device=device)})


def _head_block(D: int) -> int:
    return max(16, triton.next_power_of_2(D))  # tl.dot needs at least 16


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _attention_forward(q, k, v, causal: bool, sm_scale: float):
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    # O is laid out as (B, T, H, D) and returned as a (B, H, T, D) view, so the model's
    # o.transpose(1, 2).reshape(B, T, H * D) is free
    o = torch.empty(B, Tq, H, D, dtype=q.dtype, device=q.device).transpose(1, 2)
    lse = torch.empty(B, H, Tq, dtype=torch.float32, device=q.device)
    grid = lambda meta: (triton.cdiv(Tq, meta["BLOCK_M"]), B * H)
    forward_kernel = _attention_kernels(q.dtype)[0]
    forward_kernel[grid](q, k, v, o, lse, *_strides(q), *_strides(k), *_strides(v), *_strides(o),
                         H, Tq, Tk, sm_scale * LOG2E,
                         HEAD_DIM=D, BLOCK_D=_head_block(D), CAUSAL=causal, DOT_PREC=_dot_precision(q.dtype))
    return o, lse


def _attention_backward(do, q, k, v, o, lse, causal: bool, sm_scale: float):
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    if do.stride(-1) != 1:
        do = do.contiguous()
    delta = torch.empty_like(lse)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    common = dict(HEAD_DIM=D, BLOCK_D=_head_block(D), CAUSAL=causal, DOT_PREC=_dot_precision(q.dtype))
    _attn_bwd_delta[(triton.cdiv(Tq, 64), B * H)](o, do, delta, *_strides(o), *_strides(do), H, Tq,
                                                   HEAD_DIM=D, BLOCK_D=_head_block(D), BLOCK_M=64)
    _, dkdv_kernel, dq_kernel = _attention_kernels(q.dtype)
    grid = lambda meta: (triton.cdiv(Tk, meta["BLOCK_N"]), B * H)
    dkdv_kernel[grid](q, k, v, do, lse, delta, dk, dv, *_strides(q), *_strides(k), *_strides(v),
                      *_strides(do), *_strides(dk), *_strides(dv), H, Tq, Tk, sm_scale,
                      sm_scale * LOG2E, **common)
    grid = lambda meta: (triton.cdiv(Tq, meta["BLOCK_M"]), B * H)
    dq_kernel[grid](q, k, v, do, lse, delta, dq, *_strides(q), *_strides(k), *_strides(v),
                    *_strides(do), *_strides(dq), H, Tq, Tk, sm_scale, sm_scale * LOG2E, **common)
    return dq, dk, dv


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale):
        o, lse = _attention_forward(q, k, v, causal, sm_scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.sm_scale = causal, sm_scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _attention_backward(do, q, k, v, o, lse, ctx.causal, ctx.sm_scale)
        return dq, dk, dv, None, None


def triton_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
              sm_scale: Optional[float] = None) -> torch.Tensor:
    """softmax(q k^T * sm_scale + mask) v for q (B, H, Tq, D) and k, v (B, H, Tk, D), differentiable.
    sm_scale defaults to 1/sqrt(D). causal: query i sees keys j <= i + Tk - Tq (needs Tq <= Tk).
    D up to 128; float16, bfloat16 or float32, all three alike."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"triton_attention: q, k, v must be (B, H, T, D), got shapes {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    B, H, Tq, D = q.shape
    if k.shape != v.shape or k.shape[:2] != (B, H) or k.shape[3] != D:
        raise ValueError(f"triton_attention: k and v must be (B={B}, H={H}, Tk, D={D}), got {tuple(k.shape)} "
                         f"and {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"triton_attention: q, k, v must share one dtype of float16, bfloat16, float32; got "
                         f"{q.dtype}, {k.dtype}, {v.dtype}")
    if not 1 <= D <= 128:
        raise ValueError(f"triton_attention: head dim {D} is not supported (1..128)")
    if Tq == 0 or k.shape[2] == 0:
        raise ValueError(f"triton_attention: empty sequence (Tq={Tq}, Tk={k.shape[2]})")
    if causal and Tq > k.shape[2]:
        raise ValueError(f"triton_attention: causal with more queries ({Tq}) than keys ({k.shape[2]}): the first "
                         f"queries would see no key")
    _check_device(q, k, v)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    sm_scale = 1.0 / math.sqrt(D) if sm_scale is None else float(sm_scale)
    return _Attention.apply(q, k, v, bool(causal), sm_scale)


# =============================================================================
# LayerNorm
#
# Forward, one row of N features per program, in float32 registers:
#     mean = sum(x) / N,  var = sum((x - mean)^2) / N,  rstd = 1 / sqrt(var + eps)
#     y = (x - mean) * rstd * w + b
# The row is read once and y written once (PyTorch's eager path is also one kernel; the gain here is
# in the backward). mean and rstd (8 bytes a row) are stored for the backward.
#
# Backward, with xhat = (x - mean) * rstd and g = w * dy:
#     dx = rstd * (g - mean(g * xhat) * xhat - mean(g))
#     dw = sum over rows of dy * xhat,   db = sum over rows of dy
# dx is per row. dw and db sum over all M rows: G programs each take every G-th row and keep a
# partial sum in registers, write it to a (G, 2N) buffer (dw partials | db partials), and a second
# kernel sums the G partials of each column. No atomics: the result does not depend on scheduling.

@jit
def _layer_norm_fwd(X, Y, W, B, MEAN, RSTD, stride_x, stride_y, N, eps, BLOCK_N: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, 0) / N
    xc = tl.where(mask, x - mean, 0.0)
    var = tl.sum(xc * xc, 0) / N
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
    y = xc * rstd * w + b
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(MEAN + row, mean)
    tl.store(RSTD + row, rstd)


@jit
def _layer_norm_bwd(X, DY, DX, W, MEAN, RSTD, PART, stride_x, stride_dy, stride_dx, M, N,
                    BLOCK_N: tl.constexpr):
    """dx of rows pid, pid + G, pid + 2G, ... and this program's partial dw, db over those rows."""
    pid = tl.program_id(0)
    G = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_N], tl.float32)
    db = tl.zeros([BLOCK_N], tl.float32)
    # row pointers in 64 bits (M * N may pass 2^31), advanced by G rows per step
    x_ptrs = X + pid.to(tl.int64) * stride_x + cols
    dy_ptrs = DY + pid.to(tl.int64) * stride_dy + cols
    dx_ptrs = DX + pid.to(tl.int64) * stride_dx + cols
    for row in range(pid, M, G):
        x = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptrs, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + row)
        rstd = tl.load(RSTD + row)
        xhat = tl.where(mask, (x - mean) * rstd, 0.0)
        g = w * dy  # 0 past N, as w and dy are
        dx = (g - (tl.sum(g * xhat, 0) / N) * xhat - tl.sum(g, 0) / N) * rstd
        tl.store(dx_ptrs, dx.to(DX.dtype.element_ty), mask=mask)
        dw += dy * xhat
        db += dy
        x_ptrs += G * stride_x
        dy_ptrs += G * stride_dy
        dx_ptrs += G * stride_dx
    tl.store(PART + pid * 2 * N + cols, dw, mask=mask)
    tl.store(PART + pid * 2 * N + N + cols, db, mask=mask)


@jit
def _column_sum(PART, OUT, G, N, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr):
    """OUT[n] = sum over g of PART[g, n], for BLOCK_N columns, always in the same order."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], tl.float32)
    for start in range(0, G, BLOCK_G):
        rows = start + tl.arange(0, BLOCK_G)
        part = tl.load(PART + rows[:, None] * N + cols[None, :], mask=(rows[:, None] < G) & (cols[None, :] < N),
                       other=0.0)
        acc += tl.sum(part, 0)
    tl.store(OUT + cols, acc.to(OUT.dtype.element_ty), mask=cols < N)


MAX_LAYER_NORM_N = 16384  # one row lives in registers: 16384 float32 is 64 KiB per program


def _layer_norm_warps(block_n: int) -> int:
    return min(max(block_n // 256, 1), 16)


def _layer_norm_programs(M: int, device: torch.device) -> int:
    """G, the number of partial sums of dw and db: enough programs to fill the GPU, few enough that
    the (G, 2N) partials are a small fraction of the traffic."""
    if device.type != "cuda":  # the interpreter: enough that the tests' row counts need both loops
        return min(M, 64)
    return min(M, 4 * torch.cuda.get_device_properties(device).multi_processor_count)


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        N = x.shape[-1]
        x2 = x.reshape(-1, N)
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        M = x2.shape[0]
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        mean = torch.empty(M, dtype=torch.float32, device=x.device)
        rstd = torch.empty(M, dtype=torch.float32, device=x.device)
        block_n = triton.next_power_of_2(N)
        if M > 0:
            _layer_norm_fwd[(M,)](x2, y, weight, bias, mean, rstd, x2.stride(0), N, N, eps,
                                  BLOCK_N=block_n, num_warps=_layer_norm_warps(block_n))
        ctx.save_for_backward(x2, weight, mean, rstd)
        ctx.bias_dtype = bias.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        x2, weight, mean, rstd = ctx.saved_tensors
        M, N = x2.shape
        dy2 = dy.reshape(-1, N)
        if dy2.stride(-1) != 1:
            dy2 = dy2.contiguous()
        dx = torch.empty(dy.shape, dtype=x2.dtype, device=x2.device)
        G = max(_layer_norm_programs(M, x2.device), 1)
        # [dw partials | db partials]; every program writes its row (zeros for no rows at all)
        part = (torch.empty if M > 0 else torch.zeros)(G, 2 * N, dtype=torch.float32, device=x2.device)
        block_n = triton.next_power_of_2(N)
        if M > 0:
            _layer_norm_bwd[(G,)](x2, dy2, dx, weight, mean, rstd, part, x2.stride(0),
                                  dy2.stride(0), N, M, N, BLOCK_N=block_n, num_warps=_layer_norm_warps(block_n))
        dwdb = torch.empty(2 * N, dtype=weight.dtype, device=weight.device)
        _column_sum[(triton.cdiv(2 * N, 64),)](part, dwdb, G, 2 * N, BLOCK_G=32, BLOCK_N=64)
        dw, db = dwdb[:N], dwdb[N:].to(ctx.bias_dtype)
        return dx, dw, db, None


def triton_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last dim of x (any leading shape), with weight and bias of shape (N,);
    differentiable. x in float16, bfloat16 or float32 (y has x's dtype); statistics in float32."""
    N = x.shape[-1] if x.dim() else 0
    if x.dim() == 0 or weight is None or bias is None or weight.shape != (N,) or bias.shape != (N,):
        raise ValueError(f"layer_norm: x must be (..., N) with weight and bias of shape (N,); got x "
                         f"{tuple(x.shape)}, weight {None if weight is None else tuple(weight.shape)}, "
                         f"bias {None if bias is None else tuple(bias.shape)}")
    if not 1 <= N <= MAX_LAYER_NORM_N:
        raise ValueError(f"layer_norm: hidden size {N} is not supported (1..{MAX_LAYER_NORM_N})")
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"layer_norm: {name} has dtype {t.dtype}; expected float16, bfloat16 or float32")
    _check_device(x, weight, bias)
    weight, bias = weight.contiguous(), bias.contiguous()
    return _LayerNorm.apply(x, weight, bias, float(eps))


# =============================================================================
# Partial rotary position embedding ("rotate half" on the first rotary_dim dims of each head)
#
# With x1, x2 the two halves of the rotated slice and c, s the cos and sin tables at the row's
# position (each also in two halves):
#     y1 = x1 * c1 - x2 * s1,     y2 = x2 * c2 + x1 * s2,     the other dims pass through.
# Its gradient is the transposed rotation:
#     dx1 = dy1 * c1 + dy2 * s2,  dx2 = dy2 * c2 - dy1 * s1.
# One read and one write of x, where PyTorch's slicing, negation, concatenations, products and sum
# take several passes. Computed in float32 and rounded once.

@jit
def _rope(X, COS, SIN, Y, stride_xb, stride_xh, stride_xt, stride_yb, stride_yh, stride_yt, stride_c,
          H, T, HEAD_DIM: tl.constexpr, HALF: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_D: tl.constexpr,
          BLOCK_T: tl.constexpr, BACKWARD: tl.constexpr):
    """BLOCK_T rows of one (batch, head). Grid: (cdiv(T, BLOCK_T), B * H)."""
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    bh = tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    x_row = X + b * stride_xb + h * stride_xh + rows[:, None] * stride_xt
    y_row = Y + b * stride_yb + h * stride_yh + rows[:, None] * stride_yt
    row_ok = rows[:, None] < T
    # the dims past the rotated slice are copied
    d = tl.arange(0, BLOCK_D)[None, :]
    keep = row_ok & (d >= 2 * HALF) & (d < HEAD_DIM)
    tl.store(y_row + d, tl.load(x_row + d, mask=keep), mask=keep)
    # the rotated slice, as two halves
    i = tl.arange(0, BLOCK_HALF)[None, :]
    rot = row_ok & (i < HALF)
    x1 = tl.load(x_row + i, mask=rot, other=0.0).to(tl.float32)
    x2 = tl.load(x_row + HALF + i, mask=rot, other=0.0).to(tl.float32)
    c_row = rows[:, None] * stride_c
    c1 = tl.load(COS + c_row + i, mask=rot, other=0.0).to(tl.float32)
    c2 = tl.load(COS + c_row + HALF + i, mask=rot, other=0.0).to(tl.float32)
    s1 = tl.load(SIN + c_row + i, mask=rot, other=0.0).to(tl.float32)
    s2 = tl.load(SIN + c_row + HALF + i, mask=rot, other=0.0).to(tl.float32)
    if BACKWARD:
        y1 = x1 * c1 + x2 * s2
        y2 = x2 * c2 - x1 * s1
    else:
        y1 = x1 * c1 - x2 * s1
        y2 = x2 * c2 + x1 * s2
    tl.store(y_row + i, y1.to(Y.dtype.element_ty), mask=rot)
    tl.store(y_row + HALF + i, y2.to(Y.dtype.element_ty), mask=rot)


def _rope_launch(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backward: bool) -> torch.Tensor:
    B, H, T, D = x.shape
    half = cos.shape[-1] // 2
    y = torch.empty_like(x)  # keeps x's layout: the model's (B, T, H, D) projections viewed as (B, H, T, D)
    block_t = 16
    _rope[(triton.cdiv(T, block_t), B * H)](x, cos, sin, y, *_strides(x), *_strides(y), cos.stride(0), H, T,
                                            HEAD_DIM=D, HALF=half, BLOCK_HALF=triton.next_power_of_2(half),
                                            BLOCK_D=triton.next_power_of_2(D), BLOCK_T=block_t, BACKWARD=backward)
    return y


class _Rope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return _rope_launch(x, cos, sin, backward=False)

    @staticmethod
    def backward(ctx, dy):
        cos, sin = ctx.saved_tensors
        if dy.stride(-1) != 1:
            dy = dy.contiguous()
        return _rope_launch(dy, cos, sin, backward=True), None, None


def triton_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first rotary_dim dims of each head of x (B, H, T, D), rotate-half style (dim i
    pairs with i + rotary_dim/2), with cos and sin tables (T, rotary_dim); the other dims pass
    through. Differentiable in x (the tables are constants)."""
    if x.dim() != 4 or cos.dim() != 2 or cos.shape != sin.shape or cos.shape[0] != x.shape[2]:
        raise ValueError(f"rope: x must be (B, H, T, D) and cos, sin (T, rotary_dim); got x {tuple(x.shape)}, "
                         f"cos {tuple(cos.shape)}, sin {tuple(sin.shape)}")
    rd = cos.shape[1]
    if rd % 2 or rd > x.shape[3]:
        raise ValueError(f"rope: rotary_dim {rd} must be even and at most the head dim {x.shape[3]}")
    if cos.requires_grad or sin.requires_grad:
        raise ValueError("rope: the cos and sin tables are constants here; they must not require grad")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"rope: x has dtype {x.dtype}; expected float16, bfloat16 or float32")
    _check_device(x, cos, sin)
    if rd == 0 or x.numel() == 0:
        return x
    if x.stride(-1) != 1:
        x = x.contiguous()
    return _Rope.apply(x, cos.contiguous(), sin.contiguous())


# =============================================================================
# GELU, tanh approximation (phi's "gelu_new")
#
#     gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
#             = x * sigmoid(2u)                       (as 1 + tanh(u) = 2 sigmoid(2u))
#     gelu'(x) = sigmoid(2u) + x * sigmoid(2u) (1 - sigmoid(2u)) * 2 u'(x),
#     u'(x) = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
# The sigmoid form needs no tanh (a libdevice call) and has no cancellation for large negative x.
# The forward stores nothing but x, which the backward reads again.

SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654) if triton else None  # a constexpr, so kernels may read it


@jit
def _gelu_tanh(X, DY, OUT, n, BACKWARD: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)
    sig = tl.sigmoid(2.0 * u)
    if BACKWARD:
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x)
        out = dy * (sig + x * sig * (1.0 - sig) * 2.0 * du)
    else:
        out = x * sig
    tl.store(OUT + offs, out.to(OUT.dtype.element_ty), mask=mask)


def _gelu_launch(x: torch.Tensor, dy: Optional[torch.Tensor]) -> torch.Tensor:
    out = torch.empty_like(x)
    n = x.numel()
    block = 1024
    _gelu_tanh[(triton.cdiv(n, block),)](x, x if dy is None else dy, out, n, BACKWARD=dy is not None,
                                         BLOCK=block)
    return out


class _GeluTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _gelu_launch(x, None)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return _gelu_launch(x, dy.contiguous())


def triton_gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """F.gelu(x, approximate="tanh"), differentiable, computed in float32 whatever x's dtype."""
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"gelu_tanh: x has dtype {x.dtype}; expected float16, bfloat16 or float32")
    _check_device(x)
    if x.numel() == 0:
        return x.clone()
    return _GeluTanh.apply(x.contiguous())


# =============================================================================
# Cross-entropy over a large vocabulary: the per-row step of linear_cross_entropy
#
#     loss_r = logsumexp_v(z_rv) - z_r,target_r          dloss_r/dz_rv = softmax(z_r)_v - [v == target_r]
# linear_cross_entropy computes the logits z = x W^T + b a chunk of rows at a time (phi's
# 51200-word vocabulary makes the whole (tokens, vocab) tensor the biggest of training) and hands
# each chunk here: one program per row reads the row once for the logsumexp (online, as attention's
# softmax) and once more to overwrite it, in place, with its gradient. dx, dW and db of the chunk
# are then three matmuls, back in linear_cross_entropy.

@jit
def _cross_entropy_rows(LOGITS, TARGETS, LOSS, stride_l, V, ignore_index, GRAD: tl.constexpr,
                        BLOCK_V: tl.constexpr):
    """One row: its loss, and (GRAD) its logits replaced by their gradient softmax - onehot (0 for a
    row whose target is ignore_index; the caller divides by the number of rows counted)."""
    row = tl.program_id(0).to(tl.int64)
    base = LOGITS + row * stride_l
    target = tl.load(TARGETS + row)
    valid = target != ignore_index
    cols = tl.arange(0, BLOCK_V)
    # pass 1: the running maximum m and sum of exp(z - m) over the vocabulary, as in attention
    m = float("-inf")
    s = 0.0
    for start in range(0, V, BLOCK_V):
        z = tl.load(base + start + cols, mask=start + cols < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(z, 0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), 0)
        m = m_new
    lse = m + tl.log(s)
    z_target = tl.load(base + target, mask=valid, other=0.0).to(tl.float32)
    tl.store(LOSS + row, tl.where(valid, lse - z_target, 0.0))
    # pass 2: the gradient, in place
    if GRAD:
        for start in range(0, V, BLOCK_V):
            v = start + cols
            z = tl.load(base + v, mask=v < V, other=0.0).to(tl.float32)
            g = tl.exp(z - lse) - tl.where(v == target, 1.0, 0.0)
            g = tl.where(valid, g, 0.0)
            tl.store(base + v, g.to(LOGITS.dtype.element_ty), mask=v < V)


def triton_cross_entropy_rows_(logits: torch.Tensor, targets: torch.Tensor, losses: torch.Tensor,
                        ignore_index: int, grad: bool) -> None:
    """For each row r of logits (R, V): losses[r] = logsumexp(z_r) - z_r,targets[r] (0 where the
    target is ignore_index), in float32; with grad, logits[r] overwritten in place by
    softmax(z_r) - onehot(targets[r]) (zeros for an ignored row). linear_cross_entropy calls it on
    each chunk; cross_entropy_rows_ is the PyTorch version."""
    if logits.dtype not in (torch.float16, torch.bfloat16, torch.float32) or losses.dtype != torch.float32:
        raise ValueError(f"cross_entropy_rows_: logits float16, bfloat16 or float32 and losses float32; got "
                         f"{logits.dtype} and {losses.dtype}")
    if logits.stride(1) != 1 or not targets.is_contiguous() or not losses.is_contiguous():
        raise ValueError("cross_entropy_rows_: logits rows, targets and losses must be contiguous")
    _check_device(logits, targets, losses)
    if logits.shape[0] == 0:
        return
    _cross_entropy_rows[(logits.shape[0],)](logits, targets, losses, logits.stride(0), logits.shape[1],
                                            ignore_index, GRAD=grad, BLOCK_V=1024 if INTERPRET else 4096,
                                            num_warps=8)
