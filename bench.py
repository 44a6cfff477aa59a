"""
Benchmarks that time nanophi and a peer side by side, in one run, and print ratios.

    python bench.py sample                  # greedy decoding: nanophi vs transformers' generate
    python bench.py sample --shape phi-1.5  # the same at the 1.3B shape (with int8 weights too)
    python bench.py data                    # data/prepare_textbooks.py vs raw tiktoken, same corpus; peak memory
    python bench.py kernels                 # kernels.py's Triton attention and LayerNorm vs PyTorch (GPU)
    python bench.py train                   # a training step: nanophi vs transformers' PhiForCausalLM
    python bench.py loss                    # lm_head + cross-entropy: the fused loss vs the plain one
    python bench.py gpu                     # every GPU number above, in one run (JSON + Markdown)

Numbers depend on the machine: each table names it. MFU is against the device's matmul peak
(common.device_peak: a GPU's datasheet bf16/fp16 peak where it is known, else a measured large square
matmul in the same dtype, as on the CPU).
"""

import argparse
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import sysconfig
import time

import torch

from checkpoint import config_to_hf, from_state_dict
from common import compile_decode_step, flops_per_token, machine, matmul_peak, sync
from kernels import linear_cross_entropy
from model import Phi, PhiConfig

ROOT = os.path.dirname(os.path.abspath(__file__))


def hf_twin(model: Phi):
    """transformers' PhiForCausalLM sharing the very same weight tensors (no copy)."""
    from transformers import PhiConfig as HFConfig, PhiForCausalLM
    hf_cfg = {k: v for k, v in config_to_hf(model.config).items() if k not in ("architectures", "model_type")}
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


