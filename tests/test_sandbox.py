"""Hostile generations fail their task and leave the host, the other tasks and the results intact."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from codeselect.evaluation.benchmarks import load_benchmark
from codeselect.evaluation.execute import execute_jobs
from codeselect.evaluation.sandbox import Limits, detect_mode, sandboxed_command
from codeselect.evaluation.scoring import score

HEADER = "def add(x: int, y: int):\n"


def _hostile(body: str) -> str:
    """A solution of HumanEval/53 (add) that runs `body` first and only answers correctly when the
    attack worked (`ok` true): a hostile sample that passes means the sandbox let it through."""
    return ("import os, sys, ctypes, pathlib, socket, signal, subprocess\n" + HEADER
            + textwrap.indent(f"ok = False\n{body}\nif ok:\n    return x + y\nraise RuntimeError('blocked')",
                              "    "))


@pytest.fixture(scope="module")
def humaneval(shared):
    return load_benchmark("humaneval", str(shared / "data/evalplus/HumanEvalPlus-v0.1.10.jsonl"))


@pytest.fixture()
def sentinel(repo):
    """A world-writable folder on the host file system (visible inside the sandbox, read-only
    there): only the sandbox's mounts, not file permissions, keep generated code out of it."""
    d = repo / ".cache" / "test" / "sandbox-sentinel"
    d.mkdir(parents=True, exist_ok=True)
    for f in d.iterdir():
        f.unlink()
    os.chmod(d, 0o777)
    keep = d / "keep.txt"
    keep.write_text("host data")
    os.chmod(keep, 0o666)
    return d


def test_mode_choice():
    if os.geteuid() == 0:
        assert detect_mode() in ("namespaces", "rlimits")
        with pytest.raises(ValueError, match="unprivileged"):
            sandboxed_command(["true"], mode="userns")  # host root: no process cap there
    else:
        assert detect_mode() in ("userns", "rlimits")


@pytest.mark.parametrize("mode", ["auto", pytest.param("userns", marks=pytest.mark.slow)])
def test_hostile_generations_fail_and_the_host_is_untouched(humaneval, sentinel, cache_dir, mode):
    if mode == "userns" and detect_mode() != "userns":
        pytest.skip("unprivileged user namespaces are for non-root users with namespaces")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    keep = sentinel / "keep.txt"
    bomb = "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass"
    attacks = {
        "write_outside": f"pathlib.Path('{sentinel}/pwned').write_text('x'); ok = True",
        "delete_outside": f"ok = ctypes.CDLL(None).unlink(b'{keep}') == 0",
        "truncate_outside": f"fd = os.open('{keep}', os.O_WRONLY | os.O_TRUNC); ok = True",
        "kill_parent": ("libc = ctypes.CDLL(None)\nppid = os.getppid()\n"
                        "libc.kill(ppid, 9); libc.kill(1, 9); libc.kill(-1, 9)\n"
                        "import time; time.sleep(0.3)\nok = libc.kill(ppid, 0) != 0"),
        "spawn_shell": (f"pid = os.posix_spawn('/bin/sh', ['sh', '-c', 'echo x > {sentinel}/shell; "
                        f"kill -9 -1'], {{}})\nok = os.waitpid(pid, 0)[1] == 0 and "
                        f"os.path.exists('{sentinel}/shell')"),
        "socket_out": f"socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'x'); ok = True",
        "socket_dns": "socket.create_connection(('pypi.org', 443), timeout=2); ok = True",
        "fork_bomb": (f"for _ in range(50):\n    os.posix_spawn(sys.executable, [sys.executable, '-c', "
                      f"{bomb!r}], {{}})\nimport time; time.sleep(0.5)\nok = False"),
        "infinite_loop": "while True:\n    pass",
        "huge_allocation": "b = bytearray(64 * 2**30); ok = True",
        "fill_tmp": "open('/dev/shm/fill', 'wb').write(b'0' * 2**28); ok = True",
    }
    benign = HEADER + "    return x + y\n"
    samples = [{"task_id": "HumanEval/53", "solution": benign}]
    samples += [{"task_id": "HumanEval/53", "solution": _hostile(a)} for a in attacks.values()]
    samples += [{"task_id": "HumanEval/53", "solution": benign}]
    # one sandbox: every hostile sample runs before the last benign one, in the same sandbox
    res = score(samples, humaneval, workers=1, cache_dir=cache_dir, sandbox=mode)
    statuses = [(r["base_status"], r["plus_status"]) for r in res["eval"]["HumanEval/53"]]
    names = ["benign", *attacks, "benign_after"]
    got = dict(zip(names, statuses))
    assert got["benign"] == ("pass", "pass")
    assert got["benign_after"] == ("pass", "pass"), got
    for name in attacks:
        assert got[name][0] != "pass", f"{name} passed: the sandbox let it through"
    assert keep.read_text() == "host data"
    assert sorted(p.name for p in sentinel.iterdir()) == ["keep.txt"]
    with pytest.raises(socket.timeout):
        listener.accept()  # nobody reached the host's socket
    listener.close()


