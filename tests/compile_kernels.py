"""Compile kernels.py's Triton kernels for a GPU architecture on a machine without a GPU.

Triton's interpreter runs the kernels' math on the CPU, but it is Python: it accepts code that the
GPU compiler rejects (a global that is not a constexpr, a type that does not lower, a block that does
not fit in shared memory). This builds each kernel through the real pipeline, down to a cubin from
the ptxas that ships with triton, for the configurations the GPU will run.

    python tests/compile_kernels.py              # phi's shapes, sm_90 (H100), one config per kernel
    python tests/compile_kernels.py --all        # every dtype, head dim and mask; every autotune config in bf16
    python tests/compile_kernels.py --arch 80    # A100

Run it without TRITON_INTERPRET set (the kernels must be real JIT functions, not interpreted ones).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import kernels as K  # noqa: E402

INTS = {"H", "Tq", "Tk", "T", "M", "N", "G", "V", "n", "ignore_index"}


def build(target, kernel, pointers: dict, floats: tuple, constexprs: dict, num_warps=4, num_stages=3):
    fn = kernel.fn if isinstance(kernel, triton.runtime.Autotuner) else kernel
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = pointers[name]
        elif name in floats:
            signature[name] = "fp32"
        elif name in INTS or name.startswith("stride"):
            signature[name] = "i32"
        else:
            raise KeyError(f"{fn.__name__}: no type for argument {name}")
    t0 = time.time()
    compiled = triton.compile(ASTSource(fn, signature, constexprs=constexprs), target=target,
                              options={"num_warps": num_warps, "num_stages": num_stages})
    assert "cubin" in compiled.asm, f"{fn.__name__}: no cubin"
    print(f"{fn.__name__:20s} {num_warps} warps {num_stages} stages, shared {compiled.metadata.shared:6d} B, "
          f"{resources(compiled.asm['cubin'])}, {time.time() - t0:4.1f}s  {constexprs}", flush=True)


def resources(cubin: bytes) -> str:
    """Registers per thread and spilled bytes (STACK), from the cuobjdump that ships with triton."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        try:
            out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
        except OSError:
            return "registers unknown"
    fields = dict(w.split(":", 1) for line in out.splitlines() if "REG:" in line for w in line.split() if ":" in w)
    return f"{fields.get('REG', '?')} registers, {fields.get('STACK', '?')} B spilled"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100), 80 (A100)")
    p.add_argument("--all", action="store_true", help="every dtype, head dim and mask; every config in bf16")
    args = p.parse_args(argv)
    if K.INTERPRET:
        sys.exit("compile_kernels.py: unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")
    target = GPUTarget("cuda", args.arch, 32)
    dtypes = ["bf16", "fp16", "fp32"] if args.all else ["bf16"]
    head_dims = [32, 64, 80, 128] if args.all else [64, 80]  # phi-1.5 and phi-2
    for dt in dtypes:
        attn = {n: f"*{dt}" for n in ["Q", "K", "V", "O", "DO", "DQ", "DK", "DV"]} | {"LSE": "*fp32", "DELTA": "*fp32"}
        for D in head_dims:
            for causal in ([True, False] if args.all else [True]):
                for kernel in (K._attn_fwd, K._attn_bwd_dkdv, K._attn_bwd_dq):
                    every = args.all and dt == "bf16" and D in (64, 80)  # phi-1.5 and phi-2 in training
                    for config in kernel.configs if every else kernel.configs[:1]:
                        build(target, kernel, attn, ("qk_scale", "sm_scale"),
                              dict(HEAD_DIM=D, BLOCK_D=K._head_block(D), CAUSAL=causal,
                                   DOT_PREC="ieee" if dt == "fp32" else "tf32", **config.kwargs),
                              config.num_warps, config.num_stages)
            build(target, K._attn_bwd_delta, attn, (), dict(HEAD_DIM=D, BLOCK_D=K._head_block(D), BLOCK_M=64))
        for N in [2048, 2560, 8192] + ([K.MAX_LAYER_NORM_N] if args.all else []):
            block = triton.next_power_of_2(N)
            ln = {n: f"*{dt}" for n in ["X", "Y", "DY", "DX", "W", "B"]} | {"MEAN": "*fp32", "RSTD": "*fp32",
                                                                            "PART": "*fp32"}
            build(target, K._layer_norm_fwd, ln, ("eps",), dict(BLOCK_N=block), K._layer_norm_warps(block))
            build(target, K._layer_norm_bwd, ln, (), dict(BLOCK_N=block), K._layer_norm_warps(block))
        build(target, K._column_sum, {"PART": "*fp32", "OUT": f"*{dt}"}, (), dict(BLOCK_G=32, BLOCK_N=64))
        for D, rd in [(64, 32), (80, 32)]:
            for backward in (False, True):
                build(target, K._rope, {n: f"*{dt}" for n in ["X", "Y", "COS", "SIN"]}, (),
                      dict(HEAD_DIM=D, HALF=rd // 2, BLOCK_HALF=rd // 2, BLOCK_D=triton.next_power_of_2(D),
                           BLOCK_T=16, BACKWARD=backward))
        for backward in (False, True):
            build(target, K._gelu_tanh, {n: f"*{dt}" for n in ["X", "DY", "OUT"]}, (),
                  dict(BACKWARD=backward, BLOCK=1024))
        for grad in (False, True):
            build(target, K._cross_entropy_rows, {"LOGITS": f"*{dt}", "TARGETS": "*i64", "LOSS": "*fp32"}, (),
                  dict(GRAD=grad, BLOCK_V=4096), num_warps=8)
    print(f"all kernels compiled for sm_{args.arch}")


if __name__ == "__main__":
    main()
