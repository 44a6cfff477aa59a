"""train.py: the recipe, the data order, exact resume after kill -9, DDP and gradient accumulation
against the plain larger batch, atomic checkpoints, SIGTERM, NaN, torchrun restarts, fine-tuning
from Hugging Face weights, and clear errors for bad settings.

The runs are tiny (the phi-test preset on random tokens) so that the processes start and finish in
seconds; the references are plain PyTorch written out here, transformers, and uninterrupted runs."""

import hashlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import train
from conftest import ROOT, make_hf_model
from checkpoint import load_model
from common import resolve_device_dtype
from model import Phi, PhiConfig

VOCAB = 512     # the phi-test preset's vocabulary
BLOCK = 32
# 2 sequences per micro-batch, 4 per step: gradient accumulation is always exercised
TINY = ["--model=phi-test", f"--block_size={BLOCK}", "--batch_size=2", "--global_batch_size=4",
        "--eval_interval=4", "--eval_sequences=4", "--log_interval=1", "--learning_rate=3e-3"]


# Runs that add up the same gradients in another order (gradient accumulation, DDP, FSDP, another
# CPU) get float32 gradients that differ by rounding: for sums of up to 2^10 terms, by about
# sqrt(2^10) * 2^-24 = 2e-6 of the largest entry (measured here: ~1e-6). GRAD_RTOL allows 5x that.
GRAD_RTOL = 1e-5
# With the recipe's Adam eps of 1e-7, comparing the weights such runs reach is ill posed: a step
# moves a weight by about lr * g / (|g| + eps), so an entry whose gradient is ~1e-9 moves by anything
# from -lr to lr, decided by its rounding. So these comparisons train with eps = 1e-3, where a step
# moves a weight by at most lr / eps per unit of gradient: after `steps` steps the two runs' weights
# differ by at most steps * (lr / eps) * GRAD_RTOL * max|g| (see adam_atol).
COMPARE_EPS = 1e-3


def adam_atol(exp_avg_sq: torch.Tensor, steps: int, lr: float = 3e-3, beta2: float = 0.98) -> float:
    """The bound above for one tensor. max|g| over the steps comes from the checkpoint:
    exp_avg_sq = (1 - beta2) sum_i beta2^(steps - i) g_i^2 holds every g_i^2 with a weight of at
    least (1 - beta2) beta2^(steps - 1)."""
    max_g = math.sqrt(exp_avg_sq.max().item() / ((1 - beta2) * beta2 ** (steps - 1)))
    return steps * (lr / COMPARE_EPS) * GRAD_RTOL * max_g