def test_dead_sandbox_loses_no_other_results(humaneval, cache_dir):
    """A sandbox killed mid-batch: its unfinished jobs re-run one by one; the offender is failed."""
    from codeselect.evaluation.benchmarks import ground_truth

    gt = ground_truth(humaneval, ["HumanEval/53"], cache_dir)["HumanEval/53"]
    prob = {k: humaneval.problems["HumanEval/53"][k]
            for k in ("task_id", "entry_point", "base_input", "plus_input", "atol", "prompt")}
    good = HEADER + "    return x + y\n"
    hang = HEADER + "    while True:\n        pass\n"
    jobs = [{"key": k, "solution": s, "problem": prob, "expected": gt, "base_only": True,
             "budget": b} for k, s, b in
            [("a", good, 3.0), ("hang", hang, 0.5), ("b", good, 3.0), ("c", good, 3.0)]]
    # min_time_limit 60 s: the hanging job outlives the whole batch's budget, so the sandbox is killed
    opts = {"dataset": "humaneval", "min_time_limit": 60.0, "gt_time_limit_factor": 4.0}
    res = execute_jobs(jobs, opts, workers=1, limits=Limits(), startup_s=4.0)
    assert {k: res[k]["base"][0] for k in "abc"} == {"a": "pass", "b": "pass", "c": "pass"}
    assert res["hang"]["base"][0] == "fail" and res["hang"].get("sandbox_error") is True


@pytest.mark.skipif(os.geteuid() != 0 or detect_mode() != "namespaces", reason="needs root namespaces")
def test_sandbox_view(tmp_path):
    """Inside: unprivileged uid, PID 1 of its own PID namespace, no network, read-only host."""
    code = ("import os, socket, pathlib\n"
            "print(os.getuid() != 0, os.getpid() == 1 or os.getppid() == 1)\n"
            "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=1); print('net')\n"
            "except OSError:\n    print('nonet')\n"
            "try:\n    pathlib.Path('/root/x').touch(); print('rw')\nexcept OSError:\n    print('ro')\n")
    out = subprocess.run(sandboxed_command([sys.executable, "-c", code]), capture_output=True,
                         text=True, start_new_session=True, timeout=60)
    assert out.stdout.split() == ["True", "True", "nonet", "ro"], out.stderr


def test_concurrent_evaluations_get_distinct_sandbox_uids(tmp_path):
    """The process cap is per uid: two evaluations at once must not share one (leases are flocks)."""
    from codeselect.evaluation.sandbox import lease_slots

    with lease_slots(2, str(tmp_path)) as a:
        code = ("import sys; from codeselect.evaluation.sandbox import lease_slots\n"
                f"with lease_slots(2, {str(tmp_path)!r}) as b: print(*b)")
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        b = [int(x) for x in other.stdout.split()]
    assert len(a) == 2 and len(b) == 2 and not set(a) & set(b), other.stderr
    with lease_slots(2, str(tmp_path)) as again:
        assert again == a  # released when the holders ended
