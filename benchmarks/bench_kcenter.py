"""kcenter: ours vs the reference's own loop, side by side in one run.

    python benchmarks/bench_kcenter.py                       # 92,000 x 768, k = 10,000
    python benchmarks/bench_kcenter.py --n 20000 --k 2000    # a quick run

The reference (SYSTEM.md section 4) keeps a running minimum and, per pick, makes one n x 1 pass of
scikit-learn's `pairwise_distances` (float32 inputs computed in float64), `np.minimum`, `np.argmax`,
and checks the pick is new against its Python list of picks. Its first --ref-steps steps run for real
(their picks must equal ours, from the same first point); single steps with t picks already made are
timed at a few t, and the total is the per-step cost a + b t fitted to those, summed over all steps.
Ours: `codeselect.selectors.kcenter.greedy_kcenter` in float64 (the reference's distance keys).
Writes benchmarks/results/kcenter.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_baselines import synthetic_pool  # noqa: E402

from codeselect.selectors.kcenter import greedy_kcenter, reference_first_point  # noqa: E402


def reference_step(features: np.ndarray, min_d: np.ndarray, picks: list) -> np.ndarray:
    """One step of the reference's loop; appends the pick and returns the new running minimum."""
    from sklearn.metrics import pairwise_distances

    new = np.argmax(min_d)
    assert new not in picks
    picks.append(new)
    return np.minimum(min_d, pairwise_distances(features, features[new].reshape(1, -1), metric="euclidean"))


def reference_run(features: np.ndarray, first: int, steps: int) -> tuple[list[int], list[float]]:
    """The reference's loop for `steps` picks after the first: picks and per-step seconds."""
    from sklearn.metrics import pairwise_distances

    picks: list = [first]
    min_d = pairwise_distances(features, features[first].reshape(1, -1), metric="euclidean")
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        min_d = reference_step(features, min_d, picks)
        times.append(time.perf_counter() - t0)
    return [int(p) for p in picks], times


def probe_step(features: np.ndarray, picks: list[int], repeats: int = 3) -> float:
    """Seconds of one reference step with `picks` already made (its list check grows with them)."""
    from sklearn.metrics import pairwise_distances

    min_d = pairwise_distances(features, features[picks[-1]].reshape(1, -1), metric="euclidean")
    as_numpy = [np.int64(p) for p in picks]  # the reference's list holds numpy integers
    times = []
    for _ in range(repeats):
        trial = list(as_numpy)
        t0 = time.perf_counter()
        try:
            reference_step(features, min_d, trial)
        except AssertionError:  # the probe's running minimum is not the real one; the cost is the same
            pass
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=92000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--k", type=int, default=10000)
    ap.add_argument("--clusters", type=int, default=200)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ref-steps", type=int, default=200, help="reference steps run for real")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "kcenter.md"))
    args = ap.parse_args()
    x = synthetic_pool(args.n, args.d, args.clusters)
    features = x.numpy()
    first = reference_first_point(args.n, args.seed)

    ref_picks, step_times = reference_run(features, first, min(args.ref_steps, args.k - 1))
    t0 = time.perf_counter()
    picks, stats = greedy_kcenter(x.double(), args.k, first, progress=True)
    ours_s = time.perf_counter() - t0
    same = picks[:len(ref_picks)] == ref_picks

    ts = [len(ref_picks) / 2.0] + [float(t) for t in (args.k // 2, args.k - 1) if t > len(ref_picks)]
    cost = [statistics.mean(step_times)] + [probe_step(features, picks[:int(t)]) for t in ts[1:]]
    b, a = np.polyfit(ts, cost, 1) if len(ts) > 1 else (0.0, cost[0])
    ref_total = float(np.sum(a + b * np.arange(1, args.k)))
    head = (f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), load average at start {os.getloadavg()[0]:.1f} "
            "(shared with other jobs: the two sides run back to back in one process)")
    probes = ", ".join(f"t={t:,.0f}: {c * 1e3:.0f} ms" for t, c in zip(ts, cost))
    lines = ["# kcenter: ours vs the reference's loop", "",
             f"`python benchmarks/bench_kcenter.py --n {args.n} --d {args.d} --k {args.k} --clusters {args.clusters}`",
             "", head, "",
             f"Pool: {args.n:,} x {args.d} synthetic clustered unit vectors ({args.clusters} clusters), "
             f"k = {args.k:,}, first point `RandomState({args.seed}).choice(n)` = {first}.", "",
             "| implementation | time | picks |", "|---|---|---|",
             f"| ours: lazy greedy, float64, {stats['refreshes']} full refreshes | {ours_s:.1f} s measured "
             f"| covering radius {stats['radius']:.4f} |",
             f"| reference: one n x 1 `pairwise_distances` pass per pick, first {len(ref_picks) - 1} steps "
             f"| {sum(step_times):.1f} s measured | identical to ours: {same} |",
             f"| reference: all {args.k - 1:,} steps | **{ref_total:,.0f} s extrapolated** "
             f"(per-step cost a + b t fitted to {probes}) | |", "",
             f"Speed-up: **{ref_total / ours_s:.0f}x** (ours measured vs the reference extrapolated).", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