def read_bandwidth(device: torch.device, nbytes: int = 1 << 30) -> float:
    """Measured bytes/s of reading memory once (the sum of nbytes of float32): the roof for decoding,
    which reads every weight once a token."""
    x = torch.ones(nbytes // 4, device=device)
    x.sum()
    times = []
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        x.sum()
        sync(device)
        times.append(time.perf_counter() - t0)
    return nbytes / min(times)


def bench_sample(args) -> None:
    """Greedy decoding: transformers' generate, nanophi eager and compiled, and nanophi with int8
    weights (quantize.py) eager and compiled, all from the same random weights (the int8 model is
    quantized from them while "loading" them, the way --quantize int8 loads a checkpoint)."""
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    cfg = PhiConfig.from_name(args.shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = Phi(cfg).to(dtype).eval()
    hf = hf_twin(model)
    int8 = from_state_dict(cfg, dict(model.state_dict()), device=device, quantize="int8").eval()  # shares the embedding
    prompt = torch.randint(0, min(50000, cfg.vocab_size), (1, args.prompt_len), device=device)
    n = args.new_tokens

    def run(m, step=None):
        return torch.stack(list(m.generate(prompt, n, temperature=0, step=step)), 1)

    def run_hf():
        out = hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        return out[:, prompt.shape[1]:]

    compiled, int8_compiled = compile_decode_step(model, device), compile_decode_step(int8, device)
    contenders = [("transformers generate", run_hf), ("nanophi", lambda: run(model)),
                  ("nanophi --compile", lambda: run(model, compiled)), ("nanophi int8", lambda: run(int8)),
                  ("nanophi int8 --compile", lambda: run(int8, int8_compiled))]
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

    peak, bandwidth = matmul_peak(device, dtype), read_bandwidth(device)
    context = args.prompt_len + n // 2  # the mean over the decode steps
    flops = decode_flops_per_token(cfg, context)

    def bytes_per_token(m):  # every tensor but the embedding (one row of it), and the KV cache
        state = m.state_dict()
        row = state["model.embed_tokens.weight"][0]
        return (sum(t.nbytes for k, t in state.items() if k != "model.embed_tokens.weight") + row.nbytes
                + 2 * cfg.n_layer * context * cfg.n_embd * row.element_size())

    read = {name: bytes_per_token(int8 if "int8" in name else model) for name, _ in contenders}
    base = statistics.median(results["transformers generate"])
    ref = statistics.median(results["nanophi --compile"])
    print(f"\ngreedy decoding, {args.shape} ({model.num_params() / 1e6:.0f}M params), batch 1, "
          f"prompt {args.prompt_len}, {n} new tokens, {args.dtype}, median of {args.repeats}")
    print(f"machine: {machine()}; measured matmul peak {peak / 1e9:.0f} GFLOP/s, measured read bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s; weights read per token: {read['nanophi'] / 1e9:.3f} GB {args.dtype}, "
          f"{read['nanophi int8'] / 1e9:.3f} GB int8")
    print(f"{'':24s} {'tokens/s':>10s} {'vs transformers':>16s} {'vs --compile':>13s} {'GB/s':>7s} "
          f"{'of read bw':>11s} {'MFU':>8s}  same tokens")
    for name, _ in contenders:
        tps = statistics.median(results[name])
        # int8 rounds the weights: its tokens are compared with eager int8's, float32's with transformers'
        same = torch.equal(tokens[name], tokens["nanophi int8" if "int8" in name else "transformers generate"])
        print(f"{name:24s} {tps:10.1f} {tps / base:15.2f}x {tps / ref:12.2f}x {tps * read[name] / 1e9:7.1f} "
              f"{100 * tps * read[name] / bandwidth:10.1f}% {100 * tps * flops / peak:7.2f}%  {same}")
    agree = (tokens["nanophi int8"] == tokens["nanophi"]).float().mean().item()
    print(f"same tokens: float rows against transformers, int8 rows against eager int8. Greedy int8 tokens "
          f"equal float's at {100 * agree:.0f}% of the {n} positions (random weights: many near-ties)")


def run_prepare(argv: list) -> tuple:
    """data/prepare_textbooks.py in a process of its own (a script is not imported): (seconds, meta.json)."""
    out = argv[argv.index("--out_dir") + 1]
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, os.path.join(ROOT, "data", "prepare_textbooks.py"), *map(str, argv)],
                       capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode:
        sys.exit(f"bench.py: error: prepare_textbooks.py failed: {p.stderr.strip().splitlines()[-1:]}")
    with open(os.path.join(out, "meta.json")) as f:
        return seconds, json.load(f)


def bench_data(args) -> None:
    """data/prepare_textbooks.py end to end (read, filter, tokenize, decontaminate, dedup, mix, write
    the shards), in a process of its own as a user runs it, against raw tiktoken encode_ordinary_batch
    on the same documents, at 1 and --num_proc processes (threads for tiktoken). Then its peak memory
    building --memory_tokens of synthetic textbooks, one run each."""
    import shutil
    import tempfile
    from data import textbook_generator
    from tokenizer import Tokenizer
    work = tempfile.mkdtemp(prefix="nanophi_bench_data_")
    procs = sorted({1, args.num_proc})
    try:
        # the corpus: offline textbook sections (about --synthetic_tokens) and as many characters of
        # the stdlib's Python files (all of them at the default size), as two JSONL files, so that
        # both contenders read exactly the same documents
        t0, sections, chars = time.perf_counter(), [], 0
        while chars < 4 * args.synthetic_tokens:  # about 4 characters per token
            sections.append(textbook_generator.section(0, len(sections)).text)
            chars += len(sections[-1])
        gen_seconds = time.perf_counter() - t0
        code, code_chars = [], 0
        stdlib = sysconfig.get_paths()["stdlib"]
        for root, dirs, files in os.walk(stdlib):
            dirs[:] = sorted(d for d in dirs if d not in ("test", "tests", "idle_test", "site-packages", "__pycache__"))
            for name in sorted(f for f in files if f.endswith(".py")):
                try:
                    with open(os.path.join(root, name), encoding="utf-8") as f:
                        code.append(f.read())
                except (OSError, UnicodeDecodeError):
                    continue
                code_chars += len(code[-1])
                if code_chars >= chars:
                    break
            if code_chars >= chars:
                break
        paths = {}
        for name, texts in (("textbooks", sections), ("code", code)):
            paths[name] = os.path.join(work, f"{name}.jsonl")
            with open(paths[name], "w") as f:
                f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
        texts = sections + code
        mb = sum(len(t.encode()) for t in texts) / 1e6
        enc = Tokenizer().enc  # GPT-2's BPE ranks: tiktoken's r50k_base

        def raw(n):
            return lambda: sum(map(len, enc.encode_ordinary_batch(texts, num_threads=n)))

        def pipeline(n):
            def go():
                out = os.path.join(work, "out")
                _, meta = run_prepare(["--out_dir", out, "--mix", "all", "--synthetic_tokens", 0, "--text",
                                       paths["textbooks"], "--code", paths["code"], "--num_proc", n, "--force"])
                shutil.rmtree(out)
                return meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"]
            return go

        contenders = [(n, name, fn) for n in procs for name, fn in
                      (("raw tiktoken encode_ordinary_batch", raw(n)), ("prepare_textbooks.py", pipeline(n)))]
        seconds, tokens = {}, {}
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit all alike
            for n, name, fn in contenders:
                t0 = time.perf_counter()
                tokens[n, name] = fn()
                seconds.setdefault((n, name), []).append(time.perf_counter() - t0)
        print(f"\ncorpus building, {len(texts):,} documents ({len(sections):,} offline textbook sections + {len(code):,} "
              f"stdlib files, {mb:.1f} MB), median of {args.repeats}")
        print(f"machine: {machine()}")
        print(f"{'':36s} {'procs':>5s} {'tokens':>11s} {'tokens/s':>11s} {'MB/s':>7s} {'vs raw tok/s':>13s} {'vs raw MB/s':>12s}")
        rate = {}
        for n, name, _ in contenders:
            t = statistics.median(seconds[n, name])
            rate[n, name] = (tokens[n, name] / t, mb / t)
            base = rate[n, contenders[0][1]]
            print(f"{name:36s} {n:5d} {tokens[n, name]:11,d} {rate[n, name][0]:11,.0f} {rate[n, name][1]:7.2f} "
                  f"{rate[n, name][0] / base[0]:12.2f}x {rate[n, name][1] / base[1]:11.2f}x")
        if len(procs) > 1:
            print(f"speed-up from 1 to {procs[-1]} processes (threads): " + ", ".join(
                f"{name} {rate[procs[-1], name][1] / rate[1, name][1]:.2f}x" for _, name, _ in contenders[:2]))
        print("raw tiktoken counts GPT-2 tokens of every document; prepare_textbooks.py counts the phi tokens it wrote "
              "(fewer: phi has whitespace tokens, and filtered or duplicate documents are dropped)")
        print(f"offline generator (not timed above): {chars / 4 / gen_seconds:,.0f} tokens/s, one process")

        sizes = [int(x) for x in args.memory_tokens.replace("_", "").split(",") if x]
        if sizes:
            print(f"\npeak memory, synthetic textbooks only (--mix synthetic=1), --num_proc {args.num_proc}, one run each")
            print(f"{'--synthetic_tokens':>18s} {'docs kept':>10s} {'seconds':>8s} {'main MB':>8s} {'before merge':>12s} "
                  f"{'largest worker':>14s} {'index MB':>9s} {'index B/doc':>11s}")
            rows = []
            for size in sizes:
                out = os.path.join(work, "memory")
                sec, meta = run_prepare(["--out_dir", out, "--mix", "synthetic=1", "--synthetic_tokens", size,
                                         "--num_proc", args.num_proc])
                shutil.rmtree(out)
                peak, index = meta["peak_memory_mb"], meta["dedup_index"]
                rows.append((size, index["documents_kept"], peak["main_process"], index["bytes"] / 1e6))
                print(f"{size:18,d} {index['documents_kept']:10,d} {sec:8.1f} {peak['main_process']:8.1f} "
                      f"{peak['main_process_before_merge']:12.1f} {peak['largest_worker']:14.1f} "
                      f"{index['bytes'] / 1e6:9.1f} {index['bytes_per_kept_document']:11.1f}")
            for (s0, d0, m0, i0), (s1, d1, m1, i1) in zip(rows, rows[1:]):
                print(f"from {s0:,} to {s1:,} tokens: the main process grew by {m1 - m0:.1f} MB, the dedup index by "
                      f"{i1 - i0:.1f} MB ({(m1 - m0) * 1e6 / (d1 - d0):.0f} bytes of peak memory per added document)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def median_seconds(fn, device: torch.device, repeats: int = 10, inner: int = 10) -> float:
    """Seconds per call of fn: the median, over repeats, of a window of inner back-to-back calls
    (so that one synchronisation is spread over many calls). fn runs 3 times first: autotuning."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync(device)
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def fwd_bwd_seconds(f, inputs: tuple, grad_out: torch.Tensor, device: torch.device, repeats: int):
    """Seconds per call of f(*inputs) alone, and of it with the backward to every input."""
    with torch.no_grad():
        t_fwd = median_seconds(lambda: f(*inputs), device, repeats=repeats)
    t_all = median_seconds(lambda: torch.autograd.grad(f(*inputs), inputs, grad_out), device, repeats=repeats)
    return t_fwd, t_all


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30) -> float:
    """Measured bytes/s of a device-to-device copy (read + write): the roof for memory-bound kernels."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / median_seconds(lambda: dst.copy_(src), device, inner=3)


def bench_kernels(args) -> None:
    import torch.nn.functional as F
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("bench.py kernels: no CUDA GPU found; these timings need one (the kernels' tests run on "
                 "the CPU: python -m pytest tests/test_kernels.py)")
    import kernels
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        print("TRITON_INTERPRET=1 on the CPU: a dry run of this script, the numbers mean nothing")
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    torch.manual_seed(0)
    peak = matmul_peak(device, dtype, n=8192 if device.type == "cuda" else 512)
    bandwidth = copy_bandwidth(device, nbytes=1 << 30 if device.type == "cuda" else 1 << 24)
    print(f"machine: {machine()}; torch {torch.__version__}; measured {args.dtype} matmul peak "
          f"{peak / 1e12:.1f} TFLOP/s; measured copy bandwidth {bandwidth / 1e9:.0f} GB/s")

    # attention: FLOPs of the two matmuls, q k^T and p v (2 * 2 * T * T * D per head), halved when
    # causal; the backward does 2.5x the forward's matmul work (five matmuls instead of two)
    B, H, T, D, causal = args.batch, args.heads, args.seq_len, args.head_dim, not args.no_causal
    q, k, v, do = (torch.randn(B, H, T, D, device=device, dtype=dtype, requires_grad=True) for _ in range(4))
    fwd_flops = 4 * B * H * T * T * D * (0.5 if causal else 1.0)
    contenders = {
        "F.scaled_dot_product_attention": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
        "kernels.triton_attention": lambda q, k, v: kernels.triton_attention(q, k, v, causal=causal),
    }
    outputs, rows = {}, {}
    for name, f in contenders.items():
        t_fwd, t_all = fwd_bwd_seconds(f, (q, k, v), do, device, args.repeats)
        outputs[name] = f(q, k, v).detach()
        rows[name] = (fwd_flops / t_fwd, 2.5 * fwd_flops / (t_all - t_fwd), 3.5 * fwd_flops / t_all)
    diff = (outputs["kernels.triton_attention"].float() - outputs["F.scaled_dot_product_attention"].float()).abs().max()
    print(f"\nattention, B={B} H={H} T={T} D={D} {'causal' if causal else 'not causal'} {args.dtype}, "
          f"median of {args.repeats} (max |difference| of the outputs: {diff:.1e})")
    print(f"{'':32s} {'fwd TFLOP/s':>12s} {'bwd TFLOP/s':>12s} {'fwd+bwd TFLOP/s':>16s} {'fwd+bwd MFU':>12s}")
    for name, (fwd, bwd, both) in rows.items():
        print(f"{name:32s} {fwd / 1e12:12.1f} {bwd / 1e12:12.1f} {both / 1e12:16.1f} {100 * both / peak:11.1f}%")
    base, ours = rows["F.scaled_dot_product_attention"], rows["kernels.triton_attention"]
    print(f"{'ratio (kernels / SDPA)':32s} {ours[0] / base[0]:11.2f}x {ours[1] / base[1]:11.2f}x "
          f"{ours[2] / base[2]:15.2f}x")

    # layer_norm: the bytes that must move, x read and y written forward; x and dy read and dx
    # written backward (weights, bias, mean and rstd are a rounding error at these sizes)
    M, N = args.rows, args.hidden
    x = torch.randn(M, N, device=device, dtype=dtype, requires_grad=True)
    w = (1 + 0.1 * torch.randn(N, device=device, dtype=dtype)).requires_grad_()
    b = (0.1 * torch.randn(N, device=device, dtype=dtype)).requires_grad_()
    dy = torch.randn_like(x)
    size = M * N * x.element_size()
    contenders = {
        "F.layer_norm": lambda x, w, b: F.layer_norm(x, (N,), w, b, 1e-5),
        "kernels.triton_layer_norm": lambda x, w, b: kernels.triton_layer_norm(x, w, b, 1e-5),
    }
    outputs, rows = {}, {}
    for name, f in contenders.items():
        t_fwd, t_all = fwd_bwd_seconds(f, (x, w, b), dy, device, args.repeats)
        outputs[name] = f(x, w, b).detach()
        rows[name] = (2 * size / t_fwd, 3 * size / (t_all - t_fwd), 5 * size / t_all)
    diff = (outputs["kernels.triton_layer_norm"].float() - outputs["F.layer_norm"].float()).abs().max()
    print(f"\nlayer_norm, ({M}, {N}) {args.dtype}, median of {args.repeats} (max |difference| of the "
          f"outputs: {diff:.1e})")
    print(f"{'':32s} {'fwd GB/s':>12s} {'bwd GB/s':>12s} {'fwd+bwd GB/s':>16s} {'of copy':>12s}")
    for name, (fwd, bwd, both) in rows.items():
        print(f"{name:32s} {fwd / 1e9:12.0f} {bwd / 1e9:12.0f} {both / 1e9:16.0f} {100 * both / bandwidth:11.1f}%")
    base, ours = rows["F.layer_norm"], rows["kernels.triton_layer_norm"]
    print(f"{'ratio (kernels / torch)':32s} {ours[0] / base[0]:11.2f}x {ours[1] / base[1]:11.2f}x "
          f"{ours[2] / base[2]:15.2f}x")

    loss_table(x, args.vocab, device, dtype, args.repeats, use="triton")


def loss_table(x: torch.Tensor, V: int, device: torch.device, dtype: torch.dtype, repeats: int,
               use: str) -> dict:
    """lm_head + cross-entropy, forward and backward, for x (M, N): the plain loss (F.linear, then
    float32 for the softmax) against kernels.linear_cross_entropy (its workspace reused from call to
    call); the time, and on CUDA the memory needed beyond the inputs. Prints the table and returns
    its rows: name -> (seconds, peak GiB)."""
    import torch.nn.functional as F
    M, N = x.shape
    x = x.detach().requires_grad_()
    w_head = (0.02 * torch.randn(V, N, device=device, dtype=dtype)).requires_grad_()
    b_head = torch.zeros(V, device=device, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, V, (M,), device=device)
    contenders = {
        "F.linear + F.cross_entropy": lambda: F.cross_entropy(F.linear(x, w_head, b_head).float(), targets),
        "kernels.linear_cross_entropy": lambda: linear_cross_entropy(x, w_head, b_head, targets, use=use),
    }
    losses, rows = {}, {}
    for name, f in contenders.items():
        step = lambda: torch.autograd.grad(f(), (x, w_head, b_head))
        seconds = median_seconds(step, device, repeats=repeats, inner=2)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            step()
            peak = (torch.cuda.max_memory_allocated() - before) / 2 ** 30
        else:
            peak = float("nan")
        losses[name] = f().item()
        rows[name] = (seconds, peak)
    matmuls = 3 * 2 * M * N * V  # logits, dx and dW
    print(f"\nlm_head + cross-entropy, fwd+bwd, ({M}, {N}) x vocab {V} {str(dtype)[6:]}, median of {repeats} "
          f"(losses {' and '.join(f'{v:.4f}' for v in losses.values())})")
    print(f"{'':32s} {'ms':>12s} {'GFLOP/s':>12s} {'peak GiB':>12s}")
    for name, (seconds, peak) in rows.items():
        print(f"{name:32s} {1e3 * seconds:12.2f} {matmuls / seconds / 1e9:12.1f} {peak:12.2f}")
    base, ours = rows["F.linear + F.cross_entropy"][0], rows["kernels.linear_cross_entropy"][0]
    print(f"{'ratio (fused / plain)':32s} {base / ours:11.2f}x")
    return rows


def bench_loss(args) -> None:
    """The training loss alone on any device (bench.py kernels includes it on CUDA, at phi-1.5's width)."""
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    print(f"machine: {machine()}; torch {torch.__version__}")
    x = torch.randn(args.rows, args.hidden, device=device, dtype=dtype)
    loss_table(x, args.vocab, device, dtype, args.repeats, use="auto")


TRAIN_CONTENDERS = ("transformers", "nanophi", "nanophi --compile")


def bench_train(args) -> None:
    """One optimizer step (forward, backward, AdamW) on the same batch, from the same weights, with
    the same optimizer (Phi.configure_optimizer with the recipe's AdamW settings, TrainConfig's
    defaults in train.py, which a benchmark may not import): transformers' PhiForCausalLM
    (its own loss, sdpa attention), nanophi (its loss as train.py asks for it: model(x, y)),
    and nanophi compiled as train.py --compile=true does.

    Each contender runs in a process of its own (bench.py train --only NAME), as a training run
    would: in one shared process the contenders' memory affects each other's speed (transformers'
    step allocates ~2 GB of fresh tensors a step, and was measured 20-25% slower next to another
    model than alone). The processes take turns, rounds times, so that drifts in machine load hit
    every contender alike; the table shows the median over all their timed steps."""
    if args.only:
        print(json.dumps(train_steps(args)))
        return
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    cfg = PhiConfig.from_name(args.shape)
    results, first_loss = {}, {}
    for _ in range(args.rounds):
        for name in TRAIN_CONTENDERS:
            cmd = [sys.executable, os.path.abspath(__file__), "train", "--only", name, "--shape", args.shape,
                   "--batch", str(args.batch), "--seq_len", str(args.seq_len), "--repeats", str(args.repeats),
                   "--device", args.device, "--dtype", args.dtype, "--kernels", args.kernels]
            out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            if out.returncode != 0:
                sys.exit(f"bench.py train: the {name!r} process failed (exit {out.returncode}); its error is above")
            run = json.loads(out.stdout.strip().splitlines()[-1])
            results.setdefault(name, []).extend(run["tokens_per_s"])
            first_loss[name] = run["first_loss"]
    peak = matmul_peak(device, dtype)
    flops = flops_per_token(cfg, args.seq_len)
    base = statistics.median(results["transformers"])
    with torch.device("meta"):  # shapes only
        n_params = Phi(cfg).num_params()
    print(f"\ntraining step (forward, backward, AdamW), {args.shape} ({n_params / 1e6:.0f}M params), "
          f"batch {args.batch} x {args.seq_len} tokens, {args.dtype}, median of {args.rounds} x {args.repeats} "
          f"steps, each contender in its own process")
    print(f"machine: {machine()}; measured matmul peak {peak / 1e9:.0f} GFLOP/s")
    print(f"{'':20s} {'tokens/s':>10s} {'vs transformers':>16s} {'MFU':>8s}  first-step loss")
    for name in TRAIN_CONTENDERS:
        tps = statistics.median(results[name])
        print(f"{name:20s} {tps:10.1f} {tps / base:15.2f}x {100 * tps * flops / peak:7.2f}%  "
              f"{first_loss[name]:.6f}")


def train_steps(args) -> dict:
    """The child of bench_train: one contender, warmed up (and compiled), then args.repeats timed
    steps. The same seed gives every contender the same weights and batch."""
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    cfg = dataclasses.replace(PhiConfig.from_name(args.shape), kernels=args.kernels)
    with torch.device(device):
        ours = Phi(cfg).train()
    tokens = torch.randint(0, min(50000, cfg.vocab_size), (args.batch, args.seq_len + 1), device=device)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    if args.only == "transformers":
        model = hf_twin(ours).train()  # the same weight tensors
        # shift_labels: the targets as given, so that transformers' loss covers the same T positions
        loss_of = lambda: model(input_ids=x, labels=y, shift_labels=y).loss
    elif args.only in ("nanophi", "nanophi --compile"):
        model = ours
        forward = torch.compile(ours) if args.only == "nanophi --compile" else ours
        loss_of = lambda: forward(x, y)
    else:
        sys.exit(f"bench.py train: --only {args.only!r}: choose one of {', '.join(TRAIN_CONTENDERS)}")
    # the recipe's AdamW (train.py's defaults) over ours's tensors, which hf_twin shares
    opt = ours.configure_optimizer(2e-4, 0.1, (0.9, 0.98), 1e-7, device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step():
        with autocast:
            loss = loss_of()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    t0 = time.perf_counter()
    first_loss = step()  # warm-up (and compilation)
    sync(device)
    print(f"  warm-up {args.only}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    tokens_per_s = []
    for _ in range(args.repeats):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        tokens_per_s.append(args.batch * args.seq_len / (time.perf_counter() - t0))
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None
    return {"first_loss": first_loss, "tokens_per_s": tokens_per_s, "peak_gib": peak}


# -----------------------------------------------------------------------------
# Every GPU number in one run: python bench.py gpu

GPU_SIZES = {  # the run's shapes; the dry run's are tiny, for the interpreter
    "gpu": dict(heads=32, tokens=16384, seq_lens=(512, 1024, 2048, 4096, 8192), head_dims=(64, 80),
                layer_norm=(16384, 2048), gelu=(16384, 8192), rope=(8, 2048, 32, 64, 32), loss=(16384, 2048, 51200),
                train=("phi-1.5", 8, 2048, 5), decode=("phi-1.5", 16, 128)),
    "dry": dict(heads=2, tokens=128, seq_lens=(64, 128), head_dims=(64, 80), layer_norm=(64, 256), gelu=(64, 512),
                rope=(1, 64, 2, 64, 32), loss=(64, 64, 512), train=("phi-test", 2, 32, 1), decode=("phi-test", 4, 8)),
}


def bench_gpu(args) -> None:
    """All the GPU numbers of BENCHMARKS.md, in one process (and its children), within --budget
    seconds: the gpu-marked tests; what the first-use probe costs; attention forward and
    forward+backward against SDPA at phi-1.5's and phi-2's head dims, T = 512 to 8192; LayerNorm,
    rope, GELU and the fused loss against PyTorch; one compiled phi-1.5 training step at T = 2048
    with Triton and with PyTorch kernels; bf16 decoding with CUDA graphs. Writes args.out (JSON) and
    the same name with .md (a Markdown block for BENCHMARKS.md), and prints the block last. A part
    that fails is recorded and the others still run (exit status 1 then); a part that would start
    after args.budget seconds is skipped, and the children's time is capped by it.
    --dry-run: tiny shapes, on the CPU through Triton's interpreter; its numbers mean nothing."""
    import kernels
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        sys.exit("bench.py gpu: no CUDA GPU found. To check the script without one: "
                 "TRITON_INTERPRET=1 python bench.py gpu --dry-run")
    if dry and not torch.cuda.is_available() and not kernels.INTERPRET:
        sys.exit("bench.py gpu --dry-run without a GPU: set TRITON_INTERPRET=1 (before python starts)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # bfloat16 on the GPU; the interpreter's bfloat16 is broken, so the CPU's dry run is float32
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    size = GPU_SIZES["dry" if dry else "gpu"]
    start = time.perf_counter()
    report = {"what": "python bench.py gpu" + (" --dry-run" if dry else ""),
              "dry_run": dry, "machine": machine(), "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
              "triton": getattr(kernels.triton, "__version__", None), "dtype": str(dtype).removeprefix("torch."),
              "parts": {}, "errors": {}, "seconds": {}}
    if dry:
        print("DRY RUN: tiny shapes" + (" through Triton's interpreter on the CPU" if device.type == "cpu" else "")
              + "; it checks that the script runs, its numbers mean nothing")

    def part(name, fn):
        if time.perf_counter() - start > args.budget:
            report["errors"][name] = f"skipped: the run's budget of {args.budget:.0f} s was spent"
            return
        t0 = time.perf_counter()
        print(f"\n== {name}", flush=True)
        try:
            report["parts"][name] = fn()
        except Exception as e:  # recorded; the other parts still run
            import traceback
            traceback.print_exc()
            report["errors"][name] = " ".join(f"{type(e).__name__}: {e}".split())[:500]
        report["seconds"][name] = round(time.perf_counter() - t0, 1)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    part("machine", lambda: gpu_machine(device, dtype, dry))
    part("tests", lambda: gpu_tests(max(60.0, 0.6 * args.budget - (time.perf_counter() - start))))
    part("probe", lambda: gpu_probe(device, dtype, size))
    part("attention", lambda: gpu_attention(device, dtype, size))
    part("memory_bound", lambda: gpu_memory_bound(device, dtype, size, report["parts"].get("machine", {})))
    part("loss", lambda: gpu_loss(device, dtype, size))
    part("train", lambda: gpu_train(device, dtype, size, dry, lambda: args.budget - (time.perf_counter() - start)))
    part("decode", lambda: gpu_decode(device, dtype, size, report["parts"].get("machine", {})))
    report["seconds"]["total"] = round(time.perf_counter() - start, 1)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    markdown = gpu_markdown(report)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(markdown)
    print(f"\nwrote {args.out} and {os.path.splitext(args.out)[0]}.md ({report['seconds']['total']:.0f} s)\n")
    print(markdown)
    if report["errors"]:
        sys.exit(1)


def gpu_time(fn, device: torch.device) -> float:
    """Seconds per call: on CUDA the median of triton.testing.do_bench (CUDA events, the L2 cleared
    between calls), elsewhere of wall-clock windows."""
    if device.type == "cuda":
        import triton.testing
        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3
    return median_seconds(fn, device, repeats=2, inner=1)


def gpu_machine(device: torch.device, dtype: torch.dtype, dry: bool) -> dict:
    from common import device_peak
    import kernels
    n = 8192 if not dry else 256
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))  # random data: zeros run faster
    matmul = 2 * n ** 3 / gpu_time(lambda: a @ b, device)
    nbytes = (2 << 30) if not dry else (1 << 22)
    src = torch.randn(nbytes // 2, device=device, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    copy = 2 * nbytes / gpu_time(lambda: dst.copy_(src), device)  # bytes read plus bytes written
    peak, peak_name = device_peak(device, dtype)
    info = {"matmul_tflops": matmul / 1e12, "copy_gbs": copy / 1e9, "peak_tflops": peak / 1e12, "peak_name": peak_name}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {"card": kernels.describe(device), "multiprocessors": props.multi_processor_count,
                 "memory_gib": props.total_memory / 2 ** 30,
                 "shared_memory_per_block": kernels.shared_memory_per_block(device)}
    print(info)
    return info


def gpu_tests(timeout: float) -> dict:
    """The gpu-marked tests, in a process of their own."""
    root = os.path.dirname(os.path.abspath(__file__))
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "tests/test_kernels.py"]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
    print(out.stdout[-6000:] + out.stderr[-2000:])
    summary = next((line.strip("= ") for line in reversed(out.stdout.splitlines())
                    if re.search(r"\d+ (passed|failed|skipped|deselected|error)", line)), "no summary line")
    if out.returncode not in (0, 5):  # 5: no test ran (the dry run on the CPU skips them all)
        raise RuntimeError(f"gpu-marked tests failed: {summary}")
    return {"summary": summary}


def gpu_probe(device: torch.device, dtype: torch.dtype, size: dict) -> list:
    """What kernels.py's first-use probe costs at phi-1.5's shapes: a first run (compiling, or loading
    from triton's cache what the tests compiled) and a second, the probe's own work."""
    import kernels
    rows = []
    for kernel, dims, causal in [("attention", (64,), True), ("layer_norm", (2048,), False), ("rope", (64, 32), False),
                                 ("gelu_tanh", (), False), ("cross_entropy", (size["loss"][2],), False)]:
        seconds = []
        for _ in range(2):
            sync(device)
            t0 = time.perf_counter()
            passed = kernels._probe(kernel, device, dtype, dims, causal)
            sync(device)
            seconds.append(time.perf_counter() - t0)
        rows.append({"kernel": kernel, "dims": dims, "passed": passed, "first_ms": 1e3 * seconds[0],
                     "second_ms": 1e3 * seconds[1]})
        print(rows[-1], flush=True)
    return rows


def gpu_attention(device: torch.device, dtype: torch.dtype, size: dict) -> list:
    """TFLOP/s of the two matmuls (4 B H T^2 D, halved for causal; the backward does 2.5x the forward's)."""
    import torch.nn.functional as F
    import kernels
    rows = []
    for D in size["head_dims"]:
        for T in size["seq_lens"]:
            B, H = max(1, size["tokens"] // T), size["heads"]
            q, k, v, do = (torch.randn(B, H, T, D, device=device, dtype=dtype, requires_grad=True) for _ in range(4))
            flops = 4 * B * H * T * T * D / 2
            row = {"D": D, "T": T, "B": B, "H": H}
            outs = {}
            for name, f in [("sdpa", lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
                            ("triton", lambda: kernels.triton_attention(q, k, v, causal=True))]:
                with torch.no_grad():
                    outs[name] = f()
                    fwd = gpu_time(f, device)
                both = gpu_time(lambda: torch.autograd.grad(f(), (q, k, v), do), device)
                row[name] = {"fwd_tflops": flops / fwd / 1e12, "fwd_bwd_tflops": 3.5 * flops / both / 1e12}
            row["max_abs_difference"] = (outs["triton"].float() - outs["sdpa"].float()).abs().max().item()
            row["fwd_ratio"] = row["triton"]["fwd_tflops"] / row["sdpa"]["fwd_tflops"]
            row["fwd_bwd_ratio"] = row["triton"]["fwd_bwd_tflops"] / row["sdpa"]["fwd_bwd_tflops"]
            print(row, flush=True)
            rows.append(row)
    return rows


def gpu_memory_bound(device: torch.device, dtype: torch.dtype, size: dict, machine_info: dict) -> list:
    """GB/s of LayerNorm, rope and GELU, forward and forward+backward, against PyTorch's, counting the
    bytes that must move (forward: x read, y written; backward: x and dy read, dx written)."""
    import kernels
    M, N = size["layer_norm"]
    x = torch.randn(M, N, device=device, dtype=dtype)
    w, b = 1 + 0.1 * torch.randn(N, device=device, dtype=dtype), 0.1 * torch.randn(N, device=device, dtype=dtype)
    Bg, T, H, D, rd = size["rope"]
    xr = torch.randn(Bg, T, H, D, device=device, dtype=dtype).transpose(1, 2)  # the model's layout
    angles = torch.arange(T, device=device)[:, None] * 10000.0 ** (-torch.arange(0, rd, 2, device=device) / rd)
    cos, sin = (f(torch.cat((angles, angles), -1)).to(dtype) for f in (torch.cos, torch.sin))
    xg = 3 * torch.randn(*size["gelu"], device=device, dtype=dtype)
    cases = [("layer_norm", (x, w, b), lambda use: lambda x, w, b: kernels.layer_norm(x, w, b, 1e-5, use)),
             ("rope", (xr,), lambda use: lambda x: kernels.rope(x, cos, sin, use)),
             ("gelu_tanh", (xg,), lambda use: lambda x: kernels.gelu_tanh(x, use))]
    rows = []
    for name, inputs, fn in cases:
        inputs = [t.detach().requires_grad_() for t in inputs]
        nbytes = inputs[0].numel() * inputs[0].element_size()
        dy = torch.randn_like(inputs[0])
        row = {"kernel": name, "shape": list(inputs[0].shape)}
        for use in ("torch", "triton"):
            f = fn(use)
            with torch.no_grad():
                fwd = gpu_time(lambda: f(*inputs), device)
            both = gpu_time(lambda: torch.autograd.grad(f(*inputs), inputs, dy), device)
            row[use] = {"fwd_gbs": 2 * nbytes / fwd / 1e9, "fwd_bwd_gbs": 5 * nbytes / both / 1e9}
        row["fwd_bwd_ratio"] = row["triton"]["fwd_bwd_gbs"] / row["torch"]["fwd_bwd_gbs"]
        if machine_info.get("copy_gbs"):
            row["triton_of_copy"] = row["triton"]["fwd_bwd_gbs"] / machine_info["copy_gbs"]
        print(row, flush=True)
        rows.append(row)
    return rows


def gpu_loss(device: torch.device, dtype: torch.dtype, size: dict) -> dict:
    M, N, V = size["loss"]
    rows = loss_table(torch.randn(M, N, device=device, dtype=dtype), V, device, dtype, repeats=5, use="auto")
    (plain_s, plain_gib), (fused_s, fused_gib) = rows.values()
    return {"rows": M, "hidden": N, "vocab": V, "plain_ms": 1e3 * plain_s, "fused_ms": 1e3 * fused_s,
            "plain_peak_gib": plain_gib, "fused_peak_gib": fused_gib}


def gpu_train(device: torch.device, dtype: torch.dtype, size: dict, dry: bool, seconds_left) -> list:
    """One training step (forward, backward, AdamW), compiled as train.py compiles it, each in a
    process of its own: PhiConfig.kernels "auto" (Triton, after its probe) and "torch". A batch that
    does not fit is halved. The dry run cannot compile Triton's interpreter: its Triton step is eager."""
    shape, batch, T, repeats = size["train"]
    rows = []
    for kernels_ in ("auto", "torch"):
        compiled = not (dry and device.type == "cpu" and kernels_ != "torch")
        b, use = batch, "triton" if dry and device.type == "cpu" and kernels_ == "auto" else kernels_
        while True:
            cmd = [sys.executable, os.path.abspath(__file__), "train", "--only",
                   "nanophi --compile" if compiled else "nanophi", "--shape", shape, "--batch", str(b),
                   "--seq_len", str(T), "--repeats", str(repeats), "--device", device.type,
                   "--dtype", "bfloat16" if dtype == torch.bfloat16 else "float32",
                   "--kernels", use]
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 timeout=max(30.0, seconds_left()))
            if out.returncode == 0 or "OutOfMemoryError" not in out.stderr or b == 1:
                break
            b //= 2
        if out.returncode != 0:
            raise RuntimeError(f"the training step with kernels={use!r} failed: {out.stderr.strip()[-1500:]}")
        run = json.loads(out.stdout.strip().splitlines()[-1])
        cfg = PhiConfig.from_name(shape)
        tps = statistics.median(run["tokens_per_s"])
        rows.append({"kernels": use, "compiled": compiled, "shape": shape, "batch": b, "seq_len": T,
                     "tokens_per_s": tps, "flops_per_token": flops_per_token(cfg, T),
                     "peak_gib": run["peak_gib"], "first_loss": run["first_loss"],
                     "warm_up": [line for line in out.stderr.splitlines() if "warm-up" in line]})
        print(rows[-1], flush=True)
    return rows


def gpu_decode(device: torch.device, dtype: torch.dtype, size: dict, machine_info: dict) -> dict:
    """Greedy decoding, batch 1, the decode step compiled (CUDA graphs on the GPU): tokens/s, and
    against the bound of reading every weight and the KV cache once per token at copy bandwidth."""
    shape, prompt_len, n = size["decode"]
    cfg = PhiConfig.from_name(shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = Phi(cfg).to(dtype).eval()
    prompt = torch.randint(0, min(50000, cfg.vocab_size), (1, prompt_len), device=device)
    step = compile_decode_step(model, device)
    run = lambda s=None: torch.stack(list(model.generate(prompt, n, temperature=0, step=s)), 1)
    eager = run()
    for _ in range(2):  # compilation, then CUDA graph capture
        compiled = run(step)
    seconds = []
    for _ in range(3):
        sync(device)
        t0 = time.perf_counter()
        run(step)
        sync(device)
        seconds.append(time.perf_counter() - t0)
    tps = n / statistics.median(seconds)
    element = torch.finfo(dtype).bits // 8
    weights = (model.num_params() - cfg.vocab_size * cfg.n_embd) * element  # the embedding: one row a token
    kv_cache = 2 * cfg.n_layer * cfg.n_embd * (prompt_len + n // 2) * element
    bound = machine_info.get("copy_gbs", float("nan")) * 1e9 / (weights + kv_cache)
    info = {"shape": shape, "prompt": prompt_len, "new_tokens": n, "tokens_per_s": tps, "bound_tokens_per_s": bound,
            "of_bound": tps / bound, "same_tokens_as_eager": torch.equal(eager, compiled)}
    print(info)
    return info


def gpu_markdown(r: dict) -> str:
    """The report as a Markdown block for BENCHMARKS.md."""
    p, m = r["parts"], r["parts"].get("machine", {})
    f = lambda v, fmt=".1f": "-" if v is None else format(v, fmt)
    out = [f"### `{r['what']}`, {r['date']}" + (" (DRY RUN: tiny shapes, the numbers mean nothing)" if r["dry_run"] else ""),
           "",
           f"Machine: {m.get('card', r['machine'])}, torch {r['torch']}, triton {r['triton']}, {r['dtype']}. Measured: "
           f"{r['dtype']} matmul {f(m.get('matmul_tflops'))} TFLOP/s, copy {f(m.get('copy_gbs'), '.0f')} GB/s (read + "
           f"write); MFU against {m.get('peak_name', '?')} {f(m.get('peak_tflops'), '.0f')} TFLOP/s. "
           f"Run time {r['seconds'].get('total', 0):.0f} s.", ""]
    if "tests" in p:
        out += [f"gpu-marked tests: {p['tests']['summary']}", ""]
    if "probe" in p:
        out += ["first-use probe, ms (first run with compilation or triton's cache, second run): " + "; ".join(
            f"{x['kernel']} {x['first_ms']:.0f} / {x['second_ms']:.1f}" + ("" if x["passed"] else " FAILED")
            for x in p["probe"]), ""]
    if "attention" in p:
        out += ["| attention, causal | B x H | SDPA fwd | Triton fwd | ratio | SDPA fwd+bwd | Triton fwd+bwd | ratio |",
                "|---|---|---|---|---|---|---|---|"]
        for a in p["attention"]:
            out.append(f"| D={a['D']}, T={a['T']} | {a['B']} x {a['H']} | {a['sdpa']['fwd_tflops']:.1f} | "
                       f"{a['triton']['fwd_tflops']:.1f} | {a['fwd_ratio']:.2f}x | {a['sdpa']['fwd_bwd_tflops']:.1f} | "
                       f"{a['triton']['fwd_bwd_tflops']:.1f} | {a['fwd_bwd_ratio']:.2f}x |")
        out += ["", "(TFLOP/s; target: Triton at least 1.0x SDPA, forward and backward)", ""]
    if "memory_bound" in p:
        out += ["| kernel | shape | PyTorch fwd / fwd+bwd GB/s | Triton fwd / fwd+bwd GB/s | ratio (fwd+bwd) | Triton of copy |",
                "|---|---|---|---|---|---|"]
        for k in p["memory_bound"]:
            out.append(f"| {k['kernel']} | {tuple(k['shape'])} | {k['torch']['fwd_gbs']:.0f} / {k['torch']['fwd_bwd_gbs']:.0f}"
                       f" | {k['triton']['fwd_gbs']:.0f} / {k['triton']['fwd_bwd_gbs']:.0f} | {k['fwd_bwd_ratio']:.2f}x | "
                       f"{100 * k.get('triton_of_copy', float('nan')):.0f}% |")
        out += ["", "(target: LayerNorm at least 70% of copy bandwidth)", ""]
    if "loss" in p:
        lo = p["loss"]
        out += [f"lm_head + loss, fwd+bwd, ({lo['rows']}, {lo['hidden']}) x {lo['vocab']}: plain {lo['plain_ms']:.2f} ms, "
                f"peak {f(lo['plain_peak_gib'], '.2f')} GiB; fused {lo['fused_ms']:.2f} ms, peak "
                f"{f(lo['fused_peak_gib'], '.2f')} GiB", ""]
    if "train" in p:
        out += ["| training step | batch x T | tokens/s | MFU | MFU of measured matmul | peak GiB | first-step loss |",
                "|---|---|---|---|---|---|---|"]
        for t in p["train"]:
            flops = t["tokens_per_s"] * t["flops_per_token"]
            out.append(f"| {t['shape']}, kernels={t['kernels']}{', compiled' if t['compiled'] else ', eager'} | "
                       f"{t['batch']} x {t['seq_len']} | {t['tokens_per_s']:,.0f} | "
                       f"{100 * flops / (1e12 * m.get('peak_tflops', float('nan'))):.1f}% | "
                       f"{100 * flops / (1e12 * m.get('matmul_tflops', float('nan'))):.1f}% | {f(t['peak_gib'], '.1f')} | "
                       f"{t['first_loss']:.4f} |")
        out += ["", "(target: MFU at least 50% on one H100)", ""]
    if "decode" in p:
        d = p["decode"]
        out += [f"decode, {d['shape']}, batch 1, prompt {d['prompt']}, {d['new_tokens']} new tokens, compiled step: "
                f"{d['tokens_per_s']:.1f} tokens/s, {100 * d['of_bound']:.0f}% of the {d['bound_tokens_per_s']:.0f} "
                f"tokens/s that reading the weights and KV cache at copy bandwidth allows (target 70%); same tokens "
                f"as eager: {d['same_tokens_as_eager']}", ""]
    for name, error in r["errors"].items():
        out.append(f"**{name}: {error}**")
    return "\n".join(out).rstrip() + "\n"


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
    d = sub.add_parser("data", help="data/prepare_textbooks.py against raw tiktoken on the same corpus; its peak memory")
    d.add_argument("--synthetic_tokens", type=int, default=3_000_000, help="size of the textbook part of the corpus")
    d.add_argument("--num_proc", type=int, default=os.cpu_count() or 1)
    d.add_argument("--repeats", type=int, default=3)
    d.add_argument("--memory_tokens", default="10_000_000,100_000_000",
                   help="corpus sizes of the peak-memory runs, comma-separated ('' for none)")
    k = sub.add_parser("kernels", help="kernels.py's Triton attention and LayerNorm against PyTorch (CUDA)")
    k.add_argument("--batch", type=int, default=8)
    k.add_argument("--heads", type=int, default=32)
    k.add_argument("--seq_len", type=int, default=2048)
    k.add_argument("--head_dim", type=int, default=64)
    k.add_argument("--no_causal", action="store_true", help="attention without the causal mask")
    k.add_argument("--rows", type=int, default=8 * 2048, help="layer_norm rows (batch x tokens)")
    k.add_argument("--hidden", type=int, default=2048, help="layer_norm hidden size (and lm_head's input)")
    k.add_argument("--vocab", type=int, default=51200, help="vocabulary of the cross-entropy")
    k.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    k.add_argument("--repeats", type=int, default=10)
    t = sub.add_parser("train", help="training step tokens/s against transformers' PhiForCausalLM")
    t.add_argument("--shape", default="phi-mini", help="model preset (phi-mini: 6 layers, 512 wide, 8 heads)")
    t.add_argument("--batch", type=int, default=4)
    t.add_argument("--seq_len", type=int, default=512)
    t.add_argument("--repeats", type=int, default=5)
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    t.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="autocast dtype")
    t.add_argument("--rounds", type=int, default=2, help="turns each contender's process takes")
    t.add_argument("--kernels", default="auto", choices=["auto", "triton", "torch"], help="nanophi's PhiConfig.kernels")
    t.add_argument("--only", default=None, help=argparse.SUPPRESS)  # the child process of one contender
    lo = sub.add_parser("loss", help="lm_head + cross-entropy, forward and backward: fused against plain")
    lo.add_argument("--rows", type=int, default=4 * 512, help="tokens (batch x sequence length)")
    lo.add_argument("--hidden", type=int, default=512)
    lo.add_argument("--vocab", type=int, default=51200)
    lo.add_argument("--repeats", type=int, default=5)
    lo.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    lo.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    g = sub.add_parser("gpu", help="every GPU number of BENCHMARKS.md in one run (JSON and Markdown)")
    g.add_argument("--out", default="bench_gpu.json", help="the JSON file; the Markdown goes beside it (.md)")
    g.add_argument("--budget", type=float, default=400.0, help="seconds after which no further part starts")
    g.add_argument("--dry-run", action="store_true", help="tiny shapes, to check the script (TRITON_INTERPRET=1 "
                   "without a GPU); its numbers mean nothing")
    args = p.parse_args(argv)
    {"sample": bench_sample, "data": bench_data, "kernels": bench_kernels, "train": bench_train,
     "loss": bench_loss, "gpu": bench_gpu}[args.what](args)


if __name__ == "__main__":
    main()
