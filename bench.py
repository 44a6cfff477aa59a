"""
Benchmarks that time nanophi and a peer side by side, in one run, and print ratios.

    python bench.py sample                  # greedy decoding: nanophi vs transformers' generate
    python bench.py sample --shape phi-1.5  # the same at the 1.3B shape
    python bench.py train                   # a training step: nanophi vs transformers' PhiForCausalLM

Numbers depend on the machine: each table names it. MFU is against this machine's measured matmul
peak (a large square matmul in the same dtype), not a datasheet number.
"""

import argparse
import os
import platform
import statistics
import sys
import time

import torch

from model import Phi, PhiConfig


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048) -> float:
    """Measured FLOP/s of an n x n x n matmul: the roof that MFU is computed against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / min(times)


def hf_twin(model: Phi):
    """transformers' PhiForCausalLM sharing the very same weight tensors (no copy)."""
    from transformers import PhiConfig as HFConfig, PhiForCausalLM
    hf_cfg = {k: v for k, v in model.config.to_hf().items() if k not in ("architectures", "model_type")}
    with torch.device("meta"):
        hf = PhiForCausalLM(HFConfig(**hf_cfg))
    hf.load_state_dict(model.state_dict(), assign=True)
    # rotary inv_freq is a non-persistent buffer: rebuild it on the real device
    hf.model.rotary_emb = type(hf.model.rotary_emb)(hf.config).to(model.lm_head.weight.device)
    return hf.eval()


def decode_flops_per_token(cfg: PhiConfig, context: int) -> float:
    """2 FLOPs per weight (embedding lookup excluded) plus attention's q.k and p.v over the context."""
    weights = cfg.n_layer * (4 * cfg.n_embd ** 2 + 2 * cfg.n_embd * cfg.n_inner) + cfg.n_embd * cfg.vocab_size
    return 2 * weights + 4 * cfg.n_layer * cfg.n_embd * context


def bench_sample(args) -> None:
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    cfg = PhiConfig.from_name(args.shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = Phi(cfg).to(dtype).eval()
    hf = hf_twin(model)
    prompt = torch.randint(0, 50000, (1, args.prompt_len), device=device)
    n = args.new_tokens

    def run_ours(step=None):
        return torch.stack(list(model.generate(prompt, n, temperature=0, step=step)), 1)

    def run_hf():
        out = hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        return out[:, prompt.shape[1]:]

    compiled = torch.compile(model, dynamic=False, mode="reduce-overhead" if device.type == "cuda" else None)
    contenders = [("transformers generate", run_hf), ("nanophi", run_ours),
                  ("nanophi --compile", lambda: run_ours(compiled))]
    results, tokens = {}, {}
    for name, fn in contenders:
        t0 = time.perf_counter()
        with torch.inference_mode():
            tokens[name] = fn()  # warm-up (and compilation)
        sync(device)
        print(f"  warm-up {name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit every contender alike
        for name, fn in contenders:
            sync(device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                fn()
            sync(device)
            results.setdefault(name, []).append(n / (time.perf_counter() - t0))

    peak = matmul_peak(device, dtype)
    flops = decode_flops_per_token(cfg, args.prompt_len + n // 2)
    base = statistics.median(results["transformers generate"])
    print(f"\ngreedy decoding, {args.shape} ({model.num_params() / 1e6:.0f}M params), batch 1, "
          f"prompt {args.prompt_len}, {n} new tokens, {args.dtype}, median of {args.repeats}")
    print(f"machine: {machine()}; measured matmul peak {peak / 1e9:.0f} GFLOP/s")
    print(f"{'':24s} {'tokens/s':>10s} {'vs transformers':>16s} {'MFU':>8s}  same tokens")
    for name, _ in contenders:
        tps = statistics.median(results[name])
        same = torch.equal(tokens[name], tokens["transformers generate"])
        print(f"{name:24s} {tps:10.1f} {tps / base:15.2f}x {100 * tps * flops / peak:7.2f}%  {same}")


def bench_train(args) -> None:
    """One optimizer step (forward, backward, AdamW) on the same batch, from the same weights, with
    the same optimizer (train.make_optimizer: the recipe's AdamW): transformers' PhiForCausalLM
    (its own loss, sdpa attention), nanophi, and nanophi compiled as train.py --compile=true does."""
    import copy
    from train import TrainConfig, flops_per_token, make_optimizer
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    cfg = PhiConfig.from_name(args.shape)
    torch.manual_seed(0)
    with torch.device(device):
        ours = Phi(cfg).train()
    hf = hf_twin(copy.deepcopy(ours)).train()  # its own copy of the same weights
    compiled_model = copy.deepcopy(ours)
    compiled = torch.compile(compiled_model)
    tokens = torch.randint(0, 50000, (args.batch, args.seq_len + 1), device=device)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def stepper(model, loss_of):
        opt = make_optimizer(model, TrainConfig(), device)

        def step():
            with autocast:
                loss = loss_of()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.item()
        return step

    contenders = [
        # shift_labels: the targets as given, so that transformers' loss covers the same T positions
        ("transformers", stepper(hf, lambda: hf(input_ids=x, labels=y, shift_labels=y).loss)),
        ("nanophi", stepper(ours, lambda: ours(x, y)[1])),
        ("nanophi --compile", stepper(compiled_model, lambda: compiled(x, y)[1])),
    ]
    results, first_loss = {}, {}
    for name, step in contenders:
        t0 = time.perf_counter()
        first_loss[name] = step()  # warm-up (and compilation); from the same weights for all
        sync(device)
        print(f"  warm-up {name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit every contender alike
        for name, step in contenders:
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            results.setdefault(name, []).append(args.batch * args.seq_len / (time.perf_counter() - t0))

    peak = matmul_peak(device, dtype)
    flops = flops_per_token(cfg, args.seq_len)
    base = statistics.median(results["transformers"])
    print(f"\ntraining step (forward, backward, AdamW), {args.shape} ({ours.num_params() / 1e6:.0f}M params), "
          f"batch {args.batch} x {args.seq_len} tokens, {args.dtype}, median of {args.repeats}")
    print(f"machine: {machine()}; measured matmul peak {peak / 1e9:.0f} GFLOP/s")
    print(f"{'':20s} {'tokens/s':>10s} {'vs transformers':>16s} {'MFU':>8s}  first-step loss")
    for name, _ in contenders:
        tps = statistics.median(results[name])
        print(f"{name:20s} {tps:10.1f} {tps / base:15.2f}x {100 * tps * flops / peak:7.2f}%  "
              f"{first_loss[name]:.6f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sample", help="greedy decoding tokens/s against transformers' generate")
    s.add_argument("--shape", default="phi-mini", help="model preset (phi-mini: 6 layers, 512 wide, 8 heads)")
    s.add_argument("--new_tokens", type=int, default=128)
    s.add_argument("--prompt_len", type=int, default=16)
    s.add_argument("--repeats", type=int, default=5)
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    t = sub.add_parser("train", help="training step tokens/s against transformers' PhiForCausalLM")
    t.add_argument("--shape", default="phi-mini", help="model preset (phi-mini: 6 layers, 512 wide, 8 heads)")
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--seq_len", type=int, default=512)
    t.add_argument("--repeats", type=int, default=5)
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    t.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="autocast dtype")
    args = p.parse_args(argv)
    {"sample": bench_sample, "train": bench_train}[args.what](args)


if __name__ == "__main__":
    main()
