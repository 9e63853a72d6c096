"""Is a pass@1 difference real? Paired per-task tests for two runs on the same benchmark.

Two runs scored on the same tasks give, per task, a pass (1) or a fail (0) each (evalplus's greedy
protocol: one sample per task; with several samples the first one counts). The runs are paired by
task, so the right tests look at the discordant tasks only:

- exact McNemar test: under "no difference", each of the b + c tasks that one run solves and the
  other does not is equally likely to go either way, so min(b, c) is Binomial(b + c, 1/2); the
  two-sided p-value is min(1, 2 * P[X <= min(b, c)]). Exact, since HumanEval+ (164 tasks) gives
  few discordant pairs, where the chi-square approximation is poor.
- paired bootstrap 95% interval of pass@1(A) - pass@1(B): resample the tasks with replacement and
  take the 2.5 / 97.5 percentiles of the difference. The difference of a resample depends only on
  how many of its tasks are +1 (A only), -1 (B only) or 0, so each resample is one multinomial draw
  of those three counts: the same distribution as resampling the task list, in O(1) per resample.

Written here (a dozen lines with `math.comb` and numpy) rather than pulling in scipy/statsmodels
for two formulas; the tests check them against hand-computed binomial sums and scipy.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 10000
BOOTSTRAP_SEED = 0


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b tasks solved by A only and c by B only."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def bootstrap_diff_ci(a: Sequence[int], b: Sequence[int], *, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(a) - mean(b) over paired task resamples (a, b: 0/1 per task)."""
    d = np.asarray(a, dtype=np.int64) - np.asarray(b, dtype=np.int64)
    n = len(d)
    if n == 0:
        return (math.nan, math.nan)
    probs = np.array([(d == 1).sum(), (d == -1).sum(), (d == 0).sum()], dtype=np.float64) / n
    counts = np.random.default_rng(seed).multinomial(n, probs, size=resamples)
    diffs = (counts[:, 0] - counts[:, 1]) / n
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


@dataclass
class PairTest:
    """Run A vs run B on one benchmark metric (`base` or `plus` tests)."""

    benchmark: str
    metric: str
    a: str
    b: str
    n_tasks: int
    pass_a: float
    pass_b: float
    diff: float
    ci_low: float
    ci_high: float
    a_only: int      # tasks A solves and B does not (McNemar's b)
    b_only: int      # tasks B solves and A does not (McNemar's c)
    p_value: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def compare(benchmark: str, metric: str, name_a: str, outcomes_a: Mapping[str, bool],
            name_b: str, outcomes_b: Mapping[str, bool], *, resamples: int = BOOTSTRAP_RESAMPLES,
            seed: int = BOOTSTRAP_SEED) -> PairTest:
    """McNemar and the bootstrap interval on the tasks both runs were scored on."""
    tasks = sorted(set(outcomes_a) & set(outcomes_b))
    a = [int(bool(outcomes_a[t])) for t in tasks]
    b = [int(bool(outcomes_b[t])) for t in tasks]
    a_only = sum(x and not y for x, y in zip(a, b))
    b_only = sum(y and not x for x, y in zip(a, b))
    n = len(tasks)
    pa, pb = (sum(a) / n, sum(b) / n) if n else (math.nan, math.nan)
    lo, hi = bootstrap_diff_ci(a, b, resamples=resamples, seed=seed)
    return PairTest(benchmark, metric, name_a, name_b, n, pa, pb, pa - pb, lo, hi, a_only, b_only,
                    mcnemar_exact(a_only, b_only))


def outcomes_from_eval_results(path: str | Path) -> dict[str, dict[str, bool]]:
    """{"base": {task: passed}, "plus": {task: passed base and plus}} from evalplus's
    `*_eval_results.json` (first sample of each task)."""
    data = json.loads(Path(path).read_text())
    base: dict[str, bool] = {}
    plus: dict[str, bool] = {}
    for task, results in data["eval"].items():
        if not results:
            continue
        first = results[0]
        base[task] = first.get("base_status") == "pass"
        if first.get("plus_status") is not None:  # absent: base tests only (offline HumanEval)
            plus[task] = base[task] and first["plus_status"] == "pass"
    return {"base": base, "plus": plus}


def pairwise(benchmark: str, runs: Mapping[str, Mapping[str, Mapping[str, bool]]],
             metrics: Sequence[str] = ("base", "plus")) -> list[PairTest]:
    """Every pair of runs (in the given order) on `benchmark`: {run: {metric: {task: passed}}}."""
    names = list(runs)
    out = []
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            for metric in metrics:
                if runs[x].get(metric) and runs[y].get(metric):
                    out.append(compare(benchmark, metric, x, runs[x][metric], y, runs[y][metric]))
    return out
