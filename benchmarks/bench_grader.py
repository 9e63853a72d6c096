"""Scoring time of the trusted grader against the previous evaluator (evalplus's checker in the
sandbox), side by side: the same published samples file, interleaved runs, medians.

    python benchmarks/bench_grader.py                      # MBPP+ ours/5K (378 samples), 3 rounds
    python benchmarks/bench_grader.py --rounds 5 --old-commit 34816ee

The previous implementation is checked out at `--old-commit` in a temporary git worktree. Each
run is a fresh process that times `score()` only (ground truth cached beforehand, both trees
read the same cache). Writes benchmarks/results/grader.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = {"humaneval": SHARED / "data/evalplus/HumanEvalPlus-v0.1.10.jsonl",
        "mbpp": SHARED / "data/evalplus/MbppPlus-v0.2.0.jsonl"}

TIMED = """
import json, sys, time
from codeselect.evaluation.benchmarks import load_benchmark
from codeselect.evaluation.correctness import load_samples, score, pass_at_k
bench = load_benchmark({bench!r}, {data!r})
samples = load_samples({samples!r}, bench)
score(samples[:2], bench, workers={workers}, cache_dir={cache!r})  # sandbox probe, caches
t = time.time()
res = score(samples, bench, workers={workers}, cache_dir={cache!r})
print(json.dumps({{"s": time.time() - t, "pass@1": pass_at_k(res, (1,))["pass@1"],
                  "errors": len(res.get("sandbox_errors", []))}}))
"""


def timed_run(tree: Path, bench: str, samples: Path, workers: int, cache: Path) -> dict:
    code = TIMED.format(bench=bench, data=str(DATA[bench]), samples=str(samples),
                        workers=workers, cache=str(cache))
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True,
                         check=True, env={**os.environ, "CODESELECT_CACHE": str(cache)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--benchmark", default="mbpp", choices=sorted(DATA))
    ap.add_argument("--file", default="ours/5K", help="<method>/<size> of a published file")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--old-commit", default="34816ee")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/grader.md"))
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from codeselect.evaluation.reproduce import discover

    method, size = args.file.split("/")
    pub = discover(SHARED / "reference/evalplus_results", [args.benchmark], [method], [size])[0]
    cache = REPO / ".cache"
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old),
                        args.old_commit], check=True, capture_output=True)
        try:
            rows = []
            for r in range(args.rounds):
                for name, tree in (("previous", old), ("trusted grader", REPO)):
                    got = timed_run(tree, args.benchmark, pub.sanitized, args.workers, cache)
                    rows.append((r, name, got))
                    print(r, name, got, flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)],
                           capture_output=True)
    med = {n: statistics.median(g["s"] for _, m, g in rows if m == n)
           for n in ("previous", "trusted grader")}
    load = os.getloadavg()
    md = [f"# Scoring time: trusted grader vs the previous evaluator ({args.old_commit})", "",
          f"`python benchmarks/bench_grader.py --rounds {args.rounds}`: {pub.name} "
          f"({sum(1 for _ in open(pub.sanitized))} samples), {args.workers} workers, runs "
          "interleaved, each a fresh process timing `score()` only (ground truth cached). "
          f"Load average when it ended: {load[0]:.1f} on {os.cpu_count()} cores (shared machine).",
          "", "| round | implementation | score s | pass@1 base / plus | sandbox errors |",
          "|---|---|---|---|---|"]
    for r, name, g in rows:
        p = g["pass@1"]
        md.append(f"| {r} | {name} | {g['s']:.1f} | {100 * p['base']:.1f} / "
                  f"{100 * p['plus']:.1f} | {g['errors']} |")
    md += ["", f"Median: previous {med['previous']:.1f} s, trusted grader "
           f"{med['trusted grader']:.1f} s, ratio {med['trusted grader'] / med['previous']:.2f}.",
           ""]
    Path(args.out).write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
