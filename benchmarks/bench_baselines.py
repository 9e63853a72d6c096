"""dq: ours vs the n x n reference computation (kcenter: see bench_kcenter.py).

    python benchmarks/bench_baselines.py                     # 92,000 x 768 (tens of minutes)
    python benchmarks/bench_baselines.py --n 20000           # a quick run

dq: ours on the full pool (time, peak RSS of a fresh process), and against the n x n reference
(similarity matrix, gains re-summed over the chosen set each step, as its NaiveGreedy; every bin
n // bins) on small pools: identical bins required, speed ratio reported. Writes a markdown table.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codeselect.selectors.dq import graphcut_bins  # noqa: E402


def synthetic_pool(n: int, d: int, clusters: int, seed: int = 0, noise: float = 1.0) -> torch.Tensor:
    """Clustered unit vectors: gaussian blobs around `clusters` random centres, L2-normalised."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=gen)
    x = centres[torch.randint(clusters, (n,), generator=gen)]
    x += noise * torch.randn(n, d, generator=gen)
    return torch.nn.functional.normalize(x, dim=1)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ---------------------------------------------------------------- dq
def reference_graphcut_bins(x: np.ndarray, bins: int, lam: float = 1.0) -> list[np.ndarray]:
    """The n x n reference: similarity matrix, gains re-summed over the chosen set every step."""
    sim = x @ x.T
    remaining = np.arange(len(x))
    out = []
    for size in [len(x) // bins] * bins:  # the n % bins leftovers in no bin
        sub = sim[np.ix_(remaining, remaining)]
        colsum = sub.sum(axis=0)
        chosen = np.zeros(len(remaining), dtype=bool)
        for _ in range(size):
            gain = lam * colsum - 2.0 * sub[chosen].sum(axis=0)
            gain[chosen] = -np.inf
            chosen[int(np.argmax(gain))] = True
        out.append(remaining[chosen])
        remaining = remaining[~chosen]
    return out


def dq_full_child(n: int, d: int, clusters: int, bins: int, queue: mp.Queue) -> None:
    """Run in a fresh process so its peak RSS is dq's own (data included)."""
    x = synthetic_pool(n, d, clusters).double()
    base = peak_rss_gib()
    stats: dict = {}
    t0 = time.perf_counter()
    out = graphcut_bins(x, bins, progress=True, stats=stats)
    queue.put({"s": time.perf_counter() - t0, "peak_gib": peak_rss_gib(), "data_gib": base,
               "sizes": [len(b) for b in out], "blocks": stats.get("blocks", 0)})


def bench_dq_full(n: int, d: int, clusters: int, bins: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=dq_full_child, args=(n, d, clusters, bins, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def bench_dq_small(n: int, d: int, clusters: int, bins: int) -> dict:
    x = synthetic_pool(n, d, clusters, seed=1).double()
    t0 = time.perf_counter()
    ours = graphcut_bins(x, bins, progress=False)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = reference_graphcut_bins(x.numpy(), bins)
    ref_s = time.perf_counter() - t0
    same = all(np.array_equal(a.numpy(), b) for a, b in zip(ours, ref))
    return {"n": n, "ours_s": ours_s, "ref_s": ref_s, "same_bins": same, "speedup": ref_s / ours_s}


# ---------------------------------------------------------------- report
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=92000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--clusters", type=int, default=200)
    ap.add_argument("--bins", type=int, default=10)
    ap.add_argument("--dq-small", default="1000,3000", help="pool sizes for the n x n dq comparison")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: dq,dq-small")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "baselines.md"))
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    head = (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), load average at start "
            f"{os.getloadavg()[0]:.1f} (shared with other jobs: ratios are measured side by side)")
    lines = ["# dq vs the reference computation", "",
             f"`python benchmarks/bench_baselines.py --n {args.n} --d {args.d} "
             f"--clusters {args.clusters}`", "", head, "",
             f"Pool: {args.n:,} x {args.d} synthetic clustered unit vectors ({args.clusters} clusters).", ""]
    print(head, flush=True)

    if "dq" not in skip:
        r = bench_dq_full(args.n, args.d, args.clusters, args.bins)
        print("dq", r, flush=True)
        nn_gib = args.n ** 2 * 4 / 2**30
        lines += ["## dq (float64 gains, CPU)", "",
                  "| implementation | time | peak memory |", "|---|---|---|",
                  f"| ours: {args.bins} GraphCut bins, no n x n matrix ({r['blocks']} verified blocks) "
                  f"| {r['s']:.1f} s | {r['peak_gib']:.2f} GiB peak RSS of the process "
                  f"({r['data_gib']:.2f} GiB before binning) |",
                  f"| reference: n x n float32 similarity matrix | not run | needs {nn_gib:.1f} GiB "
                  f"for the matrix alone (machine: 24 GiB) |", "",
                  f"Bin sizes: {r['sizes']}. Targets: inside 24 GiB and under 10 minutes.", ""]

    if "dq-small" not in skip:
        rows = [bench_dq_small(int(n), args.d, args.clusters, args.bins)
                for n in args.dq_small.split(",") if n]
        for r in rows:
            print("dq-small", r, flush=True)
        lines += ["## dq vs the n x n reference on small pools (float64 both)", "",
                  "| n | ours | reference (n x n) | identical bins | speed-up |", "|---|---|---|---|---|"]
        lines += [f"| {r['n']:,} | {r['ours_s']:.2f} s | {r['ref_s']:.2f} s | {r['same_bins']} "
                  f"| {r['speedup']:.1f}x |" for r in rows]
        lines.append("")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