def write_tokens(directory, n_train=BLOCK * 64 + 1, n_val=BLOCK * 8 + 1, seed=0):
    """A data directory in prepare_textbooks.py's format: flat uint16 ids, <|endoftext|>-free
    random text here (the phi-test vocabulary is 512)."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    # a little structure (each token often repeats the one two places back), so the loss can fall
    for name, n in (("train.bin", n_train), ("val.bin", n_val)):
        ids = rng.integers(0, VOCAB, n)
        copy = rng.random(n) < 0.5
        for i in range(2, n):
            if copy[i]:
                ids[i] = ids[i - 2]
        ids.astype(np.uint16).tofile(os.path.join(directory, name))
    return str(directory)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_tokens(tmp_path_factory.mktemp("data"))


def records(out_dir, since_last_start=False):
    with open(os.path.join(out_dir, "log.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    if since_last_start:
        starts = [i for i, r in enumerate(recs) if r.get("event")]
        recs = recs[starts[-1]:]
    return recs


def losses(out_dir, since_last_start=False) -> dict:
    return {r["step"]: r["loss"] for r in records(out_dir, since_last_start) if "loss" in r}


def cli(*args, **kw) -> list:
    return [sys.executable, os.path.join(ROOT, "train.py"), *args]


def torchrun(*args, nproc=2, extra=()) -> list:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            *extra, *args]


# every process of a comparison runs with the same threads: the matmuls' summation order depends on it
ENV = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}


def run(cmd, timeout=180, **kw):
    p = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout, **kw)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def final_state(out_dir) -> dict:
    return torch.load(os.path.join(out_dir, "ckpt.pt"), weights_only=True)


def wait_for_step(out_dir, proc, step, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()
        try:
            if max(losses(out_dir), default=0) >= step:
                return
        except (OSError, json.JSONDecodeError):
            pass
        time.sleep(0.02)
    raise TimeoutError


# -----------------------------------------------------------------------------
# The recipe and the data order, against hand-computed values

def test_default_config_is_the_phi_1_5_recipe():
    cfg = train.TrainConfig()
    assert (cfg.learning_rate, cfg.lr_schedule, cfg.warmup_iters) == (2e-4, "constant", 0)
    assert (cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay) == (0.9, 0.98, 1e-7, 0.1)
    assert (cfg.global_batch_size, cfg.block_size, cfg.model) == (2048, 2048, "phi-1.5")
    assert abs(cfg.max_iters * 2048 * 2048 - 150e9) < 2048 * 2048  # 150B tokens
    assert train.check_config(cfg, world_size=8) == 32  # 2048 = 8 per GPU x 8 GPUs x 32 accumulation steps
    assert train.lr_at(0, cfg) == train.lr_at(30000, cfg) == 2e-4
    if not torch.cuda.is_available():
        assert resolve_device_dtype(cfg.device, cfg.dtype, 0) == (torch.device("cpu"), torch.float32)


def test_weight_decay_applies_to_matrices_only():
    model = Phi(PhiConfig.from_name("phi-test"))
    cfg = train.TrainConfig()
    opt = model.configure_optimizer(cfg.learning_rate, cfg.weight_decay, (cfg.beta1, cfg.beta2), cfg.eps,
                                    torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    plain = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert decayed | plain == set(names.values()) and not decayed & plain
    assert decayed == {n for n in names.values() if n.endswith("weight") and "layernorm" not in n}
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-7


def test_learning_rate_schedules_match_hand_computed_values():
    cfg = train.TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110,
                            lr_schedule="cosine")
    assert train.lr_at(0, cfg) == pytest.approx(0.1)        # warmup: (step + 1) / 10
    assert train.lr_at(9, cfg) == pytest.approx(1.0)
    assert train.lr_at(10, cfg) == pytest.approx(1.0)
    assert train.lr_at(60, cfg) == pytest.approx(0.55)      # halfway: (1 + 0.1) / 2
    assert train.lr_at(35, cfg) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
    assert train.lr_at(110, cfg) == train.lr_at(500, cfg) == pytest.approx(0.1)
    cfg.lr_schedule = "linear"
    assert train.lr_at(60, cfg) == pytest.approx(0.55) and train.lr_at(35, cfg) == pytest.approx(0.775)


def test_data_order_is_disjoint_across_ranks_and_repeats_nothing_within_an_epoch():
    count, seed, world, batch, accum = 24, 7, 2, 2, 2
    per_step = world * batch * accum
    seen = []
    for step in range(6):  # 6 steps of 8 = 48 sequences = 2 epochs
        in_step = []
        for micro in range(accum):
            for r in range(world):
                first = train.first_sample(step * per_step, micro, r, world, batch)
                in_step.append(train.train_windows(count, seed, first, batch))
        in_step = np.concatenate(in_step)
        assert len(set(in_step)) == per_step  # no two ranks or micro-batches share a window
        seen.extend(in_step)
    assert sorted(seen[:count]) == list(range(count)) == sorted(seen[count:])  # each epoch: every window once
    assert seen[:count] != seen[count:]  # reshuffled each epoch
    # the order is fixed by (seed, epoch) alone, documented as numpy's default_rng([seed, epoch])
    assert list(seen[:count]) == list(np.random.default_rng([seed, 0]).permutation(count))


@pytest.mark.numerics
def test_one_step_equals_plain_pytorch_adamw_on_the_whole_batch(data_dir, tmp_path):
    """A train.py step with gradient accumulation (2 micro-batches) against the whole global batch
    at once in float64, clipped to 0.05, and AdamW with decay on matrices only.

    The comparison is split where it is well posed. AdamW's first step moves each weight by
    lr * g / (|g| + eps), about lr * sign(g): a gradient entry near zero whose float32 rounding
    differs (another CPU, another summation order) moves by up to 2 lr. So the weights are not
    compared with the reference's; instead
      - the loss and the gradient norm against float64, to float32's rounding;
      - the gradient itself, which the checkpoint holds as exp_avg = (1 - beta1) g, to GRAD_RTOL of
        each tensor's largest entry;
      - the new weights against AdamW's definition applied to the checkpoint's own exp_avg and
        exp_avg_sq, to float32's rounding of one update: a few roundings of 2^-24 of the weight
        (the decay, the addition) and of the step (bias corrections, sqrt, division)."""
    out = tmp_path / "out"
    lr, beta1, beta2, eps, wd, clip = 3e-3, 0.9, 0.98, 1e-7, 0.1, 0.05
    train.main([*TINY, f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=1", f"--grad_clip={clip}",
                "--eval_interval=100"])
    torch.manual_seed(1337)
    model = Phi(PhiConfig(**{**dict(n_layer=2, n_head=4, n_embd=64, n_inner=256, rotary_dim=8,
                                    vocab_size=512), "block_size": BLOCK}))
    before = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    model.double()
    data = np.fromfile(os.path.join(data_dir, "train.bin"), dtype=np.uint16).astype(np.int64)
    windows = np.random.default_rng([1337, 0]).permutation((len(data) - 1) // BLOCK)[:4]
    seqs = torch.tensor(np.stack([data[w * BLOCK: w * BLOCK + BLOCK + 1] for w in windows]))
    logits = model(seqs[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), seqs[:, 1:].reshape(-1))
    loss.backward()
    norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters())).item()
    assert norm > clip  # so that clipping is exercised
    assert losses(out)[1] == pytest.approx(loss.item(), rel=1e-6)
    assert next(r for r in records(out) if "grad_norm" in r)["grad_norm"] == pytest.approx(norm, rel=1e-5)

    ckpt = final_state(out)
    state = ckpt["optimizer"]["state"]  # keyed by parameter name
    for name, p in model.named_parameters():
        g = p.grad * clip / (norm + 1e-6)  # clip_grad_norm_'s scale
        m, v = state[name]["exp_avg"].double(), state[name]["exp_avg_sq"].double()
        err = ((m / (1 - beta1) - g).abs().max() / g.abs().max()).item()
        assert err < GRAD_RTOL, f"{name}: gradient off by {err:.1e} of its largest entry"
        decay = wd if p.dim() >= 2 else 0.0
        # AdamW, step 1: bias corrections 1 - beta1 and 1 - beta2
        expected = (before[name] * (1 - lr * decay)
                    - lr * (m / (1 - beta1)) / ((v / (1 - beta2)).sqrt() + eps))
        torch.testing.assert_close(ckpt["model"][name].double(), expected, rtol=4e-7, atol=lr * 4e-7, msg=name)


def assert_same_training(a_dir, b_dir, steps):
    """Two runs that differ only in how the batch was split: the same losses, gradients (Adam's
    first moment) and weights, to float32's rounding (see GRAD_RTOL and adam_atol)."""
    a_loss, b_loss = losses(a_dir), losses(b_dir)
    assert list(a_loss) == list(b_loss) == list(range(1, steps + 1))
    for step in a_loss:
        assert b_loss[step] == pytest.approx(a_loss[step], rel=1e-6)
    a, b = final_state(a_dir), final_state(b_dir)
    assert a["config"]["eps"] == b["config"]["eps"] == COMPARE_EPS
    for k, state in a["optimizer"]["state"].items():  # keyed by parameter name
        m = state["exp_avg"]
        torch.testing.assert_close(b["optimizer"]["state"][k]["exp_avg"], m, rtol=0,
                                   atol=GRAD_RTOL * m.abs().max().item(), msg=k)
        # FSDP's checkpoint holds whole tensors under the official names too
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=0, atol=adam_atol(state["exp_avg_sq"], steps),
                                   msg=k)
    return a, b


