"""bench.py runs, and its contenders compute the same thing (the timings themselves are not tested)."""

import os
import re
import subprocess
import sys

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
