"""The sandbox's trusted supervisor: builds a minimal root, then runs jobs one process at a time.

Started by the host (`sandbox.sandbox_command`) as `python -I jail.py SPEC`, stdlib-only and
imported by path. In `namespaces` (root) and `userns` modes it is PID 1 of fresh mount, PID,
network, IPC and UTS namespaces (made by `unshare`) and first builds the root the jobs see:

- a tmpfs holding only read-only binds of the interpreter (`/usr`, the Python prefix), the
  environment (the venv, with the benchmark data that ships inside packages hidden under empty
  read-only mounts) and this folder (`/codeselect`: our evaluation modules, no data);
- `/dev` with null, zero, full, random and urandom; `/proc` of the new PID namespace with
  `hidepid=2` (a job sees its own processes only); the root then remounted read-only.
  `pivot_root` drops the host tree: no home, no benchmark file, no caches, no sockets.

Then it serves jobs (JSON lines on stdin from the host). Every run of a job (base tests, plus
tests) is a fresh process, forked by the zygote (a fork of this process made before any job
data existed, which preloads the worker): a new tmpfs on /tmp owned by a uid no other run uses,
rlimits, no capabilities, no_new_privs, the seccomp filter (`seccomp.py`), a clean environment,
`worker.py` from the read-only `/`, the interpreter isolated (`-I`). This process measures each answer against
its own clock: the next input is sent only after the previous answer arrived, each answer has
its time limit and the run a total deadline; past either, every process of the run is killed.
When a run ends, for whatever reason, everything it started is killed and its tmpfs unmounted.
Answers are relayed to the host one by one as they came, byte-capped and unparsed: the host
compares each, and stops the run at the first wrong one (evalplus's fast check).
In `rlimits` mode (no namespaces, asked for by name) the host tree stays visible and runs get a
temp folder instead of a tmpfs; the uid drop, rlimits and seccomp filter still apply.
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seccomp  # noqa: E402

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2
_PR_SET_DUMPABLE, _PR_CAPBSET_DROP = 4, 24
NEW_ROOT = "/tmp/.codeselect-root"
PKG = "/codeselect"
HOST_TMP = "/.host-tmp"  # where binds of paths under the host's /tmp go: every run mounts its own /tmp


def inside(path: str) -> str:
    """Where a host path is bound in the sandbox root: as it is, except under /tmp (a CI checkout
    or its venv), which each run covers with a fresh tmpfs, so those go under HOST_TMP."""
    return HOST_TMP + path if path == "/tmp" or path.startswith("/tmp/") else path
DEVICES = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(src: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    if _libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {src} -> {target}: {os.strerror(err)}")


def _umount(target: str) -> None:
    _libc.umount2(target.encode(), _MNT_DETACH)


def _kept_flags(path: str) -> int:
    """Mount flags of `path` that a read-only remount of its bind must keep (statvfs bits)."""
    f = os.statvfs(path).f_flag
    return (f & (_MS_NOSUID | _MS_NODEV | _MS_NOEXEC | 1024 | 2048)) | ((1 << 21) if f & 4096 else 0)


def _bind(src_fd: int, target: str, is_dir: bool) -> None:
    """Bind what `src_fd` (an O_PATH descriptor, opened before /tmp was covered) points at onto
    `target`, read-only, keeping its nosuid/nodev/noexec/atime flags."""
    if is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    src = f"/proc/self/fd/{src_fd}"
    _mount(src, target, None, _MS_BIND | _MS_REC)
    _mount(None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _kept_flags(target))


def build_root(spec: dict) -> None:
    """Mount the minimal root and pivot into it (namespaces / userns modes)."""
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    binds: list[tuple[str, str]] = [(p, inside(p)) for p in spec["binds"]]
    binds.append((spec["pkg"], PKG))
    devs = [(f"/dev/{d}", f"/dev/{d}") for d in DEVICES if os.path.exists(f"/dev/{d}")]
    # opened (and typed) before /tmp is covered: a checkout or a Python may live under /tmp
    held = [(os.open(src, os.O_PATH), os.path.isdir(src), dst) for src, dst in binds + devs]
    _mount("tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=700")
    os.mkdir(NEW_ROOT)
    _mount("tmpfs", NEW_ROOT, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=4m,mode=755")
    root = NEW_ROOT
    for name in ("bin", "lib", "lib64", "lib32", "libx32", "sbin"):
        host = f"/{name}"
        if os.path.islink(host):
            os.symlink(os.readlink(host), f"{root}{host}")
        elif os.path.isdir(host):
            held.append((os.open(host, os.O_PATH), True, host))
    for fd, is_dir, dst in held:
        _bind(fd, root + dst, is_dir)
        os.close(fd)
    for hidden in map(inside, spec.get("hide", [])):
        if os.path.isdir(root + hidden):
            _mount("tmpfs", root + hidden, "tmpfs", _MS_NOSUID | _MS_NODEV | _MS_RDONLY, "size=4k")
        elif os.path.exists(root + hidden):
            _mount("/dev/null" if os.path.exists("/dev/null") else "tmpfs", root + hidden, None,
                   _MS_BIND)
    os.symlink("/tmp", f"{root}/dev/shm")  # POSIX semaphores land in the run's own tmpfs
    for d in ("tmp", "proc", ".old"):
        os.makedirs(f"{root}/{d}", exist_ok=True)
    try:
        _mount("proc", f"{root}/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "hidepid=2")
    except OSError:
        _mount("proc", f"{root}/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    if _libc.syscall(155, root.encode(), f"{root}/.old".encode()) != 0:  # pivot_root
        err = ctypes.get_errno()
        raise OSError(err, f"pivot_root: {os.strerror(err)}")
    os.chdir("/")
    _umount("/.old")
    os.rmdir("/.old")
    _mount(None, "/", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    if _writable("/"):
        raise OSError("the sandbox root is still writable")


def _drop_capabilities() -> None:
    """capset(2) to nothing (for the userns mode, where a run keeps the mapped root uid)."""
    hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()
    if _libc.syscall(126, hdr, data) != 0:  # capset
        raise OSError(ctypes.get_errno(), "capset")


def _writable(d: str) -> bool:
    try:
        fd = os.open(os.path.join(d, f".probe-{os.getpid()}"), os.O_CREAT | os.O_WRONLY, 0o600)
    except OSError:
        return False
    os.close(fd)
    os.unlink(os.path.join(d, f".probe-{os.getpid()}"))
    return True


# ----------------------------------------------------------------------------------- one run
class Supervisor:
    """Runs the host's jobs inside the sandbox, one process per run."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.mode: str = spec["mode"]
        self.limits: dict = spec["limits"]
        self.uid_base: int = spec["uid_base"]
        self.drop = os.geteuid() == 0 and self.mode != "userns" and not spec.get("keep_uid")
        self.runs = 0
        self.worker = (PKG if self.mode != "rlimits" else spec["pkg"]) + "/worker.py"
        self.cap = int(spec["output_bytes"])

    # -- per-run resources
    def _fresh_tmp(self, uid: int) -> str:
        mb = int(self.limits["tmpfs_mb"])
        if self.mode == "rlimits":
            import tempfile

            d = tempfile.mkdtemp(prefix="codeselect-run-")
            if self.drop:
                os.chown(d, uid, uid)
            return d
        owner = f",uid={uid},gid={uid}" if self.drop else ""
        _mount("tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={mb}m,mode=700{owner}")
        return "/tmp"

    def _drop_tmp(self, d: str) -> None:
        if self.mode == "rlimits":
            import shutil

            shutil.rmtree(d, ignore_errors=True)
        else:
            _umount("/tmp")

    # -- the zygote: a pristine fork of this process that forks every run
    def start_zygote(self) -> None:
        """Fork the zygote now, before any job data exists in this process: it preloads the
        worker and forks one child per run on request, so a run's process holds nothing but a
        clean interpreter and its own job (no answers or code of other runs, as an exec would)."""
        import socket

        self.sock, theirs = socket.socketpair()
        self.zpid = os.fork()
        if self.zpid == 0:
            self.sock.close()
            try:
                self._zygote(theirs)
            finally:
                os._exit(0)
        theirs.close()

    def _zygote(self, sock) -> None:
        import socket

        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 0)  # the host's pipes are the supervisor's alone
        os.dup2(null, 1)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # runs are reaped automatically
        sys.path.insert(0, os.path.dirname(self.worker))
        import worker  # noqa: F401  (and what it needs, before any run)
        for name in ("resource", "fcntl", "io", "re", "importlib", "shutil", "subprocess",
                     "faulthandler"):
            __import__(name)
        while True:
            msg, fds, _, _ = socket.recv_fds(sock, 4096, 2)
            if not msg:
                return
            cfg = json.loads(msg)
            pid = os.fork()
            if pid == 0:
                sock.close()
                self._child(cfg["uid"], cfg["tmp"], fds[0], fds[1])
            for fd in fds:
                os.close(fd)
            sock.send(str(pid).encode())

    def _spawn(self, uid: int, tmp: str, r_in: int, w_out: int) -> int:
        import socket

        socket.send_fds(self.sock, [json.dumps({"uid": uid, "tmp": tmp}).encode()], [r_in, w_out])
        reply = self.sock.recv(64)
        if not reply:
            raise RuntimeError("the sandbox's zygote is gone")
        return int(reply)

    def _kill_all(self, pid: int, uid: int) -> None:
        """Kill every process the run started, then reap what was reparented to us."""
        if self.drop:  # every process of the run's uid, from a helper of that uid
            helper = os.fork()
            if helper == 0:
                try:
                    os.setuid(uid)
                    for _ in range(1000):
                        os.kill(-1, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                finally:
                    os._exit(0)
            os.waitpid(helper, 0)
        elif self.mode != "rlimits":  # one uid for all: everything but us and the zygote
            keep = {1, os.getpid(), self.zpid}
            for _ in range(1000):
                pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in keep]
                if not pids:
                    break
                for p in pids:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        while True:
            try:
                got, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if got == 0:
                break
            if got == self.zpid:
                raise RuntimeError("the sandbox's zygote died")

    def _child(self, uid: int, tmp: str, r_in: int, w_out: int) -> None:
        """In the forked child: lock down, then run the worker (never returns)."""
        try:
            import fcntl
            import resource

            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _oom_score_adj(1000)
            os.setsid()
            hi_in, hi_out = (fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (r_in, w_out))
            os.dup2(hi_in, 3)
            os.dup2(hi_out, 4)
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1) if self.spec.get("debug") else (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(5, 1 << 16)
            lim = self.limits
            mem = int(lim["memory_mb"]) << 20
            for res, v in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_DATA, mem),
                           (resource.RLIMIT_STACK, mem), (resource.RLIMIT_CPU, int(lim["cpu_s"])),
                           (resource.RLIMIT_NPROC, int(lim["nproc"])),
                           (resource.RLIMIT_FSIZE, int(lim["fsize_mb"]) << 20),
                           (resource.RLIMIT_NOFILE, int(lim["nofile"])),
                           (resource.RLIMIT_CORE, 0)):
                resource.setrlimit(res, (v, v))
            for cap in range(64):  # nothing an exec could regain
                if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                    break
            if self.drop:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)  # a non-root uid: every capability is gone
            else:
                _drop_capabilities()
            seccomp.install()
            os.chdir("/" if self.mode != "rlimits" else tmp)
            os.environ.clear()
            os.environ.update({"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp,
                               "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
                               "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
            sys.dont_write_bytecode = True
            sys.argv = [self.worker]
            import tempfile

            tempfile.tempdir = None
            import worker
        except BaseException as exc:  # the sandbox is broken, not the code: say so to the host
            with open(4, "wb", closefd=False) as fh:
                fh.write(f"J {type(exc).__name__}: {exc}"[:300].encode(errors="replace") + b"\n")
            os._exit(127)
        try:
            worker.main()
        finally:
            os._exit(0)

    def run(self, setup: dict, inputs: list[str], limits: list[float], total: float,
            relay) -> dict:
        """One fresh process: send setup, then each input after the previous answer. Each
        answer goes to `relay`, which says whether to go on (the host stops at a wrong one)."""
        uid = self.uid_base + self.runs % 1000
        self.runs += 1
        started = time.monotonic()
        end_at = started + total
        tmp = self._fresh_tmp(uid)
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        try:
            pid = self._spawn(uid, tmp, r_in, w_out)
        finally:
            os.close(r_in)
            os.close(w_out)
        os.set_blocking(w_in, False)
        os.set_blocking(r_out, False)
        io = _Pipes(w_in, r_out, self.cap)
        answered = 0
        end, detail = "done", ""
        try:
            site = self.spec["site"] if self.mode == "rlimits" else [inside(d) for d in self.spec["site"]]
            setup_line = json.dumps({**setup, "site": site}) + "\n"
            got = io.send(setup_line.encode(), end_at) and io.recv(end_at)
            if got is None or got is False:
                end, detail = ("timeout" if time.monotonic() >= end_at else "died"), "loading"
            elif got.startswith(b"J"):
                end, detail = "jail_error", got[2:302].decode(errors="replace")
            elif got.startswith(b"L"):
                end, detail = "load_error", got[2:102].decode(errors="replace")
            elif got != b"R":
                end, detail = "protocol", "no ready line"
            else:
                for inp, limit in zip(inputs, limits):
                    t0 = time.monotonic()
                    deadline = min(t0 + limit, end_at)
                    got = io.send(inp.encode() + b"\n", deadline) and io.recv(deadline)
                    if got is None or got is False:
                        now = time.monotonic()
                        if now >= end_at:
                            end = "timeout"
                        elif now >= deadline:
                            end = "overrun"
                        else:
                            end = "died"
                        break
                    if got[:2] in (b"O ", b"N "):
                        answered += 1
                        if not relay(got):
                            end = "stopped"
                            break
                    elif got.startswith(b"E "):
                        end, detail = "exception", got[2:102].decode(errors="replace")
                        break
                    else:
                        end, detail = "protocol", "unexpected answer"
                        break
            if io.overflow:
                end = "too_large"
        finally:
            for fd in (w_in, r_out):
                os.close(fd)
            self._kill_all(pid, uid)
            self._drop_tmp(tmp)
        return {"end": end, "detail": detail, "answered": answered,
                "elapsed": round(time.monotonic() - started, 4)}


class _Pipes:
    """Non-blocking line I/O with deadlines and a byte cap (the job may never read or write)."""

    def __init__(self, w: int, r: int, cap: int) -> None:
        self.w, self.r, self.cap = w, r, cap
        self.buf = bytearray()
        self.scanned = 0  # bytes of buf known to hold no newline
        self.total = 0
        self.overflow = False
        for fd in (w, r):  # large answers in fewer reads (F_SETPIPE_SZ; best effort)
            try:
                import fcntl

                fcntl.fcntl(fd, 1031, 1 << 20)
            except OSError:
                pass

    def send(self, data: bytes, deadline: float) -> bool | None:
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            _, ready, _ = select.select([], [self.w], [], left)
            if not ready:
                return None
            try:
                view = view[os.write(self.w, view):]
            except BlockingIOError:
                continue
            except OSError:  # the job closed its end
                return False
        return True

    def recv(self, deadline: float) -> bytes | None | bool:
        while True:
            nl = self.buf.find(b"\n", self.scanned)
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[:nl + 1]
                self.scanned = 0
                return line
            self.scanned = len(self.buf)
            if len(self.buf) > self.cap:
                self.overflow = True
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.r], [], [], left)
            if not ready:
                return None
            try:
                chunk = os.read(self.r, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                return False
            self.total += len(chunk)
            self.buf += chunk


class _HostIn:
    """Lines from the host on stdin, readable without blocking: job lines between jobs, and
    `s <run number>` (stop that run) at any time; a stop for another run is dropped."""

    def __init__(self) -> None:
        self.buf = b""

    def _line(self, timeout: float | None) -> bytes | None:
        while b"\n" not in self.buf:
            if timeout is not None and not select.select([0], [], [], timeout)[0]:
                return None
            chunk = os.read(0, 1 << 20)
            if not chunk:
                return b""
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def job(self) -> dict | None:
        while True:
            line = self._line(None)
            if not line:
                return None
            if not line.startswith(b"s "):
                return json.loads(line)

    def stopped(self, run: int) -> bool:
        while True:
            line = self._line(0)
            if not line:
                return False
            if line == b"s %d" % run:
                return True


def serve(spec: dict) -> None:
    """Answer the host's jobs until stdin closes. Lines out: `A <answer>` per answer, `E <json>`
    at the end of each run (runs are numbered from 0 in this sandbox), `J <json>` when the job
    is done. The host grades answers as they come and sends `s <run>` at a wrong one; the run
    stops before its next input."""
    sup = Supervisor(spec)
    sup.start_zygote()
    out, host = sys.stdout.buffer, _HostIn()
    run_no = 0

    def relay(answer: bytes) -> bool:
        out.write(b"A " + answer + b"\n")
        out.flush()
        return not host.stopped(run_no)

    while (job := host.job()) is not None:
        for r in job["runs"]:
            res = sup.run(job["setup"], r["inputs"], r["limits"], r["total"], relay)
            out.write(b"E " + json.dumps({"name": r["name"], **res}).encode() + b"\n")
            out.flush()
            run_no += 1
        out.write(b"J " + json.dumps({"key": job["key"]}).encode() + b"\n")
        out.flush()


def _join_cgroup(group: str) -> None:
    """Move this process (and so everything it starts) into the host-made memory cgroup; runs
    are the first the kernel's OOM killer picks there, the supervisor the last."""
    with open(os.path.join(group, "cgroup.procs"), "w") as fh:
        fh.write("0")
    _oom_score_adj(-1000)


def _oom_score_adj(value: int) -> None:
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write(str(value))
    except OSError:  # best effort (some containers forbid lowering it)
        pass


def main() -> None:
    spec = json.loads(sys.argv[1])
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if spec.get("cgroup"):
        _join_cgroup(spec["cgroup"])
    if spec["mode"] in ("namespaces", "userns"):
        build_root(spec)
    _libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # no /proc/<pid>/mem or ptrace into the supervisor
    print("ready", flush=True)
    serve(spec)


if __name__ == "__main__":
    main()
