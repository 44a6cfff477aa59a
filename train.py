"""
Train phi on the token files of data/prepare_textbooks.py: from scratch with the recipe of the
phi-1.5 report (the default), or fine-tuning official weights; on one device or many.

    python train.py --config=demo                          # the CPU demo: phi-nano, in minutes
    python train.py                                        # one device (the phi-1.5 recipe)
    torchrun --standalone --nproc_per_node=8 train.py      # DDP on 8 GPUs (NCCL; gloo on the CPU)
    torchrun --nnodes=4 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 train.py
    python train.py --init_from=resume                     # continue the run in out_dir
    python train.py --init_from=microsoft/phi-1_5 --learning_rate=2e-5 --max_iters=1000   # fine-tune

Settings live in one dataclass, TrainConfig. --config=NAME_OR_FILE picks a preset of CONFIGS or a
JSON file of settings, then --key=value overrides any field. The resolved config is printed and
saved in every checkpoint; --init_from=resume starts from the saved one.

One optimizer step sees global_batch_size sequences of block_size tokens: each of the world_size
processes runs grad_accum = global_batch_size / (batch_size * world_size) micro-batches of
batch_size sequences, and DDP (or FSDP2 with --fsdp) averages the gradients. The data are cut into
non-overlapping windows of block_size + 1 tokens, shuffled once per epoch by a generator seeded
with (seed, epoch); the step's sequences are dealt out to processes and micro-batches by their
place in the global order, so the processes never overlap and a step's data depend only on how
many sequences came before it. That count is saved in the checkpoint: a resumed run reads exactly
the data the uninterrupted one would have read, and on the CPU its losses are the same to the bit.

out_dir/ckpt.pt is always the newest checkpoint; each save keeps the one it replaces as
out_dir/ckpt-STEP.pt (checkpoint.py). Weights that are not finite are never saved, and a NaN or
infinite loss stops the run with the checkpoint to go back to: the newest one whose next step had a
finite loss. SIGTERM saves a checkpoint at the end of the current step; under torchrun
--max-restarts a restarted run continues from ckpt.pt.
"""

import json
import math
import os
import re
import resource
import shutil
import signal
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Optional, get_type_hints

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_optimizer_state_dict)
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import (config_from_model_args, copy_command, from_state_dict, load_model, newest_checkpoint, read_checkpoint,
                        save_pretrained, tidy_checkpoints, write_checkpoint)
from common import device_peak, flops_per_token, resolve_device_dtype
from data.shards import describe, open_split
from model import PRESETS, Phi, PhiConfig


# -----------------------------------------------------------------------------
# Config

@dataclass
class TrainConfig:
    # where things are
    out_dir: str = "out"                 # checkpoints, log.jsonl, and the exported model (out_dir/hf)
    overwrite: bool = False              # start afresh in an out_dir that holds a run, deleting that run
    data_dir: str = "data/textbooks"     # data/prepare_textbooks.py's output: meta.json and uint16 token shards
    init_from: str = "scratch"           # scratch | resume | a Hugging Face phi directory or hub name | a .pt
    model: str = "phi-1.5"               # the model preset (model.PRESETS) when init_from=scratch
    dropout: Optional[float] = None      # sets the model's three dropouts; none: keep the model's (phi-1.5: 0)
    # data: one optimizer step reads global_batch_size sequences of block_size tokens
    block_size: int = 2048
    batch_size: int = 8                  # micro-batch, per process
    global_batch_size: int = 2048        # per optimizer step, reached by gradient accumulation
    max_iters: int = 35763               # 150B tokens / (2048 x 2048 tokens per step)
    # AdamW and the learning rate
    learning_rate: float = 2e-4          # the report: constant 2e-4, no warmup
    lr_schedule: str = "constant"        # constant | cosine | linear (from learning_rate down to min_lr)
    warmup_iters: int = 0                # linear warmup from 0, before any schedule
    lr_decay_iters: Optional[int] = None  # where cosine/linear reach min_lr; none: max_iters
    min_lr: float = 0.0
    weight_decay: float = 0.1            # on matrices only (weights of Linear and Embedding)
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-7
    grad_clip: float = 1.0               # max global grad norm; 0: no clipping (the report does not say)
    # precision and speed
    device: str = "auto"                 # auto: cuda:LOCAL_RANK when there is a GPU, else cpu
    dtype: str = "auto"                  # auto: bfloat16 on a GPU (float16 if it lacks bf16), float32 on CPU
    compile: Optional[bool] = None       # torch.compile the model; none: on for CUDA
    tf32: bool = True                    # TF32 matmuls for the float32 parts on CUDA
    activation_checkpointing: bool = False  # recompute each block in the backward: less memory, ~1/3 more compute
    fsdp: bool = False                   # shard parameters, gradients and optimizer state (FSDP2 fully_shard)
    # evaluation, logging, checkpoints
    eval_interval: int = 500             # val loss every this many steps (and at the end)
    eval_sequences: int = 256            # the fixed val set: this many windows, evenly spaced over the val split
    log_interval: int = 10               # print a line every this many steps (log.jsonl gets every step)
    checkpoint_interval: int = 500       # checkpoint every this many steps (and at the end, and on SIGTERM)
    keep_last: int = 3                   # older checkpoints kept (ckpt-STEP.pt) besides out_dir/ckpt.pt, the newest
    wandb_log: bool = False
    wandb_project: str = "nanophi"
    wandb_run_name: str = ""
    seed: int = 1337


