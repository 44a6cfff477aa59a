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


def test_bench_data_runs_both_contenders_on_the_same_corpus_and_reports_memory():
    # a tiny corpus: the pipeline in its own process at 1 and 2 processes, raw tiktoken at 1 and 2
    # threads, and one peak-memory build
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), "data", "--synthetic_tokens", "20000",
                          "--num_proc", "2", "--repeats", "1", "--memory_tokens", "30000"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = re.findall(r"^(raw tiktoken encode_ordinary_batch|prepare_textbooks.py)\s+(\d)\s+([\d,]+)\s", out.stdout, re.M)
    assert sorted((name, procs) for name, procs, _ in rows) == [
        ("prepare_textbooks.py", "1"), ("prepare_textbooks.py", "2"),
        ("raw tiktoken encode_ordinary_batch", "1"), ("raw tiktoken encode_ordinary_batch", "2")], out.stdout
    tokens = {(name, procs): int(n.replace(",", "")) for name, procs, n in rows}
    assert tokens["prepare_textbooks.py", "1"] == tokens["prepare_textbooks.py", "2"] > 0  # the same corpus out
    assert tokens["raw tiktoken encode_ordinary_batch", "1"] == tokens["raw tiktoken encode_ordinary_batch", "2"]
    memory = re.search(r"^\s+30,000\s+([\d,]+)\s+[\d.]+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$",
                       out.stdout, re.M)
    assert memory, out.stdout
    docs, index_bytes_per_doc = int(memory.group(1).replace(",", "")), float(memory.group(6))
    assert docs > 50 and 370 < index_bytes_per_doc < 400


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
