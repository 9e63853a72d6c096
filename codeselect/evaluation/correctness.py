"""Sanitize and score samples: evalplus's sanitizer and test semantics, a grader that cannot be gamed.

`load_samples` validates a samples file (evalplus's format: `{"task_id", "solution"}` or
`{"task_id", "completion"}` per line), `sanitize_samples` runs `evalplus.sanitize.sanitize` in
sandboxes (time-limited per sample), `score` runs every sample's tests in parallel sandboxes and
grades the outputs here (`grader.py`), returning evalplus's `*_eval_results.json` layout;
`pass_at_k` and `summarize` give the numbers.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from codeselect.data import iter_jsonl
from codeselect.errors import UserError
from codeselect.evaluation.benchmarks import Benchmark, ground_truth
from codeselect.evaluation.execute import execute_jobs
from codeselect.evaluation.sandbox import Limits

log = logging.getLogger(__name__)

SANITIZED_SUFFIX = "-sanitized.jsonl"


def load_samples(path: str | Path, bench: Benchmark) -> list[dict[str, Any]]:
    """Read and check a samples JSONL; problems raise UserError naming the file, line and key."""
    path = Path(path)
    if not path.is_file():
        raise UserError("samples file not found", file=path, key="samples")
    out: list[dict[str, Any]] = []
    for lineno, rec in iter_jsonl(path):
        if not isinstance(rec.get("task_id"), str):
            raise UserError("missing or non-string task_id", file=path, line=lineno,
                            key="task_id")
        code_key = "solution" if "solution" in rec else "completion"
        if not isinstance(rec.get(code_key), str):
            raise UserError("missing or non-string solution (or completion)", file=path,
                            line=lineno, key="solution")
        if rec["task_id"] not in bench.problems:
            raise UserError(f"unknown task id {rec['task_id']!r} for {bench.name}",
                            file=path, line=lineno, key="task_id")
        solution = rec.get("solution")
        if solution is None:  # a completion continues the prompt (evalplus's convention)
            solution = bench.problems[rec["task_id"]]["prompt"] + rec["completion"]
        out.append({"task_id": rec["task_id"], "solution": solution})
    if not out:
        raise UserError("no samples in file", file=path, key="samples")
    return out


def is_sanitized(path: str | Path) -> bool:
    """evalplus's naming: sanitized files end with `-sanitized.jsonl`."""
    return str(path).endswith(SANITIZED_SUFFIX)


def sanitized_name(path: str | Path) -> str:
    """`x.jsonl` -> `x-sanitized.jsonl` (evalplus's `sanitize` output name)."""
    name = Path(path).name
    return name if is_sanitized(name) else name[: -len(".jsonl")] + SANITIZED_SUFFIX \
        if name.endswith(".jsonl") else name + SANITIZED_SUFFIX


WIRE_BYTES_PER_S = 2e6  # time allowed per byte of input and answer crossing the sandbox pipes
# (2 MB/s: a 7 MB answer (HumanEval/15) gets 3.4 s on top of its 1 s limit, enough on a loaded
# 2-core machine, where 10 MB/s failed it; the honest transfer takes 0.2-0.4 s there unloaded)


def _encoded_inputs(bench: Benchmark, task_id: str, kind: str, expected: list
                    ) -> tuple[list[str], list[float]]:
    """A task's test inputs in wire form and, per input, the seconds its transfer may take: the
    input's and the expected answer's wire size at WIRE_BYTES_PER_S. evalplus times only the
    call; here the clock also covers encoding the answer, so a correct 10 MB answer must not
    time out for its size, and a wrong one gains at most the right answer's transfer time.
    Cached on the benchmark: samples share them."""
    key = (task_id, kind)
    if key not in bench._wire:
        from codeselect.evaluation.wire import encode

        lines = [encode(list(inp)) for inp in bench.problems[task_id][f"{kind}_input"]]
        extra = [(len(line) + len(encode(exp))) / WIRE_BYTES_PER_S
                 for line, exp in zip(lines, expected)]
        bench._wire[key] = (lines, extra)
    return bench._wire[key]


