"""Run jobs in parallel sandboxes; a sandbox that breaks never loses other jobs' results.

One sandbox per worker (its own slot of uids), each pulling the next job from a shared queue, so
load balances itself. A job is `{"key", "setup", "runs": [{"name", "inputs", "limits", "total"}]}`
(see `jail.py`); its host-side deadline is the sum of its runs' totals plus a margin. A sandbox that
misses it, dies or reports an infrastructure error is killed and replaced, and the job re-run once
in the fresh one; a job that still gets no result is returned as `{"sandbox_error": ...}`.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Protocol

from codeselect.evaluation.sandbox import (Limits, Sandbox, SandboxError, check_sandbox,
                                           lease_slots)

log = logging.getLogger(__name__)

RUN_MARGIN_S = 2.0   # per run: process start and teardown on top of its total deadline
JOB_MARGIN_S = 10.0


def job_deadline(job: dict[str, Any]) -> float:
    """Seconds the host waits for a job's result before it kills the sandbox."""
    return JOB_MARGIN_S + sum(r["total"] + RUN_MARGIN_S for r in job["runs"])


class Collector(Protocol):
    """Follows one attempt at a job: sees each answer, then the run summaries."""

    def answer(self, run: int, line: bytes) -> bool: ...
    def done(self, result: dict[str, Any]) -> dict[str, Any]: ...


def _run_one(sb: Sandbox, job: dict[str, Any], collector: Collector | None) -> dict[str, Any]:
    res = sb.submit(job, job_deadline(job), collector.answer if collector else None)
    broken = [r for r in res["runs"] if r["end"] == "jail_error"]
    if broken:
        sb.close()
        raise SandboxError(f"sandbox {sb.slot} could not start a run: {broken[0]['detail']}")
    return collector.done(res) if collector else res


def execute_jobs(jobs: list[dict[str, Any]], *, workers: int, limits: Limits = Limits(),
                 mode: str = "auto", progress: Callable[[int], None] | None = None,
                 collect: Callable[[dict[str, Any]], Collector] | None = None
                 ) -> dict[str, dict[str, Any]]:
    """Run every job; return key -> the sandbox's result or `{"sandbox_error": True}`. With
    `collect`, each attempt at a job gets a fresh collector (`collect(job)`), which sees every
    answer as it arrives and makes the result (`done`); without, runs keep their `outputs`."""
    workers = max(1, min(workers, len(jobs) or 1))
    mode = check_sandbox(mode, limits)  # a sandbox that cannot start is an error, not failed tasks
    todo: queue.Queue[dict[str, Any]] = queue.Queue()
    for job in sorted(jobs, key=lambda j: -job_deadline(j)):  # longest first
        todo.put(job)
    results: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()
    started = time.time()

    def serve(slot: int) -> None:
        sb: Sandbox | None = None
        try:
            while True:
                try:
                    job = todo.get_nowait()
                except queue.Empty:
                    return
                res: dict[str, Any] | None = None
                for attempt in (1, 2):
                    try:
                        if sb is None or sb.proc.poll() is not None:
                            sb = Sandbox(mode, slot, limits)
                        res = _run_one(sb, job, collect(job) if collect else None)
                        break
                    except SandboxError as exc:
                        log.warning("%s (attempt %d for %s)", exc, attempt, job["key"])
                        if sb is not None:
                            sb.close()
                        sb = None
                if res is None:
                    res = {"key": job["key"], "sandbox_error": True}
                with lock:
                    results[job["key"]] = res
                if progress:
                    progress(1)
        finally:
            if sb is not None:
                sb.close()

    with lease_slots(workers) as slots:
        threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in slots]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    log.info("executed %d job(s) in %.1fs", len(jobs), time.time() - started)
    return results
