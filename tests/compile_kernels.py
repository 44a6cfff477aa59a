"""Compile kernels.py's Triton kernels for the GPUs nanophi runs on, on a machine without one.

Triton's interpreter runs the kernels' math on the CPU, but it is Python: it accepts code that the
GPU compiler rejects (a global that is not a constexpr, a type that does not lower, a block that does
not fit in shared memory). This builds each kernel through the real pipeline, down to a cubin from
the ptxas that ships with triton, for sm_80 (A100), sm_86 (A10, RTX 30xx), sm_89 (L4, RTX 40xx)
and sm_90 (H100, H200), and prints the shared memory, registers and spills of each.

It also checks kernels.py's pruning rule (see ATTENTION_CONFIGS there): for every attention config
an architecture keeps, the shared memory the compiler allocates must fit that architecture's limit,
and must not exceed the need that ATTENTION_CONFIGS states; every (architecture, dtype, head dim)
must keep at least one config. It exits with 1, listing what failed, if not.

    python tests/compile_kernels.py              # phi's shapes (bf16, head dims 64 and 80, causal), every architecture
    python tests/compile_kernels.py --all        # every dtype, head dim and mask, every config each architecture keeps
    python tests/compile_kernels.py --arch 86    # one architecture
    python tests/compile_kernels.py --jobs 2     # compiles in 2 processes

Run it without TRITON_INTERPRET set (the kernels must be real JIT functions, not interpreted ones).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import kernels as K  # noqa: E402

INTS = {"H", "Tq", "Tk", "T", "M", "N", "G", "V", "n", "ignore_index"}
# the shared memory one program may use, in bytes (the CUDA programming guide's table of compute
# capabilities: 163 KiB on 8.0, 99 KiB on 8.6 and 8.9, 227 KiB on 9.0)
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
ATTENTION = {"forward": "_attn_fwd", "dkdv": "_attn_bwd_dkdv", "dq": "_attn_bwd_dq"}
ELEMENT_SIZE = {"bf16": 2, "fp16": 2, "fp32": 4}


def build(job: dict) -> dict:
    """Compile one kernel for one architecture; job: arch, kernel (its name in kernels.py), pointers
    (argument -> type), floats (float arguments), constexprs, warps, stages, and what to report."""
    fn = getattr(K, job["kernel"])
    signature = {}
    for name in fn.arg_names:
        if name in job["constexprs"]:
            signature[name] = "constexpr"
        elif name in job["pointers"]:
            signature[name] = job["pointers"][name]
        elif name in job["floats"]:
            signature[name] = "fp32"
        elif name in INTS or name.startswith("stride"):
            signature[name] = "i32"
        else:
            raise KeyError(f"{job['kernel']}: no type for argument {name}")
    t0 = time.time()
    compiled = triton.compile(ASTSource(fn, signature, constexprs=job["constexprs"]),
                              target=GPUTarget("cuda", job["arch"], 32),
                              options={"num_warps": job["warps"], "num_stages": job["stages"]})
    assert "cubin" in compiled.asm, f"{job['kernel']}: no cubin"
    return dict(job, shared=compiled.metadata.shared, seconds=time.time() - t0, **resources(compiled.asm["cubin"]))


def resources(cubin: bytes) -> dict:
    """Registers per thread and the stack frame in bytes (spills), from the cuobjdump that ships with triton."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        try:
            out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
        except OSError:
            return dict(registers="?", spilled="?")
    fields = dict(w.split(":", 1) for line in out.splitlines() if "REG:" in line for w in line.split() if ":" in w)
    return dict(registers=fields.get("REG", "?"), spilled=fields.get("STACK", "?"))


def attention_jobs(arch: int, dt: str, D: int, causal: bool, every: bool) -> list:
    """One job per attention config that arch keeps (every), or for the first of them; and delta."""
    pointers = {n: f"*{dt}" for n in ["Q", "K", "V", "O", "DO", "DQ", "DK", "DV"]} | {"LSE": "*fp32",
                                                                                     "DELTA": "*fp32"}
    block_d = K._head_block(D)
    jobs = []
    for name, kernel in ATTENTION.items():
        needs = K.ATTENTION_CONFIGS[name][ELEMENT_SIZE[dt]]
        kept = [c for c in needs if needs[c] <= SHARED_LIMIT[arch]]  # kernels.py's rule
        if not kept:
            jobs.append(dict(arch=arch, kernel=kernel, error=f"no {name} config fits at {dt}, head dim {D}"))
        for m, n, w, s in kept if every else kept[:1]:
            jobs.append(dict(arch=arch, kernel=kernel, pointers=pointers, floats=("qk_scale", "sm_scale"), warps=w,
                             stages=s, need=needs[(m, n, w, s)],
                             constexprs=dict(HEAD_DIM=D, BLOCK_D=block_d, CAUSAL=causal,
                                             DOT_PREC="ieee" if dt == "fp32" else "tf32",
                                             BLOCK_M=m, BLOCK_N=n)))
    jobs.append(dict(arch=arch, kernel="_attn_bwd_delta", pointers=pointers, floats=(), warps=4, stages=3,
                     constexprs=dict(HEAD_DIM=D, BLOCK_D=block_d, BLOCK_M=64)))
    return jobs