def sanitize_samples(samples: list[dict[str, Any]], bench: Benchmark, *, workers: int | None = None,
                     limits: Limits = Limits(), sandbox: str = "auto", timeout_s: float = 10.0,
                     max_kb: int = 256) -> list[dict[str, Any]]:
    """evalplus's sanitizer (keeps the entry point and what it depends on) on every sample, run
    in sandboxes: a sample over `max_kb`, or that makes the sanitizer fail or take longer than
    `timeout_s`, is kept raw (with a warning); the other samples are untouched by it."""
    from codeselect.evaluation.wire import decode, encode

    out = [dict(s) for s in samples]
    todo, kept_raw = [], []
    for i, s in enumerate(samples):
        if len(s["solution"].encode("utf-8", "replace")) > max_kb * 1024:
            kept_raw.append((s["task_id"], f"over {max_kb} KiB"))
        else:
            todo.append(i)
    workers = workers or os.cpu_count() or 1
    while todo:
        size = max(1, -(-len(todo) // workers))
        batches = [todo[k:k + size] for k in range(0, len(todo), size)]
        jobs = [{"key": f"sanitize#{b[0]}", "setup": {"program": "sanitize"},
                 "runs": [{"name": "sanitize", "limits": [timeout_s] * len(b),
                           "total": 60.0 + timeout_s * len(b),
                           "inputs": [encode([samples[i]["solution"],
                                              bench.entry_point(samples[i]["task_id"])])
                                      for i in b]}]}
                for b in batches]
        got = execute_jobs(jobs, workers=workers, limits=limits, mode=sandbox)
        todo = []
        for job, batch in zip(jobs, batches):
            run = (got.get(job["key"]) or {}).get("runs", [{}])[0]
            answers = run.get("outputs", [])
            for i, line in zip(batch, answers):
                try:
                    value = decode(line[2:]) if line.startswith("O ") else None
                except ValueError:
                    value = None
                if isinstance(value, str):
                    out[i]["solution"] = value
                else:
                    kept_raw.append((samples[i]["task_id"], "unreadable answer"))
            if len(answers) < len(batch):  # the sanitizer broke on batch[len(answers)]
                bad = batch[len(answers)]
                why = run.get("end", "no result") if run else "sandbox error"
                kept_raw.append((samples[bad]["task_id"], f"sanitizer {why}"))
                todo += batch[len(answers) + 1:]
    for tid, why in kept_raw:
        log.warning("%s: kept raw, not sanitized (%s)", tid, why)
    return out


def _fail_tests(bench: Benchmark, task_id: str, kind: str, res: list | None) -> list:
    """evalplus's `*_fail_tests`: the last input run before failing (fast check)."""
    if not res or res[0] == "pass" or not res[1]:
        return []
    inputs = bench.problems[task_id][f"{kind}_input"]
    failed = [inputs[len(res[1]) - 1]]
    if bench.name == "mbpp":
        from evalplus.data.mbpp import mbpp_serialize_inputs

        failed = mbpp_serialize_inputs(task_id, failed)
    return failed


def score(samples: list[dict[str, Any]], bench: Benchmark, *, workers: int | None = None,
          limits: Limits = Limits(), sandbox: str = "auto", cache_dir: str | Path | None = None,
          min_time_limit: float = 1.0, gt_time_limit_factor: float = 4.0,
          base_only: bool = False) -> dict[str, Any]:
    """Check every sample; return evalplus's results layout (`date`, `hash`, `eval`) plus
    `sandbox_errors` (samples whose sandbox gave no result and that were marked failed).

    The sandbox gets each sample's code and test inputs, never the expected outputs; it answers
    with the outputs, which `grader.RunGrader` compares here as they arrive (evalplus's rules). Time limits are
    evalplus's: per input max(min_time_limit, factor x ground-truth time), per test set
    min(60 s, their sum) + 2 s (its process join), measured outside the generated code, plus
    the transfer allowance of `_encoded_inputs`."""
    from codeselect.evaluation.grader import RunGrader

    base_only = base_only or bench.base_only
    workers = workers or os.cpu_count() or 1
    kinds = ("base",) if base_only else ("base", "plus")
    task_ids = list(dict.fromkeys(s["task_id"] for s in samples))
    gt = ground_truth(bench, task_ids, cache_dir)
    not_none = set()
    if bench.name == "mbpp":
        from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS

        not_none = set(MBPP_OUTPUT_NOT_NONE_TASKS)
    jobs, seen = [], Counter()
    for s in samples:
        tid = s["task_id"]
        key = f"{tid}#{seen[tid]}"
        seen[tid] += 1
        ep = bench.entry_point(tid)
        runs = []
        for kind in kinds:
            lims = [max(min_time_limit, gt_time_limit_factor * t) for t in gt[tid][f"{kind}_time"]]
            lines, extra = _encoded_inputs(bench, tid, kind, gt[tid][kind])
            runs.append({"name": kind, "inputs": lines,
                         "limits": [a + b for a, b in zip(lims, extra)],
                         "total": min(60.0, sum(lims)) + 2.0 + sum(extra)})
        jobs.append({"key": key, "runs": runs,
                     "setup": {"program": "check", "code": s["solution"], "entry_point": ep,
                               "not_none": ep in not_none}})
    by_key = {job["key"]: (s["task_id"], [r["name"] for r in job["runs"]])
              for job, s in zip(jobs, samples)}

    class Grades:
        """One attempt at a job: grades each answer as it arrives (`grader.RunGrader`)."""

        def __init__(self, job: dict[str, Any]) -> None:
            tid, kinds_ = by_key[job["key"]]
            prob = bench.problems[tid]
            self.graders = [RunGrader(bench.name, prob["entry_point"], prob[f"{k}_input"],
                                      gt[tid][k], prob.get("atol", 0) or 0) for k in kinds_]

        def answer(self, run: int, line: bytes) -> bool:
            return self.graders[run].answer(line)

        def done(self, result: dict[str, Any]) -> dict[str, Any]:
            return {"graded": {r["name"]: list(g.result(r["end"]))
                               for g, r in zip(self.graders, result["runs"])}}

    from tqdm import tqdm

    with tqdm(total=len(jobs), desc=f"{bench.name} checks", unit="sample", disable=None) as bar:
        got = execute_jobs(jobs, workers=workers, limits=limits, mode=sandbox, progress=bar.update,
                           collect=Grades)
    results: dict[str, Any] = {"date": datetime.now().strftime("%Y-%m-%d %H:%M"),
                               "hash": bench.hash, "eval": {}}
    errors = []
    for job, s in zip(jobs, samples):
        tid = s["task_id"]
        res = got.get(job["key"]) or {"sandbox_error": True}
        status: dict[str, list | None] = {"base": None, "plus": None}
        if res.get("sandbox_error"):
            errors.append(job["key"])
            status = {k: ["fail", []] for k in kinds}
        else:
            status.update(res["graded"])
        plus = None if base_only else status.get("plus")
        results["eval"].setdefault(tid, []).append({
            "task_id": tid,
            "solution": s["solution"],
            "base_status": status["base"][0],
            "plus_status": plus[0] if plus else None,
            "base_fail_tests": _fail_tests(bench, tid, "base", status["base"]),
            "plus_fail_tests": _fail_tests(bench, tid, "plus", plus),
        })
    results["sandbox_errors"] = errors
    return results


def pass_at_k(results: dict[str, Any], ks: tuple[int, ...] = (1, 10, 100)
              ) -> dict[str, dict[str, float | None]]:
    """evalplus's unbiased pass@k over tasks, on base tests and on base + plus tests."""
    import numpy as np
    from evalplus.eval import estimate_pass_at_k

    per_task = list(results["eval"].values())
    total = np.array([len(r) for r in per_task])
    base = np.array([sum(x["base_status"] == "pass" for x in r) for r in per_task])
    has_plus = all(x["plus_status"] is not None for r in per_task for x in r)
    plus = np.array([sum(x["base_status"] == x["plus_status"] == "pass" for x in r)
                     for r in per_task])
    out = {}
    for k in ks:
        if total.min() >= k:
            out[f"pass@{k}"] = {
                "base": float(estimate_pass_at_k(total, base, k).mean()),
                "plus": float(estimate_pass_at_k(total, plus, k).mean()) if has_plus else None}
    return out


def summarize(results: dict[str, Any], bench: Benchmark, **extra: Any) -> dict[str, Any]:
    """`summary.json`: benchmark, n_tasks, pass@1 {base, plus} (fractions), pass@k when n > 1."""
    ks = pass_at_k(results)
    n_samples = sum(len(r) for r in results["eval"].values())
    summary: dict[str, Any] = {
        "benchmark": bench.name,
        "dataset_source": bench.source,
        "base_tests_only": bench.base_only,
        "dataset_hash": bench.hash,
        "n_tasks": len(results["eval"]),
        "n_tasks_in_benchmark": len(bench.problems),
        "n_samples": n_samples,
        "pass@1": ks["pass@1"],
    }
    if n_samples > len(results["eval"]):
        summary["pass@k"] = ks
    summary["sandbox_errors"] = list(results.get("sandbox_errors", []))
    summary.update(extra)
    return summary


def per_task_rows(results: dict[str, Any]) -> list[list[Any]]:
    """Rows (task_id, sample, base_status, plus_status) for the W&B per-task table."""
    return [[tid, i, r["base_status"], r["plus_status"]]
            for tid, rs in results["eval"].items() for i, r in enumerate(rs)]


def write_eval_results(results: dict[str, Any], path: str | Path) -> Path:
    """evalplus's `*_eval_results.json` (date, hash, eval), written atomically."""
    from codeselect.data import write_json

    payload = {k: results[k] for k in ("date", "hash", "eval")}
    write_json(path, payload)
    return Path(path)