@pytest.mark.numerics
def test_gradient_accumulation_equals_the_larger_batch(data_dir, tmp_path):
    common = [*TINY, f"--data_dir={data_dir}", "--max_iters=3", "--global_batch_size=8", f"--eps={COMPARE_EPS}"]
    train.main([*common, "--batch_size=8", f"--out_dir={tmp_path / 'big'}"])
    train.main([*common, "--batch_size=2", f"--out_dir={tmp_path / 'accum'}"])  # 4 micro-batches
    assert_same_training(tmp_path / "big", tmp_path / "accum", 3)


def saved_for_backward(model, idx) -> int:
    """Bytes of activations autograd keeps for the backward during a forward (parameters excluded)."""
    params = {p.data_ptr() for p in model.parameters()}
    sizes = []

    def pack(t):
        if t.data_ptr() not in params:
            sizes.append(t.numel() * t.element_size())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(idx, idx)
    loss.backward()
    return sum(sizes)


def test_activation_checkpointing_gives_the_same_gradients_from_fewer_saved_activations():
    torch.manual_seed(0)
    model = Phi(PhiConfig.from_name("phi-test"))
    idx = torch.randint(0, VOCAB, (2, 16))
    plain_bytes = saved_for_backward(model, idx)
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    train.checkpoint_blocks(model)
    assert saved_for_backward(model, idx) < plain_bytes / 2
    assert [n for n, _ in model.named_parameters()] == list(plain)  # the official names are kept
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, plain[n], rtol=1e-5, atol=1e-7)


# -----------------------------------------------------------------------------
# Exact resume, and faults, with real processes

