"""
Benchmarks that time nanophi and a peer side by side, in one run, and print ratios.

    python bench.py sample                  # greedy decoding: nanophi vs transformers' generate
    python bench.py sample --shape phi-1.5  # the same at the 1.3B shape (with int8 weights too)
    python bench.py data                    # data/prepare_textbooks.py vs raw tiktoken, same corpus; peak memory
    python bench.py kernels                 # kernels.py's Triton attention and LayerNorm vs PyTorch (GPU)
    python bench.py train                   # a training step: nanophi vs transformers' PhiForCausalLM
    python bench.py loss                    # lm_head + cross-entropy: the fused loss vs the plain one

Numbers depend on the machine: each table names it. MFU is against this machine's measured matmul
peak (a large square matmul in the same dtype), not a datasheet number.
"""

import argparse
import json
import os
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
               use: str) -> None:
    """lm_head + cross-entropy, forward and backward, for x (M, N): the plain loss (F.linear, then
    float32 for the softmax) against kernels.linear_cross_entropy (its workspace reused from call to
    call); the time, and on CUDA the memory needed beyond the inputs."""
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
    the same optimizer (train.make_optimizer: the recipe's AdamW): transformers' PhiForCausalLM
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
    import subprocess
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    cfg = PhiConfig.from_name(args.shape)
    results, first_loss = {}, {}
    for _ in range(args.rounds):
        for name in TRAIN_CONTENDERS:
            cmd = [sys.executable, os.path.abspath(__file__), "train", "--only", name, "--shape", args.shape,
                   "--batch", str(args.batch), "--seq_len", str(args.seq_len), "--repeats", str(args.repeats),
                   "--device", args.device, "--dtype", args.dtype]
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
    cfg = PhiConfig.from_name(args.shape)
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
    return {"first_loss": first_loss, "tokens_per_s": tokens_per_s}


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
    t.add_argument("--only", default=None, help=argparse.SUPPRESS)  # the child process of one contender
    lo = sub.add_parser("loss", help="lm_head + cross-entropy, forward and backward: fused against plain")
    lo.add_argument("--rows", type=int, default=4 * 512, help="tokens (batch x sequence length)")
    lo.add_argument("--hidden", type=int, default=512)
    lo.add_argument("--vocab", type=int, default=51200)
    lo.add_argument("--repeats", type=int, default=5)
    lo.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    lo.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = p.parse_args(argv)
    {"sample": bench_sample, "data": bench_data, "kernels": bench_kernels, "train": bench_train,
     "loss": bench_loss}[args.what](args)


if __name__ == "__main__":
    main()