CONFIGS = {
    # the recipe of the phi-1.5 report (section 2.3) on 8 GPUs of 80 GB: the defaults above
    "phi-1.5": {},
    # a small model on the CPU in minutes: 150 steps of 16 x 256 tokens (614K tokens), to a loss well
    # below the corpus's unigram entropy
    "demo": dict(out_dir="out/demo", overwrite=True, model="phi-nano", block_size=256, batch_size=16, global_batch_size=16, max_iters=150,
                 learning_rate=3e-3, lr_schedule="cosine", warmup_iters=10, min_lr=3e-4,
                 eval_interval=50, eval_sequences=32, log_interval=10, checkpoint_interval=50, keep_last=1),
}

# A resumed run must train the same model on the same windows
FIXED_ON_RESUME = ("model", "block_size", "seed")


# -----------------------------------------------------------------------------
# Training

def train(cfg: TrainConfig, ckpt: Optional[dict], world_size: int, local_rank: int) -> None:
    grad_accum = check_config(cfg, world_size)
    device, dtype = resolve_device_dtype(cfg.device, cfg.dtype, local_rank)
    master = rank() == 0
    prepare_out_dir(cfg, fresh=ckpt is None)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32
    train_data = open_tokens(cfg.data_dir, "train", cfg.block_size)
    val_data = open_tokens(cfg.data_dir, "val", cfg.block_size)
    n_train = n_windows(train_data, cfg.block_size)
    val_set = val_windows(val_data, cfg.block_size, cfg.eval_sequences)
    if len(val_set) < world_size:
        raise ConfigError(f"the val set has {len(val_set)} windows, fewer than the {world_size} processes; "
                          f"raise --eval_sequences or add data to the val split")

    raw = build(cfg, ckpt, device)  # the model itself; `model` is what runs it (compiled, DDP)
    vocab_size = raw.config.vocab_size
    model, eval_model = parallelize(raw, cfg, device, world_size)
    optimizer = raw.configure_optimizer(cfg.learning_rate, cfg.weight_decay, (cfg.beta1, cfg.beta2), cfg.eps, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    if master:  # before the RNG is set: measuring the CPU peak draws random numbers
        peak, peak_name = device_peak(device, dtype)
    step, samples_seen = restore(ckpt, raw, optimizer, scaler, cfg, world_size, device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    tokens_per_step = cfg.global_batch_size * cfg.block_size
    flops_step = flops_per_token(raw.config, cfg.block_size) * tokens_per_step
    log = Log(cfg, step, master)
    if master:
        print(json.dumps(asdict(cfg), indent=1), flush=True)
        log.write(f"model {raw.num_params() / 1e6:.1f}M parameters; {world_size} process(es) on {device.type}, "
                  f"{str(dtype).removeprefix('torch.')}; grad_accum {grad_accum}; {tokens_per_step:,} tokens "
                  f"per step; train {len(train_data):,} tokens ({n_train:,} windows), val set "
                  f"{len(val_set)} windows")
        log.write(describe(cfg.data_dir, cfg.max_iters * tokens_per_step))  # the sources' shares, and epochs
        log.write(f"unigram entropy of the train split: {unigram_entropy(train_data):.3f} nats per token "
                  f"(the loss of a model that ignores context)")
        log.write(f"MFU against {peak / 1e12:.3f} TFLOP/s per device ({peak_name})")
        log.record({"event": "resume" if ckpt is not None else "start", "step": step,
                    "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)), "world_size": world_size})
    stop = StopFlag()

    model.train()
    final_state, last_saved = None, -1
    while True:
        if step % cfg.eval_interval == 0 or step == cfg.max_iters:
            val_loss = evaluate(eval_model, val_data, val_set, cfg, vocab_size, device, autocast)
            log.write(f"step {step}: val loss {val_loss:.4f}")
            log.record({"step": step, "val_loss": val_loss})
        if step >= cfg.max_iters:
            break
        t0 = time.perf_counter()
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        for micro in range(grad_accum):
            first = first_sample(samples_seen, micro, rank(), world_size, cfg.batch_size)
            x, y = get_batch(train_data, train_windows(n_train, cfg.seed, first, cfg.batch_size),
                             cfg.block_size, vocab_size, device)
            last = micro == grad_accum - 1
            if cfg.fsdp:
                raw.set_requires_gradient_sync(last)
            sync = model.no_sync() if isinstance(model, DDP) and not last else nullcontext()
            with sync, autocast:
                loss = model(x, y) / grad_accum  # the loss fused with lm_head: no logits tensor
            scaler.scale(loss).backward()
            loss_sum += loss.detach().float()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip or math.inf)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
            grad_norm = grad_norm.full_tensor()
        # one all-reduce carries the loss and the stop request, so that all ranks decide alike
        stats = torch.stack([loss_sum, torch.tensor(float(stop.requested), device=device)])
        if dist.is_initialized():
            dist.all_reduce(stats)
        loss_value, stop_now = stats[0].item() / world_size, stats[1].item() > 0
        grad_norm = grad_norm.item()
        # fp16's GradScaler skips steps with inf gradients by design; otherwise they are a failure
        if not math.isfinite(loss_value) or (not scaler.is_enabled() and not math.isfinite(grad_norm)):
            raise nonfinite_error(cfg, step, f"loss {loss_value} and grad norm {grad_norm} at step {step + 1}; "
                                             f"stopped without applying it")
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        step += 1
        samples_seen += cfg.global_batch_size
        tps = tokens_per_step / dt
        rec = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tps,
               "mfu": flops_step / dt / (peak * world_size) if master else None, "peak_mem_gb": peak_memory(device)}
        log.record(rec, advance=True)
        if master and (step % cfg.log_interval == 0 or step == 1):
            log.write(f"step {step}: loss {loss_value:.4f} | lr {lr:.2e} | grad norm {grad_norm:.3f} | "
                      f"{tps:,.0f} tokens/s | MFU {100 * rec['mfu']:.2f}% | peak mem {rec['peak_mem_gb']:.2f} GB")
        if step % cfg.checkpoint_interval == 0 or step == cfg.max_iters or stop_now:
            final_state = save_checkpoint(cfg, raw, optimizer, scaler, step, samples_seen, device)
            last_saved = step
            if stop_now:
                log.write(f"SIGTERM: saved {cfg.out_dir}/ckpt.pt at step {step}; resume with --init_from=resume")
                log.close()
                return
    if last_saved != step:  # (a run resumed at its end)
        final_state = save_checkpoint(cfg, raw, optimizer, scaler, step, samples_seen, device)
    if master:  # the final model in the official layout, for transformers and for eval
        save_pretrained(from_state_dict(raw.config, dict(final_state)), os.path.join(cfg.out_dir, "hf"))
        log.write(f"done: {cfg.out_dir}/ckpt.pt (step {step}) and {cfg.out_dir}/hf (save_pretrained)")
    log.close()
    if dist.is_initialized():  # the others wait for rank 0's export: a rank that tore its process
        dist.barrier()         # group down and exited meanwhile sometimes aborted (gloo, at exit)


@torch.no_grad()
def evaluate(model, data: np.ndarray, windows: np.ndarray, cfg: TrainConfig, vocab_size: int,
             device: torch.device, autocast) -> float:
    """Mean loss over the fixed val windows; rank r takes windows r, r + world, ..."""
    model.eval()
    world = dist.get_world_size() if dist.is_initialized() else 1
    # the same number of windows on every rank: FSDP's forward is a collective
    mine = windows[:len(windows) - len(windows) % world][rank()::world]
    total = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, window count
    for i in range(0, len(mine), cfg.batch_size):
        x, y = get_batch(data, mine[i:i + cfg.batch_size], cfg.block_size, vocab_size, device)
        with autocast:
            loss = model(x, y)
        total += torch.stack([loss.double() * len(x), torch.tensor(len(x), dtype=torch.float64, device=device)])
    if dist.is_initialized():
        dist.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


class NonFiniteLoss(RuntimeError):
    pass


def nonfinite_error(cfg: TrainConfig, step: int, what: str) -> "NonFiniteLoss":
    """The error for weights after `step` that are not finite or give a non-finite loss, naming
    the checkpoint to go back to. A checkpoint of step k holds the weights that step k + 1 starts
    from: it is usable when that step's loss was finite, which holds for every k < step (the run
    got past k + 1) and not for k = step."""
    if rank() != 0:  # (rank 0 alone prints the error)
        return NonFiniteLoss(what)
    latest = os.path.join(cfg.out_dir, "ckpt.pt")
    found = newest_checkpoint(cfg.out_dir, before=step)
    if found is None:
        advice = ("No usable checkpoint is left: start again (--overwrite=true) with a lower --learning_rate, "
                  "or check the data")
    else:
        path, k = found
        copy = "" if path == latest else f"{copy_command(path, latest)}, then "
        advice = (f"The newest usable checkpoint is {path} (step {k}): {copy}resume with --init_from=resume "
                  f"and a lower --learning_rate, or check the data")
    return NonFiniteLoss(f"{what}. {advice}")


def build(cfg: TrainConfig, ckpt: Optional[dict], device: torch.device) -> Phi:
    """The model in float32 (the master weights; autocast runs the matmuls in dtype)."""
    if ckpt is not None:
        model = from_state_dict(config_from_model_args(ckpt["model_args"], f"the checkpoint in {cfg.out_dir}"), dict(ckpt["model"]),
                                torch.float32)
    elif cfg.init_from == "scratch":
        torch.manual_seed(cfg.seed)  # every rank builds the same initial weights
        model = Phi(PhiConfig(**{**PRESETS[cfg.model], "block_size": cfg.block_size}))
    else:
        model = load_model(cfg.init_from, dtype=torch.float32)
        if any(b.dtype == torch.int8 for b in model.buffers()):  # quantize.Int8Linear weights
            raise ConfigError(f"--init_from={cfg.init_from} holds int8 weights (quantize.py), which can be sampled "
                              f"and evaluated but not trained; fine-tune the float checkpoint it was made from")
    if cfg.block_size > model.config.block_size:
        raise ConfigError(f"--block_size={cfg.block_size} is longer than the model's context "
                          f"({model.config.block_size})")
    if cfg.dropout is not None:
        set_dropout(model, cfg.dropout)
    return model.to(device)


def parallelize(raw: Phi, cfg: TrainConfig, device: torch.device, world_size: int):
    """(the model to train, the model to evaluate): raw with activation checkpointing, FSDP2 sharding
    or DDP, and torch.compile, as the settings ask. Evaluation runs outside DDP: no backward to sync."""
    if cfg.activation_checkpointing:
        checkpoint_blocks(raw)
    if cfg.fsdp:
        from torch.distributed.fsdp import fully_shard
        for block in raw.model.layers:
            fully_shard(block)
        fully_shard(raw)
        warnings.filterwarnings("ignore", message=".*returned a view tensor.*")  # we never modify outputs in place
    model = torch.compile(raw) if (cfg.compile if cfg.compile is not None else device.type == "cuda") else raw
    if world_size > 1 and not cfg.fsdp:
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None), model
    return model, model


def restore(ckpt: Optional[dict], raw: Phi, optimizer, scaler, cfg: TrainConfig, world_size: int,
            device: torch.device) -> tuple[int, int]:
    """The optimizer, scaler and RNG state of a checkpoint; returns (step, samples_seen). Dropout
    draws differ between ranks: on resume each rank continues its own random stream."""
    step, samples_seen = 0, 0
    if ckpt is not None:
        set_optimizer_state_dict(raw, optimizer, ckpt["optimizer"], options=StateDictOptions(full_state_dict=True))
        if ckpt.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        step, samples_seen = ckpt["step"], ckpt["samples_seen"]
    if ckpt is not None and len(ckpt.get("rng", [])) == world_size:
        saved = ckpt["rng"][rank()]
        torch.set_rng_state(saved["cpu"])
        if device.type == "cuda" and "cuda" in saved:
            torch.cuda.set_rng_state(saved["cuda"], device)
    else:
        torch.manual_seed(cfg.seed + 1000 * rank() + step)
    return step, samples_seen


def prepare_out_dir(cfg: TrainConfig, fresh: bool) -> None:
    """Rank 0: with --overwrite, delete the run that was there (checkpoints, log, export); tidy what
    a crash in the middle of a save left."""
    os.makedirs(cfg.out_dir, exist_ok=True)
    if rank() != 0:
        return
    if fresh and cfg.overwrite:
        for name in os.listdir(cfg.out_dir):
            if re.fullmatch(r"ckpt(-\d{7})?\.pt|log\.jsonl", name):
                os.unlink(os.path.join(cfg.out_dir, name))
        shutil.rmtree(os.path.join(cfg.out_dir, "hf"), ignore_errors=True)
    tidy_checkpoints(cfg.out_dir)


def set_dropout(model: Phi, p: float) -> None:
    """Set the three dropouts (embedding, residual, attention) of a built model."""
    model.config.embd_pdrop = model.config.resid_pdrop = model.config.attn_pdrop = p
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        if hasattr(module, "attn_pdrop"):
            module.attn_pdrop = p


def checkpoint_blocks(model: Phi) -> None:
    """Activation checkpointing: each block keeps only its input for the backward and recomputes
    the rest. The blocks are wrapped in place, so parameter names do not change."""
    from torch.utils.checkpoint import checkpoint
    for block in model.model.layers:
        block.forward = (lambda *args, _f=block.forward, **kw:
                         checkpoint(_f, *args, use_reentrant=False, **kw))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then the schedule."""
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / cfg.warmup_iters
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    decay_iters = cfg.lr_decay_iters if cfg.lr_decay_iters is not None else cfg.max_iters
    progress = min(1.0, (step - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters))
    if cfg.lr_schedule == "cosine":
        return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)
    return cfg.learning_rate - progress * (cfg.learning_rate - cfg.min_lr)


def peak_memory(device: torch.device) -> float:
    """GB: the CUDA allocator's peak, or on the CPU the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


# -----------------------------------------------------------------------------
# Data: windows of block_size + 1 tokens of a split's uint16 shards, seen as one array (data/shards.py)

def open_tokens(data_dir: str, split: str, block_size: int):
    tokens, name = open_split(data_dir, split)  # a missing, odd-sized or cut short shard: one clear error
    if len(tokens) < block_size + 1:
        raise ValueError(f"{name} holds {len(tokens)} tokens, fewer than one window of block_size + 1 = "
                         f"{block_size + 1}; use more data or a smaller --block_size")
    return tokens


def n_windows(data: np.ndarray, block_size: int) -> int:
    # window w: tokens [w * block_size, (w + 1) * block_size + 1), inputs and their next tokens
    return (len(data) - 1) // block_size


@lru_cache(maxsize=2)
def epoch_order(count: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch `epoch` visits the windows: a permutation fixed by (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def first_sample(samples_seen: int, micro: int, rank: int, world_size: int, batch_size: int) -> int:
    """The global index of the first sequence of a micro-batch. A step's global_batch_size sequences
    are dealt out in order: micro-step 0 of rank 0, of rank 1, ..., then micro-step 1, and so on."""
    return samples_seen + (micro * world_size + rank) * batch_size


def train_windows(count: int, seed: int, first: int, n: int) -> np.ndarray:
    """The windows of global samples first .. first + n - 1 (sample i: epoch i // count)."""
    i = np.arange(first, first + n)
    out = np.empty(n, dtype=np.int64)
    for epoch in np.unique(i // count):
        sel = i // count == epoch
        out[sel] = epoch_order(count, seed, int(epoch))[i[sel] % count]
    return out


def get_batch(data: np.ndarray, windows: np.ndarray, block_size: int, vocab_size: int,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (B, block_size) of the given windows."""
    idx = windows[:, None] * block_size + np.arange(block_size + 1)
    tokens = torch.from_numpy(data[idx].astype(np.int64))
    if int(tokens.max()) >= vocab_size:
        raise ValueError(f"token id {int(tokens.max())} in the data is outside the model's vocabulary "
                         f"({vocab_size}); was the data tokenized for another model?")
    if device.type == "cuda":
        tokens = tokens.pin_memory().to(device, non_blocking=True)
    return tokens[:, :-1], tokens[:, 1:]


def val_windows(data: np.ndarray, block_size: int, count: int) -> np.ndarray:
    """The fixed val set: count windows evenly spaced over the file (all of them if it has fewer)."""
    total = n_windows(data, block_size)
    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(np.int64))


def unigram_entropy(data: np.ndarray, max_tokens: int = 100_000_000) -> float:
    """Entropy in nats of the token frequencies (of the first max_tokens tokens): the loss of the
    best model that ignores context, the bar a trained model's loss must go well below."""
    counts = np.bincount(data[:max_tokens], minlength=1).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# -----------------------------------------------------------------------------
# Checkpoints: model (official names), optimizer, scaler, step, data position, RNG, config

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def save_checkpoint(cfg: TrainConfig, raw: Phi, optimizer, scaler, step: int, samples_seen: int,
                    device: torch.device) -> Optional[dict]:
    """Every rank takes part (FSDP gathers the shards, the RNG states are collected); rank 0 writes
    out_dir/ckpt.pt and keeps the one it replaces (checkpoint.write_checkpoint). Weights that are
    not finite are never saved. Returns the gathered model state on rank 0 (for the export), else None."""
    # every rank decides alike, as the save is collective
    finite = torch.stack([torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all()
                          for p in raw.parameters()]).all().float()
    if dist.is_initialized():
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if not finite.item():
        raise nonfinite_error(cfg, step, f"the weights after step {step} are not finite; not saved")
    model_state = get_model_state_dict(raw, options=FULL)
    optim_state = get_optimizer_state_dict(raw, optimizer, options=FULL)
    rngs = [rng_state(device)]
    if dist.is_initialized():
        rngs = [None] * dist.get_world_size()
        dist.all_gather_object(rngs, rng_state(device))
    if rank() != 0:
        dist.barrier()
        return None
    ckpt = {"model": model_state, "model_args": asdict(raw.config), "optimizer": optim_state,
            "scaler": scaler.state_dict() if scaler.is_enabled() else None, "step": step,
            "samples_seen": samples_seen, "rng": rngs, "config": asdict(cfg)}
    write_checkpoint(cfg.out_dir, ckpt, cfg.keep_last)
    if dist.is_initialized():
        dist.barrier()
    return model_state


def rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


# -----------------------------------------------------------------------------
# Processes and logs

def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def setup_distributed(device_type_hint: str) -> tuple[int, int]:
    """Join the process group when launched by torchrun: NCCL on GPUs, gloo on the CPU.
    Returns (world_size, local_rank)."""
    if not dist.is_torchelastic_launched():
        return 1, 0
    local_rank, rank_, world = (int(os.environ[k]) for k in ("LOCAL_RANK", "RANK", "WORLD_SIZE"))
    backend = "nccl" if device_type_hint == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    # torchrun keeps one TCPStore for all restarts, and the process group's keys (each rank's
    # address) do not name the attempt: after --max-restarts brings a rank back, the others would
    # read the dead rank's address. So the keys of each attempt get their own prefix.
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not shared and rank_ == 0, multi_tenant=not shared)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(backend, store=dist.PrefixStore(f"nanophi/attempt_{attempt}", store),
                            rank=rank_, world_size=world)
    return world, local_rank


class StopFlag:
    """SIGTERM (a scheduler's preemption, or torchrun shutting down) asks for a checkpoint and a
    clean exit at the end of the current step, never in the middle of one."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True


class Log:
    """Rank 0 only: a tqdm bar, a printed line every log_interval steps, every record in
    out_dir/log.jsonl, and wandb when asked for."""

    def __init__(self, cfg: TrainConfig, step: int, enabled: bool):
        self.enabled, self.cfg, self.wandb = enabled, cfg, None
        if not enabled:
            return
        from tqdm import tqdm
        self.bar = tqdm(total=cfg.max_iters, initial=step, desc="train", dynamic_ncols=True, disable=None)
        self.file = open(os.path.join(cfg.out_dir, "log.jsonl"), "a")
        if cfg.wandb_log:
            try:
                import wandb
            except ImportError:
                raise ConfigError("--wandb_log=true needs wandb: pip install wandb") from None
            self.wandb = wandb
            wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name or None, config=asdict(cfg))

    def write(self, text: str) -> None:
        if self.enabled:
            self.bar.write(text, file=sys.stdout)

    def record(self, rec: dict, advance: bool = False) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()
        if self.wandb is not None and "step" in rec:
            self.wandb.log({k: v for k, v in rec.items() if isinstance(v, (int, float))}, step=rec["step"])
        if advance:
            self.bar.update(1)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.file.close()


# -----------------------------------------------------------------------------
# Settings from the command line

class ConfigError(ValueError):
    pass


def _parse_value(name: str, text: str, kind):
    """A command-line string as the type of the TrainConfig field."""
    optional = getattr(kind, "__args__", None)
    if optional:  # Optional[X]
        if text.lower() in ("none", "auto", ""):
            return None
        kind = next(a for a in optional if a is not type(None))
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(text.replace("_", ""))
        return kind(text)
    except ValueError:
        raise ConfigError(f"--{name}={text}: expected {kind.__name__}") from None


def _check_key(name: str) -> None:
    known = [f.name for f in fields(TrainConfig)]
    if name not in known:
        import difflib
        near = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean --{near[0]}?" if near else "see python train.py --help"
        raise ConfigError(f"unknown setting --{name}; {hint}")


def load_config_source(name: str) -> dict:
    """--config=NAME_OR_FILE: a preset of CONFIGS, or a JSON file of settings."""
    if name in CONFIGS:
        return dict(CONFIGS[name])
    if not os.path.isfile(name):
        raise ConfigError(f"--config={name}: neither a preset ({', '.join(CONFIGS)}) nor a JSON file")
    try:
        with open(name) as f:
            values = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config={name} is not valid JSON ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config={name} must hold a JSON object of settings")
    return values


def parse_args(argv: list[str]) -> tuple[Optional[str], dict]:
    """--config=NAME_OR_FILE and --key=value pairs -> (config name, {key: value text})."""
    config, overrides = None, {}
    for arg in argv:
        m = re.fullmatch(r"--([A-Za-z_][A-Za-z0-9_]*)=(.*)", arg, re.S)
        if m is None:
            raise ConfigError(f"cannot read argument {arg!r}: settings are written --key=value")
        key, value = m[1], m[2]
        if key == "config":
            config = value
        else:
            _check_key(key)
            overrides[key] = value
    return config, overrides


def resolve_config(base: dict, config_name: Optional[str], overrides: dict) -> TrainConfig:
    """base settings, then the --config preset or file, then the --key=value overrides."""
    hints = get_type_hints(TrainConfig)
    values = dict(base)
    if config_name is not None:
        for key, value in load_config_source(config_name).items():
            _check_key(key)
            values[key] = value
    for key, text in overrides.items():
        values[key] = _parse_value(key, text, hints[key])
    for key, value in values.items():  # values from JSON files: check their types too
        kind = hints[key]
        allowed = tuple(a for a in getattr(kind, "__args__", (kind,)))
        if kind is float or float in allowed:
            allowed += (int,)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ConfigError(f"setting {key}={value!r} has the wrong type (expected {kind})")
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            values[key] = float(value)
        # float("nan") and JSON's NaN and Infinity parse; no setting means anything with them
        if isinstance(values[key], float) and not math.isfinite(values[key]):
            raise ConfigError(f"--{key}={values[key]}: not a finite number")
    return TrainConfig(**values)


def check_config(cfg: TrainConfig, world_size: int) -> int:
    """Validate the settings; returns the number of gradient accumulation steps."""
    positive = ("block_size", "batch_size", "global_batch_size", "eval_interval", "eval_sequences",
                "log_interval", "checkpoint_interval", "keep_last")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"--{key} must be at least 1, got {getattr(cfg, key)}")
    if cfg.max_iters < 0 or cfg.warmup_iters < 0:
        raise ConfigError("--max_iters and --warmup_iters must be >= 0")
    if cfg.lr_schedule not in ("constant", "cosine", "linear"):
        raise ConfigError(f"--lr_schedule={cfg.lr_schedule}: choose constant, cosine or linear")
    if cfg.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(f"--dtype={cfg.dtype}: choose auto, float32, bfloat16 or float16")
    if cfg.init_from == "scratch" and cfg.model not in PRESETS:
        raise ConfigError(f"--model={cfg.model}: choose one of {', '.join(PRESETS)}")
    if cfg.dropout is not None and not 0 <= cfg.dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.learning_rate <= 0 or cfg.min_lr < 0 or cfg.grad_clip < 0 or cfg.weight_decay < 0:
        raise ConfigError("--learning_rate must be > 0; --min_lr, --grad_clip, --weight_decay >= 0")
    if cfg.fsdp and world_size == 1 and not dist.is_torchelastic_launched():
        raise ConfigError("--fsdp shards over processes: launch with torchrun")
    per_pass = cfg.batch_size * world_size
    if cfg.global_batch_size % per_pass:
        raise ConfigError(f"--global_batch_size={cfg.global_batch_size} is not divisible by batch_size "
                          f"{cfg.batch_size} x {world_size} processes = {per_pass}; change "
                          f"--batch_size or --global_batch_size")
    return cfg.global_batch_size // per_pass


def usage() -> str:
    lines = [__doc__.strip(), "", f"presets (--config=NAME): {', '.join(CONFIGS)}", "settings (--key=value):"]
    for f in fields(TrainConfig):
        lines.append(f"  --{f.name}={f.default}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(usage())
        return
    config_name, overrides = parse_args(argv)
    out_dir = overrides.get("out_dir", TrainConfig.out_dir)
    if config_name is not None and "out_dir" not in overrides:
        out_dir = load_config_source(config_name).get("out_dir", out_dir)
    latest = os.path.join(out_dir, "ckpt.pt")
    # torchrun --max-restarts starts the same command again after a failure: it continues the run
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)) > 0 and os.path.isfile(latest)
    resume = overrides.get("init_from") == "resume" or restarted
    ckpt = None
    if resume:
        ckpt = read_checkpoint(latest)
        known = {f.name for f in fields(TrainConfig)}
        saved = {k: v for k, v in ckpt["config"].items() if k in known}  # (a setting since removed)
        cfg = resolve_config({**saved, "out_dir": out_dir}, config_name, {**overrides, "init_from": "resume"})
        for key in FIXED_ON_RESUME:
            if getattr(cfg, key) != saved[key]:
                raise ConfigError(f"--{key} cannot change when resuming (the checkpoint has {saved[key]!r}, "
                                  f"this run asks for {getattr(cfg, key)!r})")
    else:
        cfg = resolve_config({}, config_name, overrides)
        if os.path.isfile(latest) and not cfg.overwrite:
            raise ConfigError(f"{latest} exists: continue it with --init_from=resume, start afresh with "
                              f"--overwrite=true, or choose another --out_dir")
    device_hint = "cuda" if (cfg.device == "auto" and torch.cuda.is_available()) or cfg.device.startswith("cuda") else "cpu"
    world_size, local_rank = setup_distributed(device_hint)
    try:
        train(cfg, ckpt, world_size, local_rank)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    try:
        main()
    except (ConfigError, OSError, ValueError, NonFiniteLoss) as e:
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"train.py: error: {e}", file=sys.stderr)
        sys.exit(1)
