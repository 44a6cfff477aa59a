"""bench.py runs, and its contenders compute the same thing (the timings themselves are not tested)."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT


def test_bench_train_contenders_start_from_the_same_loss_each_in_its_own_process():
    # a tiny shape: three processes (transformers, nanophi, nanophi --compile), one round each
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), "train", "--shape", "phi-test",
                          "--batch", "2", "--seq_len", "16", "--repeats", "1", "--rounds", "1", "--device", "cpu"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "each contender in its own process" in out.stdout
    rows = {m.group(1).strip(): float(m.group(2)) for m in
            re.finditer(r"^(transformers|nanophi --compile|nanophi)\s.*?(\d+\.\d{6})$", out.stdout, re.M)}
    assert set(rows) == {"transformers", "nanophi", "nanophi --compile"}, out.stdout
    # same weights and batch in every process: transformers' own loss and nanophi's fused one agree
    assert abs(rows["nanophi"] - rows["transformers"]) < 1e-5 * rows["transformers"]
    assert abs(rows["nanophi --compile"] - rows["transformers"]) < 1e-5 * rows["transformers"]


@pytest.mark.slow
def test_bench_gpu_dry_run_runs_every_part_and_writes_json_and_markdown(tmp_path):
    # without a GPU: tiny shapes through Triton's interpreter (about 2-5 minutes on 2 cores)
    env = dict(os.environ, TRITON_INTERPRET="1")
    out_json = tmp_path / "gpu.json"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), "gpu", "--dry-run", "--out", str(out_json)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out_json.read_text())
    assert report["dry_run"] and not report["errors"]
    assert set(report["parts"]) == {"machine", "tests", "probe", "attention", "memory_bound", "loss", "train", "decode"}
    assert all(p["passed"] for p in report["parts"]["probe"])
    markdown = (tmp_path / "gpu.md").read_text()
    assert "DRY RUN" in markdown and markdown in out.stdout  # the block is printed last
