"""Is the paper's gain real? Paired significance on its published per-task results.

For each subset size, the paper's selector ("ours") against each baseline on HumanEval+ and MBPP+
(base and plus tests): the pass@1 difference, its paired bootstrap 95% interval and the exact
McNemar p-value, from the published `*_eval_results.json` files (evalplus's own verdicts).

    python benchmarks/significance_paper.py [--root ../shared/reference/evalplus_results]
                                            [--out benchmarks/results/significance.md]
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codeselect.evaluation.reproduce import discover  # noqa: E402
from codeselect.significance import compare, outcomes_from_eval_results  # noqa: E402

BASELINES = ["random", "kcenter", "dq", "deita", "ifd", "ppl"]
SIZES = ["5K", "10K", "15K", "20K", "25K"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO.parent / "shared/reference/evalplus_results"))
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/significance.md"))
    args = parser.parse_args()
    t0 = time.perf_counter()
    files = {(f.benchmark, f.method, f.size): f.results for f in discover(args.root)}
    tests = []
    for bench in ("humaneval", "mbpp"):
        for size in SIZES:
            ours = files.get((bench, "ours", size))
            if ours is None:
                continue
            o = outcomes_from_eval_results(ours)
            for base in BASELINES:
                other = files.get((bench, base, size))
                if other is None:
                    continue
                b = outcomes_from_eval_results(other)
                for metric in ("base", "plus"):
                    tests.append((size, compare(bench, metric, "ours", o[metric], base, b[metric])))
    out = Path(args.out)
    lines = ["# The paper's published results: is ours vs each baseline significant?", "",
             "From the published per-task verdicts (`../shared/reference/evalplus_results/*/*/"
             "*_eval_results.json`, greedy, one sample per task). Each cell: pass@1 difference "
             "ours - baseline in points, its paired bootstrap 95% interval (10,000 task resamples, "
             "seed 0) and the two-sided exact McNemar p-value on the tasks one solves and the other "
             "does not. Bold: p < 0.05.", "",
             f"Regenerate: `python benchmarks/significance_paper.py` ({len(tests)} tests, "
             f"{time.perf_counter() - t0:.1f} s).", ""]
    for bench in ("humaneval", "mbpp"):
        for metric in ("base", "plus"):
            cell = {(size, t.b): t for size, t in tests if t.benchmark == bench and t.metric == metric}
            if not cell:
                continue
            n = next(iter(cell.values())).n_tasks
            lines += [f"## {bench} ({n} tasks), {metric} tests", "",
                      "| ours vs | " + " | ".join(SIZES) + " |", "|---|" + "---|" * len(SIZES)]
            for base in BASELINES:
                row = []
                for size in SIZES:
                    t = cell.get((size, base))
                    if t is None:
                        row.append("")
                        continue
                    text = (f"{100 * t.diff:+.1f} ({100 * t.ci_low:+.1f}, {100 * t.ci_high:+.1f}) "
                            f"p={t.p_value:.2g}")
                    row.append(f"**{text}**" if t.p_value < 0.05 else text)
                lines.append(f"| {base} | " + " | ".join(row) + " |")
            lines.append("")
    sig = [t for _, t in tests if t.p_value < 0.05]
    positive = [t for _, t in tests if t.diff > 0]
    lines += ["## Summary", "",
              f"- ours ahead in {len(positive)} of {len(tests)} comparisons; significant at p < 0.05 in "
              f"{len(sig)} ({sum(t.diff > 0 for t in sig)} in favour of ours, "
              f"{sum(t.diff < 0 for t in sig)} against).",
              f"- with a Bonferroni correction for the {len(tests)} tests (p < {0.05 / len(tests):.2g}): "
              f"{sum(t.p_value < 0.05 / len(tests) for _, t in tests)} significant.", ""]
    out.write_text("\n".join(lines))
    with open(out.with_suffix(".csv"), "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["size", *tests[0][1].as_dict()] if tests else ["size"])
        for size, t in tests:
            writer.writerow([size, *t.as_dict().values()])
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
