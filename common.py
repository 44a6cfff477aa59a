"""
What several scripts share: the command line's one-line errors, devices and dtypes, atomic file
writes, FLOP counts and the peaks that MFU is measured against, and the compiled decode step.

torch is imported inside the functions that need it, so that data/ (which writes files atomically
and parses flags) runs without it.
"""

import argparse
import math
import os
import platform
import tempfile
import time


# -----------------------------------------------------------------------------
# The command line: one line per error

class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def finite_float(text: str) -> float:
    """argparse type for float flags: nan passes every < and > check (--temperature nan reached
    torch.multinomial), so nan and inf are refused here."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def run_script(main, name: str, on_interrupt: str) -> None:
    """Run a data script's main: Ctrl-C ends it with one line (on_interrupt, what to do next) and exit
    code 130, once its cleanup has run; OSError, ValueError and RuntimeError end it with one line."""
    import signal
    import sys

    def interrupted(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not break off the cleanup
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    try:
        main()
    except KeyboardInterrupt:
        print(f"{name}: error: interrupted{on_interrupt}", file=sys.stderr)
        sys.exit(130)
    except (OSError, ValueError, RuntimeError) as e:
        sys.exit(f"{name}: error: {e}")


# -----------------------------------------------------------------------------
# Devices and dtypes

DTYPES = ("float32", "bfloat16", "float16")


def resolve_device_dtype(device: str, dtype: str, local_rank: int = 0):
    """--device and --dtype as a (torch.device, torch.dtype). auto: this process's GPU (cuda:local_rank
    under torchrun) when there is one, else the CPU; bfloat16 on a GPU that has it, else float32.
    Checked before any weights are read: a device that cannot take them is not a corrupt file."""
    import torch
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device} is not a device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "meta":
        raise ValueError("--device meta holds no data and cannot run a model; use cpu, cuda, cuda:N or mps")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device} is not supported; use cpu, cuda, cuda:N or mps")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps asked for, but PyTorch sees no MPS device (an Apple GPU); use --device cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    if dtype == "auto":
        if device.type == "cuda":
            return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return device, torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype}: choose auto, {', '.join(DTYPES)}")
    return device, getattr(torch, dtype)


# -----------------------------------------------------------------------------
# Files

def write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
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


# -----------------------------------------------------------------------------
# FLOPs and peaks, for MFU

def flops_per_token(config, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), as in the PaLM paper's appendix:
    6 per weight that multiplies (the embedding lookup does not) plus 12 * layers * width * seq_len
    for attention's q.k and p.v."""
    matmul_weights = (config.n_layer * (4 * config.n_embd ** 2 + 2 * config.n_embd * config.n_inner)
                      + config.n_embd * config.vocab_size)
    return 6 * matmul_weights + 12 * config.n_layer * config.n_embd * seq_len


# dense bf16 tensor-core peaks from the vendors' datasheets, FLOP/s per GPU
GPU_BF16_PEAK = {"H200": 989e12, "H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12,
                 "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}


def sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device, dtype, n: int = 2048) -> float:
    """Measured FLOP/s of an n x n x n matmul: the roof that MFU is computed against where no
    datasheet peak is known (the CPU; device_peak)."""
    import torch
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / min(times)


def device_peak(device, dtype) -> tuple[float, str]:
    """The FLOP/s that MFU is measured against: the GPU's datasheet bf16 peak, or on the CPU (and
    on unknown GPUs) a measured large matmul in the training dtype."""
    import torch
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in GPU_BF16_PEAK.items():
            if key in name:
                return peak, f"{name} bf16 datasheet peak"
    # (CPUs have no fast float16 matmul: a smaller one keeps the measurement to seconds)
    n = 512 if device.type == "cpu" and dtype == torch.float16 else 2048
    return matmul_peak(device, dtype, n), f"measured {str(dtype).removeprefix('torch.')} matmul peak"


def machine() -> str:
    """The machine a benchmark ran on, in words."""
    import torch
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


# -----------------------------------------------------------------------------
# Decoding, compiled

def compile_decode_step(model, device):
    """model (a Phi) under torch.compile, for the one-token decode steps of Phi.generate(step=...).
    The static KV cache keeps every shape fixed, so on CUDA the step replays as a CUDA graph.

    On the CPU each Linear computes its matrix-vector product as a multiply and a sum while being
    compiled: decoding one token reads every weight once, and inductor fuses that form into one
    vectorized, multi-threaded reduction that streams the weights at the memory's speed, where the
    BLAS matrix-vector call it would otherwise make does not (bench.py sample shows the difference).
    The same math, summed in another order. (quantize.Int8Linear does the same with int8 weights.)"""
    import torch
    import torch.nn.functional as F
    if device.type == "cpu":
        def linear(self, x):
            if x.shape[-2] == 1 and torch.compiler.is_compiling():
                return (x.unsqueeze(-2) * self.weight).sum(-1) + self.bias
            return F.linear(x, self.weight, self.bias)
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.forward = linear.__get__(m)
    return torch.compile(model, dynamic=False, mode="reduce-overhead" if device.type == "cuda" else None)
