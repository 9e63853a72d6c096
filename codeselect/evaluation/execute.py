"""Run check jobs in parallel sandboxes; a crashed or killed sandbox never loses other jobs' results.

Jobs are spread over `workers` sandboxes (one per core, each with its own uid and process cap),
balanced by their time budget. Each sandbox streams one JSON line per finished job. If a sandbox
dies, times out or reports an infrastructure error, the jobs it had not finished are re-run one by
one, each in a fresh sandbox; a job that still gives no result is marked failed (`sandbox_error`).
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from codeselect.evaluation.sandbox import Limits, check_sandbox, lease_slots, sandboxed_command

log = logging.getLogger(__name__)

Result = dict[str, Any]  # {"base": [status, details], "plus": [...] | None} or {"error": str}


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_sandbox(jobs: list[dict[str, Any]], opts: dict[str, Any], *, slot: int, limits: Limits,
                mode: str, timeout: float, on_result: Callable[[], None] | None = None
                ) -> dict[str, Result]:
    """Run `jobs` in one fresh sandbox; return the results it reported (possibly fewer)."""
    read_fd, write_fd = os.pipe()
    argv = [sys.executable, "-m", "codeselect.evaluation.worker", str(write_fd)]
    proc = subprocess.Popen(sandboxed_command(argv, slot=slot, limits=limits, mode=mode),
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, pass_fds=(write_fd,), start_new_session=True,
                            cwd="/")
    os.close(write_fd)
    wanted = {job["key"] for job in jobs}
    results: dict[str, Result] = {}
    stderr: list[bytes] = []

    def feed() -> None:
        try:
            proc.stdin.write(pickle.dumps({"jobs": jobs, "opts": opts}))
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def drain() -> None:  # keep the sandbox from blocking on a full stderr pipe
        stderr.append(proc.stderr.read()[-4000:])

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=drain, daemon=True)]
    for t in threads:
        t.start()
    timer = threading.Timer(timeout, _kill_group, args=(proc,))
    timer.start()
    try:
        with os.fdopen(read_fd, "rb") as fh:
            for raw in fh:
                try:
                    line = json.loads(raw)
                    key = line["key"]
                except (ValueError, KeyError, TypeError):
                    log.warning("sandbox %d: unreadable result line dropped", slot)
                    continue
                if key in wanted and key not in results:  # first answer per job wins
                    results[key] = line
                    if on_result is not None and "error" not in line:
                        on_result()
    finally:
        timer.cancel()
        _kill_group(proc)  # the sandbox's PID namespace dies with its init
        for t in threads:
            t.join(timeout=5)
    if len(results) < len(jobs):
        tail = b"".join(stderr).decode(errors="replace").strip().splitlines()[-3:]
        log.warning("sandbox %d ended with %d/%d results (rc %s)%s", slot, len(results), len(jobs),
                    proc.returncode, (": " + " | ".join(tail)) if tail else "")
    return results


def _balance(jobs: list[dict[str, Any]], n: int) -> list[list[dict[str, Any]]]:
    """Longest-budget-first greedy split of jobs into n bins of similar total time budget."""
    bins: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    load = [0.0] * n
    for job in sorted(jobs, key=lambda j: -j["budget"]):
        i = load.index(min(load))
        bins[i].append(job)
        load[i] += job["budget"]
    return [b for b in bins if b]


def execute_jobs(jobs: list[dict[str, Any]], opts: dict[str, Any], *, workers: int,
                 limits: Limits, mode: str = "auto", startup_s: float = 30.0,
                 progress: Callable[[int], None] | None = None) -> dict[str, Result]:
    """Run every job (dicts with `key`, `budget` seconds, and worker fields); return key -> result."""
    workers = max(1, min(workers, len(jobs) or 1))
    mode = check_sandbox(mode, limits)  # a sandbox that cannot start is an error, not failed tasks
    results: dict[str, Result] = {}
    lock = threading.Lock()

    free_slots: queue.Queue[int] = queue.Queue()

    def run_bin(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        slot = free_slots.get()  # one uid per concurrently running sandbox
        try:
            return _run_bin(slot, batch)
        finally:
            free_slots.put(slot)

    def _run_bin(slot: int, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        budget = startup_s + sum(j["budget"] for j in batch)
        got = run_sandbox(batch, opts, slot=slot, limits=limits, mode=mode, timeout=budget,
                          on_result=(lambda: progress(1)) if progress else None)
        good = {k: v for k, v in got.items() if "error" not in v}
        errors = [v["error"] for v in got.values() if "error" in v]
        if errors:
            log.warning("sandbox %d: %d infrastructure error(s), e.g. %s", slot, len(errors), errors[0])
        with lock:
            results.update(good)
        return [j for j in batch if j["key"] not in good]

    started = time.time()
    with lease_slots(workers) as slots, ThreadPoolExecutor(workers) as pool:
        for slot in slots:  # one uid per concurrently running sandbox, unique on this machine
            free_slots.put(slot)
        leftovers = [j for b in pool.map(run_bin, _balance(jobs, workers)) for j in b]
        if leftovers:
            log.warning("re-running %d job(s) one by one in fresh sandboxes", len(leftovers))
            second = list(pool.map(lambda j: (j, run_bin([j])), leftovers))
        else:
            second = []
    for job, missing in second:
        if missing:
            if progress:
                progress(1)
            results[job["key"]] = {"base": ["fail", []],
                                   "plus": None if job.get("base_only") else ["fail", []],
                                   "sandbox_error": True}
    log.info("executed %d job(s) in %.1fs", len(jobs), time.time() - started)
    return results
