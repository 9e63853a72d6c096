"""OS-level sandbox for untrusted generated code: namespaces, read-only mounts, a dropped uid, rlimits.

evalplus's `reliability_guard` only blanks some Python functions; it is not a sandbox (a generation
can still `pathlib.Path('/x').touch()` or fork through `os.posix_spawn`). Every execution of
generated code therefore runs inside a process started by `sandboxed_command`:

- mode `namespaces` (root): `unshare` gives new mount, network, PID, IPC and UTS namespaces; inside,
  `jail` (this module, run as `python -m codeselect.evaluation.sandbox`) makes every mount
  read-only, puts private size-capped tmpfs on /tmp, /var/tmp and /dev/shm, then drops to an
  unprivileged uid (one per parallel slot, so RLIMIT_NPROC is a real per-sandbox process cap),
  sets `no_new_privs`, and execs the command in a throw-away directory. No network (only a
  downed loopback), no view of host processes, nothing writable outside the tmpfs.
- mode `userns` (not root, unprivileged user namespaces allowed): the same, mapped to root inside
  a user namespace instead of a uid drop (the process cap then counts the user's processes).
  Refused for root: mapped to host root, RLIMIT_NPROC is not enforced (root is exempt).
- mode `rlimits` (no namespaces available): uid drop when root, rlimits, new session. The host
  file system is protected only by permissions; documented as the weak fallback.
In every mode: RLIMIT_AS, RLIMIT_CPU, RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_NOFILE, no core files,
a new session (the caller kills the whole process group on timeout).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Iterator, Sequence

MODES = ("auto", "namespaces", "userns", "rlimits")
BASE_UID = 61000  # uid of sandbox slot i is BASE_UID + i (unprivileged, owns nothing on the host)

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_PR_SET_NO_NEW_PRIVS = 38


@dataclass(frozen=True)
class Limits:
    """Resource caps of one sandbox (the whole worker and everything it starts)."""

    memory_mb: int = 8192      # RLIMIT_AS per process (evalplus lowers it to 4 GiB per test run)
    cpu_s: int = 3600          # RLIMIT_CPU per process
    nproc: int = 64            # processes of the sandbox uid (fork bombs stop here)
    fsize_mb: int = 64         # largest file a process may write
    nofile: int = 256          # open file descriptors
    tmpfs_mb: int = 256        # size of each private tmpfs


@contextlib.contextmanager
def lease_slots(n: int, lock_dir: str = "/tmp/codeselect-sandbox-slots") -> Iterator[list[int]]:
    """Reserve `n` sandbox slots (uids BASE_UID + slot) no other process on this machine uses now.

    RLIMIT_NPROC counts processes per uid machine-wide: two evaluations sharing a uid would share
    one process cap, and a fork bomb in one would starve the other. Leases are `flock`s, so they
    vanish with the process that held them."""
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


def _unshare_works(args: tuple[str, ...]) -> bool:
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        res = subprocess.run([exe, *args, "true"], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


_NS_ARGS = ("--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc")


@functools.lru_cache(maxsize=None)
def detect_mode() -> str:
    """The strongest isolation this machine allows (probed once per process)."""
    if os.geteuid() == 0:
        return "namespaces" if _unshare_works(_NS_ARGS) else "rlimits"
    if _unshare_works(("--user", "--map-root-user", *_NS_ARGS)):
        return "userns"
    return "rlimits"


def resolve_mode(mode: str) -> str:
    """`auto` -> the detected mode; an explicit mode is checked against what the machine allows."""
    if mode not in MODES:
        raise ValueError(f"unknown sandbox mode {mode!r} (one of {', '.join(MODES)})")
    if mode == "userns" and os.geteuid() == 0:
        # mapped to host root, RLIMIT_NPROC would not apply (root is exempt): no fork-bomb cap
        raise ValueError("sandbox mode userns is for unprivileged users; as root use namespaces")
    return detect_mode() if mode == "auto" else mode


def sandboxed_command(argv: Sequence[str], *, slot: int = 0, limits: Limits = Limits(),
                      mode: str = "auto") -> list[str]:
    """The command line that runs `argv` inside a fresh sandbox (start it with start_new_session)."""
    mode = resolve_mode(mode)
    jail = [sys.executable, "-m", "codeselect.evaluation.sandbox",
            json.dumps({"mode": mode, "slot": slot, "limits": asdict(limits)}), "--", *argv]
    if mode == "namespaces":
        return [shutil.which("unshare") or "unshare", *_NS_ARGS, "--", *jail]
    if mode == "userns":
        return [shutil.which("unshare") or "unshare", "--user", "--map-root-user", *_NS_ARGS,
                "--", *jail]
    return jail


@functools.lru_cache(maxsize=None)
def check_sandbox(mode: str = "auto", limits: Limits = Limits()) -> str:
    """Start one sandbox running Python; raise RuntimeError (with its stderr) if it cannot start,
    so that a broken sandbox is never mistaken for failing generated code. Returns the mode."""
    mode = resolve_mode(mode)
    cmd = sandboxed_command([sys.executable, "-c", "print('sandbox-ok')"], limits=limits, mode=mode)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                             start_new_session=True, cwd="/")
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the {mode} sandbox did not start within 120 s") from None
    if res.stdout.strip() != "sandbox-ok":
        tail = " | ".join(res.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"the {mode} sandbox cannot run Python (rc {res.returncode}): {tail}")
    return mode


# ----------------------------------------------------------------------------- inside the jail
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount(libc: ctypes.CDLL, src: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> int:
    enc = (lambda s: s.encode() if s is not None else None)
    rc = libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    return 0 if rc == 0 else ctypes.get_errno()


def _mount_points() -> list[tuple[str, set[str]]]:
    """(mount point, per-mount options) from /proc/self/mountinfo, shallowest first."""
    out = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            parts = line.split()
            point = parts[4].encode().decode("unicode_escape")
            out.append((point, set(parts[5].split(","))))
    return sorted(out, key=lambda p: p[0].count("/") if p[0] != "/" else 0)


def _closed_ancestor(path: str) -> str | None:
    """The shallowest directory above `path` that other users cannot traverse (e.g. /root)."""
    parts = os.path.realpath(path).split(os.sep)[1:]
    for i in range(1, len(parts) + 1):
        d = os.sep + os.path.join(*parts[:i])
        if os.path.isdir(d) and not os.stat(d).st_mode & 0o001:
            return d
    return None


def _reveal(libc: ctypes.CDLL, paths: list[str]) -> None:
    """Make `paths` reachable for the sandbox uid where an ancestor is closed (a venv whose Python
    lives under /root): hide the closed ancestor under a tmpfs and bind only `paths` back into it."""
    blocked: dict[str, list[str]] = {}
    for p in dict.fromkeys(os.path.realpath(p) for p in paths):
        anc = _closed_ancestor(p)
        if anc is not None:
            blocked.setdefault(anc, []).append(p)
    for i, (anc, inner) in enumerate(blocked.items()):
        stages = []
        for j, p in enumerate(inner):
            stage = f"/tmp/.reveal-{i}-{j}"
            os.mkdir(stage)
            if _mount(libc, p, stage, None, _MS_BIND | _MS_REC):
                raise OSError(f"cannot bind {p}")
            stages.append((stage, p))
        if _mount(libc, "tmpfs", anc, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=755"):
            raise OSError(f"cannot hide {anc}")
        for stage, p in stages:
            os.makedirs(p, exist_ok=True)
            if _mount(libc, stage, p, None, _MS_BIND | _MS_REC):
                raise OSError(f"cannot bind {p} back")
            libc.umount2(stage.encode(), 2)  # MNT_DETACH
            os.rmdir(stage)


WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")


def _lock_filesystem(limits: Limits, owner: int, reveal: list[str], keep: list[str]) -> None:
    """Private tmpfs on /tmp, /var/tmp, /dev/shm; every other mount read-only (in our mount ns)."""
    libc = _libc()
    err = _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)
    if err:
        raise OSError(err, "cannot make mounts private")
    # Python, the venv or the repo may live under /tmp (a CI checkout): hold them open so they can be
    # bound back (read-only below) after the private tmpfs covers their parent.
    held = {p: os.open(p, os.O_PATH | os.O_DIRECTORY)
            for p in dict.fromkeys(os.path.realpath(x) for x in keep)
            if os.path.isdir(p) and any(p == w or p.startswith(w + "/") for w in WRITABLE)}
    for point in WRITABLE:
        if os.path.isdir(point):
            err = _mount(libc, "tmpfs", point, "tmpfs", _MS_NOSUID | _MS_NODEV,
                         f"size={limits.tmpfs_mb}m,mode=1777")
            if err:
                raise OSError(err, f"cannot mount a private tmpfs on {point}")
            for path, fd in held.items():
                if path == point or path.startswith(point + "/"):
                    os.makedirs(path, mode=0o755, exist_ok=True)
                    if _mount(libc, f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC):
                        raise OSError(f"cannot bind {path} back into the sandbox")
        if point == "/tmp":
            _reveal(libc, reveal)
    for fd in held.values():
        os.close(fd)
    for point, opts in _mount_points():
        if point in WRITABLE:
            continue
        flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID
        flags |= _MS_NODEV if "nodev" in opts else 0
        flags |= _MS_NOEXEC if "noexec" in opts else 0
        _mount(libc, None, point, None, flags)  # best effort per mount; the root is checked below
    if _probe_writable("/"):
        raise OSError("the root file system is still writable inside the sandbox")
    os.makedirs("/tmp/work", mode=0o700)
    os.chown("/tmp/work", owner, owner)


def _probe_writable(directory: str) -> bool:
    probe = os.path.join(directory, f".codeselect-probe-{os.getpid()}")
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY, 0o600)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def _set_limits(limits: Limits) -> None:
    import resource

    mb = 1024 * 1024
    for res, value in ((resource.RLIMIT_AS, limits.memory_mb * mb),
                       (resource.RLIMIT_CPU, limits.cpu_s),
                       (resource.RLIMIT_NPROC, limits.nproc),
                       (resource.RLIMIT_FSIZE, limits.fsize_mb * mb),
                       (resource.RLIMIT_NOFILE, limits.nofile),
                       (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (value, value))


def jail(mode: str, slot: int, limits: Limits, argv: list[str]) -> None:
    """Set up the sandbox around the current process, then exec `argv` (never returns)."""
    is_root = os.geteuid() == 0
    reveal = [sys.base_prefix, sys.prefix, os.path.dirname(os.path.dirname(__file__))]
    drop = is_root and mode != "userns"
    if drop and mode == "rlimits" and any(_closed_ancestor(p) for p in reveal):
        drop = False  # without a mount namespace the interpreter would be out of reach
        print("codeselect sandbox: Python lives under a closed folder; running as root "
              "(rlimits mode: weak isolation)", file=sys.stderr)
    uid = BASE_UID + slot if drop else os.getuid()
    if mode in ("namespaces", "userns"):
        _lock_filesystem(limits, uid, reveal if drop else [], keep=reveal)
        workdir = "/tmp/work"
    else:
        import tempfile

        workdir = tempfile.mkdtemp(prefix="codeselect-sandbox-")
        os.chown(workdir, uid, uid)
    if mode == "userns":  # the process cap counts all of the user's processes: leave headroom
        nproc = len([p for p in os.listdir("/proc") if p.isdigit()])
        limits = Limits(**{**asdict(limits), "nproc": limits.nproc + nproc})
    _set_limits(limits)
    if drop:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.chdir(workdir)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "PYTHONPATH")}
    env.update(HOME=workdir, TMPDIR=workdir, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1",
               CODESELECT_SANDBOX=mode, CODESELECT_SANDBOX_DIR=workdir)
    os.execve(argv[0], argv, env)


def _main() -> None:
    args = sys.argv[1:]
    sep = args.index("--")
    spec = json.loads(args[0])
    jail(spec["mode"], int(spec["slot"]), Limits(**spec["limits"]), args[sep + 1:])


if __name__ == "__main__":
    _main()