def test_resume_after_kill_9_reproduces_the_uninterrupted_losses_to_the_bit(data_dir, tmp_path):
    # dropout on, so that the saved RNG state matters; a schedule that moves every step
    args = [*TINY, f"--data_dir={data_dir}", "--dropout=0.1", "--lr_schedule=cosine", "--warmup_iters=2",
            "--lr_decay_iters=30", "--checkpoint_interval=3"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli(*args, f"--out_dir={killed}", "--max_iters=1000000"), cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_step(killed, proc, 5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = final_state(killed)["step"]
    assert saved >= 3 and saved % 3 == 0
    end = saved + 4
    run(cli(f"--out_dir={killed}", "--init_from=resume", f"--max_iters={end}"))
    resumed = losses(killed, since_last_start=True)
    assert list(resumed) == list(range(saved + 1, end + 1))
    fresh = tmp_path / "fresh"
    run(cli(*args, f"--out_dir={fresh}", f"--max_iters={end}"))
    uninterrupted = losses(fresh)
    assert all(resumed[s] == uninterrupted[s] for s in resumed), (resumed, uninterrupted)
    a, b = final_state(killed), final_state(fresh)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # the killed run's own losses before the kill were the uninterrupted ones too
    before = losses(killed)
    assert all(before[s] == uninterrupted[s] for s in range(1, saved + 1))


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(data_dir, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(cli(*TINY, f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=1000000",
                                "--checkpoint_interval=1000"), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_step(out, proc, 2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    last = max(losses(out))
    assert final_state(out)["step"] == last >= 2
    assert "SIGTERM: saved" in stdout


SAVE_CRASH = """
import os, signal, sys, torch, train
real_save, calls = torch.save, []
def crashing_save(obj, f, *args, **kwargs):
    calls.append(f)
    if len(calls) == 2:  # the second checkpoint: half a file, then the process dies
        with open(f, "wb") as fh:
            fh.write(b"PK\\x03\\x04 half a checkpoint")
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = crashing_save
train.main(sys.argv[1:])
"""


def test_a_crash_during_save_leaves_the_previous_checkpoint_loadable(data_dir, tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-c", SAVE_CRASH, *TINY, f"--data_dir={data_dir}", f"--out_dir={out}",
                        "--max_iters=10", "--checkpoint_interval=2"], cwd=ROOT, env=ENV, capture_output=True)
    assert p.returncode == -signal.SIGKILL
    assert any(name.endswith(".tmp") for name in os.listdir(out))  # the half-written file
    assert final_state(out)["step"] == 2
    assert load_model(str(out / "ckpt.pt")).config.n_layer == 2  # what sample.py reads
    run(cli(f"--out_dir={out}", "--init_from=resume", "--max_iters=4"))
    assert final_state(out)["step"] == 4
    assert not any(name.endswith(".tmp") for name in os.listdir(out))


def checkpoint_files(out) -> list:
    return sorted(n for n in os.listdir(out) if re.fullmatch(r"ckpt(-\d{7})?\.pt", n))


def digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_a_checkpoint_with_unknown_model_args_is_one_line_naming_them(data_dir, tmp_path):
    out = tmp_path / "out"
    train.main([*TINY, f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=2"])
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    ckpt["model_args"]["n_layers"] = ckpt["model_args"].pop("n_layer")  # a typo, or another program's file
    torch.save(ckpt, out / "ckpt.pt")
    with pytest.raises(ValueError, match=re.escape(f"the checkpoint in {out}: unknown model_args ['n_layers']")):
        train.main([f"--out_dir={out}", "--init_from=resume"])


def test_every_checkpoint_is_its_own_file_and_the_corrupt_checkpoint_advice_works(data_dir, tmp_path):
    """ckpt.pt is the newest checkpoint and the numbered ones are the older ones, each its own file:
    truncating ckpt.pt, or copying a numbered one over it as the error message says, touches no
    other checkpoint, and the run resumes from the copy as from the original."""
    out = tmp_path / "out"
    train.main([*TINY, f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=6",
                "--checkpoint_interval=2", "--keep_last=2"])
    assert checkpoint_files(out) == ["ckpt-0000002.pt", "ckpt-0000004.pt", "ckpt.pt"]
    assert [torch.load(out / n, weights_only=True)["step"] for n in checkpoint_files(out)] == [2, 4, 6]
    assert len({os.stat(out / n).st_ino for n in checkpoint_files(out)}) == 3  # no file has two names
    older = {n: digest(out / n) for n in ("ckpt-0000002.pt", "ckpt-0000004.pt")}
    first_run = losses(out)

    with open(out / "ckpt.pt", "r+b") as f:
        f.truncate(1000)
    assert {n: digest(out / n) for n in older} == older
    with pytest.raises(ValueError, match="is not a readable checkpoint") as e:
        train.main([f"--out_dir={out}", "--init_from=resume"])
    command = f"cp {out / 'ckpt-0000004.pt'} {out / 'ckpt.pt'}"
    assert f"the newest checkpoint that loads is {out / 'ckpt-0000004.pt'} (step 4): {command}" in str(e.value)
    subprocess.run(shlex.split(command), check=True)  # as the message says
    assert {n: digest(out / n) for n in older} == older
    train.main([f"--out_dir={out}", "--init_from=resume", "--max_iters=6"])
    assert losses(out, since_last_start=True) == {5: first_run[5], 6: first_run[6]}
    assert {n: digest(out / n) for n in older} == older

    # the message names the newest checkpoint that actually loads, or says that none is left
    for name in ("ckpt.pt", "ckpt-0000004.pt"):
        (out / name).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=re.escape(f"cp {out / 'ckpt-0000002.pt'} {out / 'ckpt.pt'}")):
        train.main([f"--out_dir={out}", "--init_from=resume"])
    (out / "ckpt-0000002.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="no checkpoint in .* loads: start again"):
        train.main([f"--out_dir={out}", "--init_from=resume"])


LINK_CRASH = """
import os, signal, sys, train
real_replace, calls = os.replace, []
def replace(src, dst, *args, **kwargs):  # the second save dies just before its rename onto ckpt.pt
    if os.path.basename(dst) == "ckpt.pt":
        calls.append(dst)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace
train.main(sys.argv[1:])
"""


def test_a_checkpoint_left_with_two_names_by_a_crash_is_separated_at_start(data_dir, tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-c", LINK_CRASH, *TINY, f"--data_dir={data_dir}", f"--out_dir={out}",
                        "--max_iters=10", "--checkpoint_interval=2"], cwd=ROOT, env=ENV, capture_output=True)
    assert p.returncode == -signal.SIGKILL
    twins = [n for n in checkpoint_files(out) if n != "ckpt.pt" and os.path.samefile(out / n, out / "ckpt.pt")]
    assert twins  # the crash came between the link and the rename
    # any start repairs it, even one that fails right after (here: on missing data)
    with pytest.raises(FileNotFoundError):
        train.main([f"--out_dir={out}", "--init_from=resume", f"--data_dir={tmp_path / 'nothing'}"])
    assert len({os.stat(out / n).st_ino for n in checkpoint_files(out)}) == len(checkpoint_files(out))
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] == 2
    assert not any(name.endswith(".tmp") for name in os.listdir(out))


FULL_DISK = """
mount -t tmpfs -o size=3m tmpfs "$1" || exit 99
"$2" train.py "${@:4}" --out_dir="$1"
echo "rc=$?"
cp -a "$1"/. "$3"/
"""


def test_a_full_disk_during_a_save_is_one_line_and_the_previous_checkpoint_stays(data_dir, tmp_path):
    """A real full disk: a 3 MB tmpfs as out_dir, in a mount namespace of its own. The step-2
    checkpoint (~2 MB) fits; the step-4 one does not."""
    full, copy = tmp_path / "full", tmp_path / "copy"
    full.mkdir()
    copy.mkdir()
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to mount a small tmpfs")
    for ns in (["--user", "--map-root-user", "--mount"], ["--mount"]):
        probe = subprocess.run(["unshare", *ns, "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {shlex.quote(str(full))}"],
                               capture_output=True)
        if probe.returncode == 0:
            break
    else:
        pytest.skip(f"cannot mount a tmpfs in a new mount namespace here: {probe.stderr.decode().strip()}")
    p = subprocess.run(["unshare", *ns, "bash", "-c", FULL_DISK, "full_disk", str(full), sys.executable, str(copy),
                        *TINY, f"--data_dir={data_dir}", "--max_iters=6", "--checkpoint_interval=2"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180)
    assert "rc=1" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr[-3000:]
    line = lines[0]
    m = re.fullmatch(rf"train\.py: error: the disk is full: the step-4 checkpoint \(about ([\d.]+) MB\) does "
                     rf"not fit in {re.escape(str(full))}, which has ([\d.]+) MB free; .*", line)
    assert m and 0 < float(m[2]) < float(m[1]) < 3, line
    assert "ckpt.pt (step 2) is intact" in line
    assert checkpoint_files(copy) == ["ckpt.pt"] and final_state(copy)["step"] == 2
    assert not any(name.endswith(".tmp") for name in os.listdir(copy))


def test_an_empty_token_file_is_an_error_that_names_it(tmp_path):
    data = write_tokens(tmp_path / "data")
    open(os.path.join(data, "train.bin"), "wb").close()
    with pytest.raises(ValueError, match=re.escape(os.path.join(data, "train.bin")) + " holds 0 tokens"):
        train.main([*TINY, f"--data_dir={data}", f"--out_dir={tmp_path / 'out'}", "--max_iters=1"])


@pytest.mark.parametrize("setting", ["--grad_clip=nan", "--learning_rate=inf", "--dropout=nan",
                                     '{"min_lr": NaN}', '{"beta2": -Infinity}'])
def test_non_finite_settings_are_rejected_before_anything_runs(data_dir, tmp_path, setting):
    out = tmp_path / "out"
    args = [*TINY, f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=1", "--checkpoint_interval=1"]
    if setting.startswith("{"):  # from a --config JSON file (json reads NaN and Infinity)
        (tmp_path / "c.json").write_text(setting)
        args.append(f"--config={tmp_path / 'c.json'}")
    else:
        args.append(setting)
    with pytest.raises(train.ConfigError, match=r"--\w+=(nan|inf|-inf): not a finite number"):
        train.main(args)
    assert not out.exists()


def test_weights_that_overflow_are_never_saved(data_dir, tmp_path):
    """A learning rate of 1e39 is a finite float, but the first update overflows float32: the
    loss of step 1 is finite and the weights after it are infinite."""
    out = tmp_path / "out"
    with pytest.raises(train.NonFiniteLoss, match=r"the weights after step 1 are not finite; not saved\. "
                                                  r"No usable checkpoint is left: start again .*lower --learning_rate"):
        train.main([*TINY, f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=5",
                    "--checkpoint_interval=1", "--learning_rate=1e39"])
    assert checkpoint_files(out) == []
    assert max(losses(out)) == 1


def test_nan_loss_names_the_newest_checkpoint_whose_next_step_was_finite(data_dir, tmp_path):
    """A checkpoint of step k holds the weights whose forward at step k + 1 gave the loss: it is
    usable only if that loss was finite."""
    out = tmp_path / "out"
    args = [*TINY, f"--data_dir={data_dir}", f"--out_dir={out}", "--checkpoint_interval=1"]
    # a learning rate of 1e30 makes the weights ~1e30 after one step: the next forward overflows
    with pytest.raises(train.NonFiniteLoss, match=r"loss nan .* at step 2; stopped without applying it\. .*"
                                                  r"No usable checkpoint is left: start again"):
        train.main([*args, "--max_iters=5", "--learning_rate=1e30"])
    assert max(losses(out)) == 1  # the bad step was never applied nor logged

    train.main([*args, "--max_iters=4", "--checkpoint_interval=2", "--overwrite=true"])
    with pytest.raises(train.NonFiniteLoss, match=r"loss nan .* at step 6") as e:
        train.main([f"--out_dir={out}", "--init_from=resume", "--max_iters=10", "--learning_rate=1e30",
                    "--checkpoint_interval=1"])
    assert final_state(out)["step"] == 5  # saved with finite weights, but its next step was nan
    command = f"cp {out / 'ckpt-0000004.pt'} {out / 'ckpt.pt'}"
    assert f"The newest usable checkpoint is {out / 'ckpt-0000004.pt'} (step 4): {command}" in str(e.value)
    subprocess.run(shlex.split(command), check=True)  # as the message says
    train.main([f"--out_dir={out}", "--init_from=resume", "--max_iters=6", "--learning_rate=3e-3"])
    resumed = losses(out, since_last_start=True)
    assert list(resumed) == [5, 6] and all(math.isfinite(v) for v in resumed.values())


GLOBAL_8 = [*TINY, "--max_iters=3", "--global_batch_size=8", "--eval_interval=3", f"--eps={COMPARE_EPS}"]


@pytest.fixture(scope="module")
def one_process(data_dir, tmp_path_factory):
    """The reference: one process, 4 sequences per micro-batch, 2 accumulation steps."""
    out = tmp_path_factory.mktemp("one")
    train.main([*GLOBAL_8, f"--data_dir={data_dir}", "--batch_size=4", f"--out_dir={out}"])
    return out


@pytest.mark.numerics
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_equal_one_process(data_dir, one_process, tmp_path, sharding):
    """torchrun with 2 gloo processes of 2 sequences x 2 accumulation steps, the same 8 per step."""
    out = tmp_path / sharding
    run(torchrun("train.py", *GLOBAL_8, f"--data_dir={data_dir}", "--batch_size=2", f"--out_dir={out}",
                 f"--fsdp={sharding == 'fsdp'}"))
    a, b = assert_same_training(one_process, out, 3)
    vals = [[r["val_loss"] for r in records(d) if "val_loss" in r] for d in (out, one_process)]
    assert vals[0] == pytest.approx(vals[1], rel=1e-6)
    assert len(b["rng"]) == 2 and a["samples_seen"] == b["samples_seen"] == 24
    assert b["config"]["fsdp"] == (sharding == "fsdp")


KILL_RANK_1 = """
import os, signal, sys, train
real_lr_at = train.lr_at
def lr_at(step, cfg):  # the first attempt's rank 1 dies (kill -9) as it starts step 6
    if step == 5 and os.environ["RANK"] == "1" and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
        os.kill(os.getpid(), signal.SIGKILL)
    return real_lr_at(step, cfg)
train.lr_at = lr_at
train.main(sys.argv[1:])
"""


def test_torchrun_max_restarts_brings_a_killed_rank_back_and_resumes(data_dir, tmp_path):
    out = tmp_path / "out"
    wrapper = tmp_path / "kill_rank_1.py"
    wrapper.write_text(KILL_RANK_1)
    run(torchrun(str(wrapper), *TINY, f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=8",
                 "--checkpoint_interval=3", extra=["--max-restarts=1"]))
    recs = records(out)
    events = [r for r in recs if r.get("event")]
    assert [(e["event"], e["step"], e["restart"]) for e in events] == [("start", 0, 0), ("resume", 3, 1)]
    cut = recs.index(events[1])
    first = {r["step"]: r["loss"] for r in recs[:cut] if "loss" in r}
    second = {r["step"]: r["loss"] for r in recs[cut:] if "loss" in r}
    assert list(first) == [1, 2, 3, 4, 5] and list(second) == [4, 5, 6, 7, 8]
    assert second[4] == first[4] and second[5] == first[5]  # the same steps, the same losses
    assert final_state(out)["step"] == 8


# -----------------------------------------------------------------------------
# Fine-tuning from Hugging Face weights, and the export

def test_fine_tunes_from_a_hugging_face_directory_and_exports_with_save_pretrained(tmp_path):
    from transformers import AutoModelForCausalLM
    hf = make_hf_model(dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                            num_attention_heads=4, partial_rotary_factor=0.5, max_position_embeddings=64),
                       std=0.05)
    hf.save_pretrained(tmp_path / "hf-in")
    data = write_tokens(tmp_path / "data", n_val=BLOCK + 1)  # val.bin: exactly one window
    out = tmp_path / "out"
    train.main([*TINY, f"--data_dir={data}", f"--out_dir={out}", f"--init_from={tmp_path / 'hf-in'}",
                "--max_iters=2"])
    # the val loss before any step is transformers' loss on that window, computed here in float64
    window = torch.tensor(np.fromfile(data + "/val.bin", dtype=np.uint16).astype(np.int64))
    with torch.no_grad():
        logits = hf(window[None, :-1]).logits[0].double()
    expected = torch.nn.functional.cross_entropy(logits, window[1:]).item()
    val = [r["val_loss"] for r in records(out) if "val_loss" in r]
    assert val[0] == pytest.approx(expected, rel=1e-5)
    # the export loads in transformers and computes what the final checkpoint computes
    exported = AutoModelForCausalLM.from_pretrained(out / "hf", attn_implementation="sdpa").eval()
    ours = load_model(str(out / "ckpt.pt")).eval()
    idx = window[None, :BLOCK]
    with torch.no_grad():
        torch.testing.assert_close(exported(idx).logits, ours(idx), rtol=1e-5, atol=1e-5)
    assert not torch.equal(exported.lm_head.weight, hf.lm_head.weight)  # it did train


# -----------------------------------------------------------------------------
# Bad settings: one clear line

@pytest.mark.parametrize("argv, message", [
    (["--learnig_rate=1e-3"], "unknown setting --learnig_rate; did you mean --learning_rate?"),
    (["--batch_size=3", "--global_batch_size=8"], "not divisible by batch_size 3 x 1 processes = 3"),
    (["--batch_size=many"], "--batch_size=many: expected int"),
    (["--config=nonesuch"], "neither a preset"),
    (["learning_rate=1"], "settings are written --key=value"),
    (["--lr_schedule=step"], "choose constant, cosine or linear"),
    (["--block_size=128"], "longer than the model's context (64)"),
])
def test_bad_settings_give_clear_errors(data_dir, tmp_path, argv, message):
    args = [*TINY, f"--data_dir={data_dir}", f"--out_dir={tmp_path}", "--model=phi-test", "--max_iters=1"]
    if argv == ["--block_size=128"]:
        args = [a for a in args if not a.startswith("--block_size")] + [f"--init_from={make_phi_test_pt(tmp_path)}"]
    with pytest.raises(train.ConfigError) as e:
        train.main([*args, *argv])
    assert message in str(e.value)


def make_phi_test_pt(tmp_path) -> str:
    from dataclasses import asdict
    model = Phi(PhiConfig.from_name("phi-test"))
    path = str(tmp_path / "weights.pt")
    torch.save({"model": model.state_dict(), "model_args": asdict(model.config)}, path)
    return path


def test_missing_data_existing_run_and_missing_checkpoint_are_clear_errors(data_dir, tmp_path):
    p = subprocess.run(cli(*TINY, f"--data_dir={tmp_path / 'nothing'}", f"--out_dir={tmp_path / 'o'}"),
                       cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.strip().splitlines() == [
        f"train.py: error: {tmp_path / 'nothing' / 'train.bin'} not found; prepare the data first (python "
        f"data/prepare_textbooks.py) or point --data_dir at a directory with meta.json and its shards, or with "
        f"train.bin and val.bin"]
    with pytest.raises(FileNotFoundError, match="no checkpoint at .* to resume"):
        train.main([f"--out_dir={tmp_path / 'o'}", "--init_from=resume"])
    out = tmp_path / "run"
    train.main([*TINY, f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=1"])
    with pytest.raises(train.ConfigError, match="ckpt.pt exists: continue it with --init_from=resume"):
        train.main([*TINY, f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=1"])
    # --overwrite=true starts afresh: the old run's checkpoints and log are gone
    train.main([*TINY, f"--data_dir={data_dir}", f"--out_dir={out}", "--max_iters=2", "--overwrite=true"])
    assert [r["event"] for r in records(out) if r.get("event")] == ["start"]
    assert sorted(losses(out)) == [1, 2] and final_state(out)["step"] == 2
    with pytest.raises(train.ConfigError, match="--block_size cannot change when resuming"):
        train.main([f"--out_dir={out}", "--init_from=resume", "--block_size=16"])
    (out / "ckpt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        train.main([f"--out_dir={out}", "--init_from=resume"])


# -----------------------------------------------------------------------------
# Training on token shards (data/shards.py: what data/prepare_textbooks.py writes)

def write_shards(flat_dir, directory, cuts=(("train", (700, 1600)), ("val", (100,)))) -> str:
    """flat_dir's train.bin and val.bin cut into shards at the given token positions, which fall
    inside windows (so some windows span two shards), with the listing that meta.json holds."""
    os.makedirs(directory)
    listing = {}
    for split, at in cuts:
        ids = np.fromfile(os.path.join(flat_dir, f"{split}.bin"), dtype=np.uint16)
        listing[split] = []
        for k, piece in enumerate(np.split(ids, at)):
            piece.tofile(os.path.join(directory, f"{split}-{k:05d}.bin"))
            listing[split].append({"file": f"{split}-{k:05d}.bin", "tokens": len(piece)})
    with open(os.path.join(directory, "meta.json"), "w") as f:
        json.dump({"shards": listing}, f)
    return str(directory)


def test_shards_give_the_windows_and_losses_of_the_flat_file_across_epochs(data_dir, tmp_path):
    # 64 windows, 4 a step: 18 steps cross into the second epoch, whose order is reshuffled
    shards = write_shards(data_dir, tmp_path / "shards")
    args = [*TINY, "--max_iters=18", "--eval_interval=9"]
    train.main([*args, f"--data_dir={data_dir}", f"--out_dir={tmp_path / 'flat'}"])
    train.main([*args, f"--data_dir={shards}", f"--out_dir={tmp_path / 'sharded'}"])
    assert records(tmp_path / "flat") and [{k: v for k, v in r.items() if k not in ("tokens_per_s", "mfu", "peak_mem_gb")}
                                           for r in records(tmp_path / "flat")] == \
        [{k: v for k, v in r.items() if k not in ("tokens_per_s", "mfu", "peak_mem_gb")} for r in records(tmp_path / "sharded")]
    a, b = final_state(tmp_path / "flat"), final_state(tmp_path / "sharded")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # the windows themselves, against the flat file read by hand
    flat = np.fromfile(os.path.join(data_dir, "train.bin"), dtype=np.uint16)
    tokens = train.open_tokens(shards, "train", BLOCK)
    windows = train.train_windows(train.n_windows(tokens, BLOCK), 1337, 60, 8)  # samples 60..67: two epochs
    x, y = train.get_batch(tokens, windows, BLOCK, VOCAB, torch.device("cpu"))
    expected = np.stack([flat[w * BLOCK: w * BLOCK + BLOCK + 1] for w in windows]).astype(np.int64)
    assert torch.equal(x, torch.from_numpy(expected[:, :-1])) and torch.equal(y, torch.from_numpy(expected[:, 1:]))


def test_resume_after_kill_9_on_shards_reproduces_the_flat_file_run_to_the_bit(data_dir, tmp_path):
    shards = write_shards(data_dir, tmp_path / "shards")
    args = [*TINY, "--dropout=0.1", "--lr_schedule=cosine", "--warmup_iters=2", "--lr_decay_iters=30",
            "--checkpoint_interval=3"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli(*args, f"--data_dir={shards}", f"--out_dir={killed}", "--max_iters=1000000"),
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_step(killed, proc, 5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = final_state(killed)["step"]
    end = saved + 4
    run(cli(f"--out_dir={killed}", "--init_from=resume", f"--max_iters={end}"))
    resumed = losses(killed, since_last_start=True)
    assert list(resumed) == list(range(saved + 1, end + 1))
    fresh = tmp_path / "fresh"
    run(cli(*args, f"--data_dir={data_dir}", f"--out_dir={fresh}", f"--max_iters={end}"))  # the flat file
    uninterrupted = losses(fresh)
    assert all(resumed[s] == uninterrupted[s] for s in resumed), (resumed, uninterrupted)
    a, b = final_state(killed), final_state(fresh)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_missing_cut_short_or_unlisted_shard_and_a_bad_meta_json_are_one_line_errors(data_dir, tmp_path):
    def shards(name):
        return write_shards(data_dir, tmp_path / name)

    cases = []
    d = shards("missing")
    os.remove(os.path.join(d, "train-00001.bin"))
    cases.append((d, re.escape(os.path.join(d, "train-00001.bin")) + " is missing, but .*meta.json lists it"))
    d = shards("short")
    with open(os.path.join(d, "train-00002.bin"), "r+b") as f:
        f.truncate(100)
    cases.append((d, re.escape(os.path.join(d, "train-00002.bin")) + " holds 50 tokens, but .*meta.json lists 449"))
    d = shards("odd")
    with open(os.path.join(d, "val-00001.bin"), "ab") as f:
        f.write(b"x")
    cases.append((d, "val-00001.bin has an odd number of bytes"))
    d = shards("torn")
    with open(os.path.join(d, "meta.json"), "r+b") as f:
        f.truncate(20)
    cases.append((d, "meta.json cannot be read .*; rebuild the corpus"))
    d = shards("unlisted")
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump({"shards": {"train": [{"file": "../train.bin", "tokens": 5}]}}, f)
    cases.append((d, r"meta.json does not list the train shards"))
    for d, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            train.main([*TINY, f"--data_dir={d}", f"--out_dir={tmp_path / 'o'}", "--overwrite=true", "--max_iters=1"])
    p = subprocess.run(cli(*TINY, f"--data_dir={cases[1][0]}", f"--out_dir={tmp_path / 'o'}", "--max_iters=1"),
                       cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
    assert re.fullmatch("train.py: error: " + cases[1][1] + r".*rerun the command that built the corpus", p.stderr.strip())


def test_a_built_corpus_trains_and_the_log_shows_its_mixture_and_epochs(tmp_path, capsys):
    from data import prepare_textbooks
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("bcdfgklmnprstvz")) + rng.choice(list("aeiou")) for _ in range(3)) for _ in range(500)]
    with open(tmp_path / "notes.jsonl", "w") as f:
        for _ in range(40):
            f.write(json.dumps({"text": " ".join(rng.choice(words, 60))}) + "\n")
    corpus = tmp_path / "corpus"
    prepare_textbooks.main(["--out_dir", str(corpus), "--num_proc", "1", "--synthetic_tokens", "20000", "--text",
                            str(tmp_path / "notes.jsonl"), "--mix", "synthetic=0.8,text=0.2", "--shard_tokens", "6000"])
    meta = json.loads((corpus / "meta.json").read_text())
    assert len(meta["shards"]["train"]) >= 3
    capsys.readouterr()
    train.main(["--model=phi-nano", "--block_size=32", "--batch_size=2", "--global_batch_size=2", "--max_iters=2",
                "--eval_interval=2", "--eval_sequences=2", f"--data_dir={corpus}", f"--out_dir={tmp_path / 'run'}"])
    out = capsys.readouterr().out
    shares = {s: r["share_of_tokens"] for s, r in meta["sources"].items()}
    assert abs(shares["synthetic"] - 0.8) < 0.02
    line = next(line for line in out.splitlines() if line.startswith("data: "))
    tokens = meta["splits"]["train"]["tokens"]
    assert line.startswith(f"data: train {tokens:,} tokens in {len(meta['shards']['train'])} shard(s): "
                           f"synthetic {100 * shares['synthetic']:.1f}% (")
    passes = meta["sources"]["text"]["passes"]
    assert line.endswith(f"this run reads 128 tokens = {128 / tokens:.3g} epochs, so it sees each unique token "
                         f"{meta['sources']['synthetic']['passes'] * 128 / tokens:.3g} (synthetic), "
                         f"{passes * 128 / tokens:.3g} (text) times")