def other_jobs(arch: int, dt: str, every: bool) -> list:
    """LayerNorm at phi's widths, rope at phi's head dims, GELU and the cross-entropy rows."""
    jobs = []
    job = lambda kernel, pointers, floats, constexprs, warps=4: jobs.append(
        dict(arch=arch, kernel=kernel, pointers=pointers, floats=floats, constexprs=constexprs, warps=warps,
             stages=3))
    ln = {n: f"*{dt}" for n in ["X", "Y", "DY", "DX", "W", "B"]} | {"MEAN": "*fp32", "RSTD": "*fp32", "PART": "*fp32"}
    for N in [2048, 2560, 8192] + ([K.MAX_LAYER_NORM_N] if every else []):
        block = triton.next_power_of_2(N)
        job("_layer_norm_fwd", ln, ("eps",), dict(BLOCK_N=block), K._layer_norm_warps(block))
        job("_layer_norm_bwd", ln, (), dict(BLOCK_N=block), K._layer_norm_warps(block))
    job("_column_sum", {"PART": "*fp32", "OUT": f"*{dt}"}, (), dict(BLOCK_G=32, BLOCK_N=64))
    for D, rd in [(64, 32), (80, 32)]:
        for backward in (False, True):
            job("_rope", {n: f"*{dt}" for n in ["X", "Y", "COS", "SIN"]}, (),
                dict(HEAD_DIM=D, HALF=rd // 2, BLOCK_HALF=rd // 2, BLOCK_D=triton.next_power_of_2(D),
                     BLOCK_T=16, BACKWARD=backward))
    for backward in (False, True):
        job("_gelu_tanh", {n: f"*{dt}" for n in ["X", "DY", "OUT"]}, (), dict(BACKWARD=backward, BLOCK=1024))
    for grad in (False, True):
        job("_cross_entropy_rows", {"LOGITS": f"*{dt}", "TARGETS": "*i64", "LOSS": "*fp32"}, (),
            dict(GRAD=grad, BLOCK_V=4096), warps=8)
    return jobs


def plan(archs: list, every: bool) -> list:
    """The builds, each tagged with the dtype it is for (the summary's rows)."""
    jobs = []
    for arch in archs:
        if not every:  # phi-1.5 and phi-2 training: bfloat16, head dims 64 and 80, causal
            built = [j for D in (64, 80) for j in attention_jobs(arch, "bf16", D, True, False)]
            jobs += [dict(j, dtype="bf16") for j in built + other_jobs(arch, "bf16", False)]
            continue
        for dt in ("bf16", "fp16", "fp32"):
            built = []
            for D in (32, 64, 80, 128):
                # every config of each element size (fp16's are bf16's); the mask changes no tile
                built += attention_jobs(arch, dt, D, True, dt != "fp16")
                built += attention_jobs(arch, dt, D, False, False)
            jobs += [dict(j, dtype=dt) for j in built + other_jobs(arch, dt, True)]
    return jobs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=int, action="append", choices=sorted(SHARED_LIMIT),
                   help="compute capability (repeatable); default: all of 80, 86, 89, 90")
    p.add_argument("--all", action="store_true", help="every dtype, head dim and mask; every config each arch keeps")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiling processes")
    args = p.parse_args(argv)
    if K.INTERPRET:
        sys.exit("compile_kernels.py: unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")
    archs = args.arch or sorted(SHARED_LIMIT)
    jobs = plan(archs, args.all)
    failures = [f"sm_{j['arch']}: {j['error']}" for j in jobs if "error" in j]
    jobs = [j for j in jobs if "error" not in j]
    t0 = time.time()
    results = []
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        for r in pool.map(build, jobs):
            results.append(r)
            c = r["constexprs"]
            config = f"({c['BLOCK_M']}, {c['BLOCK_N']}, {r['warps']}, {r['stages']})" if "need" in r else \
                f"{r['warps']} warps"
            dtype = r["dtype"]
            need = f"need {r['need']:6d}, " if "need" in r else ""
            print(f"sm_{r['arch']} {r['kernel']:19s} {dtype:4s} {config:17s} shared {r['shared']:6d} B ({need}limit "
                  f"{SHARED_LIMIT[r['arch']]}), {r['registers']:>3s} registers, {r['spilled']:>5s} B spilled, "
                  f"{r['seconds']:5.1f}s  " + " ".join(f"{k}={v}" for k, v in c.items() if k not in ("BLOCK_M", "BLOCK_N")),
                  flush=True)
            if r["shared"] > SHARED_LIMIT[r["arch"]]:
                failures.append(f"sm_{r['arch']} {r['kernel']} {config} {c}: shared memory {r['shared']} B is over "
                                f"the limit of {SHARED_LIMIT[r['arch']]} B: it cannot launch there")
            if "need" in r and r["shared"] > r["need"]:
                failures.append(f"sm_{r['arch']} {r['kernel']} {config} {c}: shared memory {r['shared']} B is over "
                                f"the {r['need']} B that kernels.ATTENTION_CONFIGS states: update the table")
    summary(results)
    if failures:
        print("\nFAILED:\n" + "\n".join(failures))
        sys.exit(1)
    print(f"all kernels compiled for {', '.join(f'sm_{a}' for a in archs)} ({len(results)} builds, "
          f"{time.time() - t0:.0f}s); every attention config kept fits its architecture's shared memory")


def summary(results: list) -> None:
    """Per kernel, dtype and architecture, the most over its builds: registers, spilled bytes, shared memory."""
    archs = sorted({r["arch"] for r in results})
    dtype = lambda r: r["dtype"]
    print("\nthe most over the builds above of each kernel and dtype:")
    print("| kernel | dtype | " + " | ".join(f"sm_{a}: registers / spilled B / shared B" for a in archs) + " |")
    print("|---|---|" + "---|" * len(archs))
    for kernel, dt in dict.fromkeys((r["kernel"], dtype(r)) for r in results):
        cells = []
        for a in archs:
            rs = [r for r in results if r["kernel"] == kernel and dtype(r) == dt and r["arch"] == a]
            top = lambda key: max(int(r[key]) if str(r[key]).isdigit() else -1 for r in rs)
            cells.append(f"{top('registers')} / {top('spilled')} / {top('shared')}" if rs else "-")
        print(f"| {kernel} | {dt} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
