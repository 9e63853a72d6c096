"""Compare the runs of a sweep: `python -m codeselect.report <multirun dir> [--out DIR]`.

Collects every job's `selection.json` (and, where present, `train.json` and evaluation `summary.json`
files, and `failed.json` for jobs that failed), writes `report.md` and `report.csv` (selector x
sample_num: time, subset metrics, pass@1) and PNG plots of metrics and pass@1 against sample_num per
selector, like the paper's figure. Where runs were evaluated, every pair of runs on the same benchmark
gets paired per-task significance (exact McNemar test, paired bootstrap 95% interval of the pass@1
difference; `codeselect.significance`) in report.md, `significance.csv` and `pass_at_1_diff.png`.
No W&B account needed.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

METRICS = ("mmd", "coverage_mean_max_sim", "kcenter_radius", "diversity")
SELECTOR_ORDER = ("ours", "random", "kcenter", "dq", "deita", "ifd", "ppl")


def job_dir_of(path: Path, root: Path) -> Path:
    """The Hydra job dir holding `path`: the nearest ancestor with a `.hydra` folder (else its parent)."""
    for parent in [path.parent, *path.parent.parents]:
        if (parent / ".hydra").is_dir():
            return parent
        if parent == root:
            break
    return path.parent


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def collect(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One row per selection found under `root`, plus the failed jobs."""
    rows: list[dict[str, Any]] = []
    for sel_path in sorted(root.rglob("selection.json")):
        manifest = _read(sel_path)
        if not manifest or "selector" not in manifest:
            continue
        job = job_dir_of(sel_path, root)
        row: dict[str, Any] = {
            "selector": manifest["selector"], "sample_num": int(manifest["sample_num"]),
            "pool_size": manifest.get("pool_size"), "job": str(job.relative_to(root)) or ".",
            "select_s": manifest.get("timings", {}).get("select_s"),
            "total_s": manifest.get("timings", {}).get("total_s"),
        }
        for key in METRICS:
            row[key] = manifest.get("metrics", {}).get(key)
        for train_path in job.rglob("train.json"):
            train = _read(train_path) or {}
            row["train_final_loss"] = train.get("final_loss")
            row["train_s"] = train.get("time_s")
        row["_summaries"] = sorted(job.rglob("summary.json"))
        _add_pass_at_1(row)
        rows.append(row)
    rows += eval_only_rows(root, {Path(root / r["job"]) for r in rows})
    failed = []
    for fail_path in sorted(root.rglob("failed.json")):
        info = _read(fail_path) or {}
        failed.append({"job": str(job_dir_of(fail_path, root).relative_to(root)),
                       "error": info.get("error", "?"), "kind": info.get("kind", "?")})
    order = {name: i for i, name in enumerate(SELECTOR_ORDER)}
    rows.sort(key=lambda r: (r["sample_num"] > 0, order.get(r["selector"], len(order)), r["selector"],
                             r["sample_num"]))  # evaluation-only rows (base models) first
    return rows, failed


def run_name(row: dict[str, Any]) -> str:
    """How a run is called in the significance table: `<selector>-sn<k>` (a model id for an
    evaluation-only row)."""
    return f"{row['selector']}-sn{row['sample_num']}" if row["sample_num"] else str(row["selector"])


def _eval_results_of(summary_path: Path, summary: dict[str, Any]) -> Path | None:
    """The evalplus results file beside a summary (or the one it names)."""
    beside = sorted(summary_path.parent.glob("*_eval_results.json"))
    if beside:
        return beside[0]
    named = summary.get("eval_results")
    return Path(named) if named and Path(named).is_file() else None


def significance_tests(rows: list[dict[str, Any]], root: Path) -> list[Any]:
    """Paired tests (McNemar, bootstrap CI) for every pair of evaluated runs on each benchmark."""
    from codeselect.significance import outcomes_from_eval_results, pairwise

    per_bench: dict[str, dict[str, dict[str, dict[str, bool]]]] = defaultdict(dict)
    for row in rows:
        name = run_name(row)
        for summ_path in row.get("_summaries", []):
            summary = _read(summ_path) or {}
            bench = summary.get("benchmark")
            results = _eval_results_of(summ_path, summary) if bench else None
            if results is None:
                continue
            runs = per_bench[bench]
            key = name if name not in runs else f"{name} ({row['job']})"
            runs[key] = outcomes_from_eval_results(results)
    return [t for bench in sorted(per_bench) for t in pairwise(bench, per_bench[bench])]


SIG_COLUMNS = ("benchmark", "metric", "a", "b", "n_tasks", "pass_a", "pass_b", "diff", "ci_low",
               "ci_high", "a_only", "b_only", "p_value")


def write_significance(tests: list[Any], out: Path) -> Path:
    """`significance.csv`: one row per (benchmark, metric, run pair)."""
    path = out / "significance.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SIG_COLUMNS)
        writer.writeheader()
        writer.writerows(t.as_dict() for t in tests)
    return path


def significance_lines(tests: list[Any]) -> list[str]:
    """The markdown section for the paired tests."""
    lines = ["## Is the difference real? (paired per task)", "",
             "pass@1 in %; difference A - B with its paired bootstrap 95% interval; A only / B only: "
             "tasks one run solves and the other does not; p: exact McNemar test (two-sided).", "",
             "| benchmark | tests | A | B | tasks | A % | B % | A - B (95% CI) | A only | B only | p |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in tests:
        lines.append(f"| {t.benchmark} | {t.metric} | {t.a} | {t.b} | {t.n_tasks} | {100 * t.pass_a:.1f} "
                     f"| {100 * t.pass_b:.1f} | {100 * t.diff:+.1f} ({100 * t.ci_low:+.1f}, "
                     f"{100 * t.ci_high:+.1f}) | {t.a_only} | {t.b_only} | {t.p_value:.3g} |")
    return lines


def plot_significance(tests: list[Any], out: Path) -> Path | None:
    """Forest plot: each pair's pass@1 difference with its 95% interval, p-value beside it."""
    if not tests:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.32 * len(tests)), dpi=110)
    ys = list(range(len(tests)))[::-1]
    for y, t in zip(ys, tests):
        color = "#d62728" if t.p_value < 0.05 else "#1f77b4"
        ax.errorbar(100 * t.diff, y, xerr=[[100 * (t.diff - t.ci_low)], [100 * (t.ci_high - t.diff)]],
                    fmt="o", color=color, capsize=3)
        ax.annotate(f"p={t.p_value:.2g}", (100 * t.ci_high, y), xytext=(4, -3),
                    textcoords="offset points", fontsize=7)
    ax.axvline(0, color="#888888", lw=0.8)
    ax.margins(x=0.12)  # room for the p-values
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{t.benchmark} {t.metric}: {t.a} - {t.b}" for t in tests], fontsize=7)
    ax.set_xlabel("pass@1 difference, points (95% paired bootstrap; red: McNemar p < 0.05)", fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    path = out / "pass_at_1_diff.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _add_pass_at_1(row: dict[str, Any]) -> None:
    for summ_path in row["_summaries"]:
        summary = _read(summ_path) or {}
        bench, p1 = summary.get("benchmark"), summary.get("pass@1")
        if bench and isinstance(p1, dict):
            row[f"{bench}_base"] = p1.get("base")
            row[f"{bench}_plus"] = p1.get("plus")


def model_label(summary: dict[str, Any]) -> str:
    """The model id of an evaluation from its samples file (`<model-id>_<backend>_temp<T>.jsonl`)."""
    name = Path(str(summary.get("samples") or "model")).name
    name = name.removesuffix(".jsonl").removesuffix("-sanitized")
    return name.rsplit("_", 2)[0] if name.count("_") >= 2 else name


def eval_only_rows(root: Path, jobs: set[Path]) -> list[dict[str, Any]]:
    """Evaluations outside any selection job (e.g. the untuned base model, `python evaluate.py
    model=smollm2 hydra.run.dir=<sweep>/base-mbpp`): one row per model id, sample_num 0."""
    by_label: dict[str, dict[str, Any]] = {}
    for summ_path in sorted(root.rglob("summary.json")):
        if any(p in jobs for p in summ_path.parents):
            continue
        summary = _read(summ_path) or {}
        if not summary.get("benchmark"):
            continue
        label = model_label(summary)
        row = by_label.setdefault(label, {"selector": label, "sample_num": 0, "_summaries": [],
                                          "job": str(job_dir_of(summ_path, root).relative_to(root))})
        row["_summaries"].append(summ_path)
    for row in by_label.values():
        _add_pass_at_1(row)
    return list(by_label.values())


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    cols = ["selector", "sample_num", "select_s", *METRICS]
    extra = sorted({k for r in rows for k in r if not k.startswith("_")} - set(cols)
                   - {"job", "pool_size", "total_s"})
    return cols + extra + ["job"]


def write_table(rows: list[dict[str, Any]], failed: list[dict[str, Any]], out: Path,
                tests: list[Any] | None = None) -> tuple[Path, Path]:
    cols = columns_of(rows)
    csv_path, md_path = out / "report.csv", out / "report.md"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["# Sweep report", "", f"{len(rows)} selections, {len(failed)} failed jobs.", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    if tests:
        lines += ["", *significance_lines(tests)]
    if failed:
        lines += ["", "## Failed jobs", ""] + [f"- `{f['job']}` ({f['kind']}): {f['error']}" for f in failed]
    plots = sorted(p.name for p in out.glob("*.png"))
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    md_path.write_text("\n".join(lines) + "\n")
    return md_path, csv_path


def _series(rows: list[dict[str, Any]], key: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        if r.get(key) is not None and r["sample_num"]:
            out[r["selector"]].append((r["sample_num"], float(r[key])))
    return {name: sorted(points) for name, points in out.items()}


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Metrics (and pass@1 where evaluated) against sample_num, one line per selector."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    groups = [("subset_metrics.png", [*METRICS, "select_s"])]
    evals = sorted({k for r in rows for k in r if k.endswith(("_base", "_plus"))})
    if evals:
        groups.append(("pass_at_1.png", evals))
    for name, keys in groups:
        keys = [k for k in keys if any(r.get(k) is not None for r in rows)]
        if not keys:
            continue
        fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), dpi=110, squeeze=False)
        for ax, key in zip(axes[0], keys):
            for selector, points in _series(rows, key).items():
                xs, ys = zip(*points)
                ys = [100 * y for y in ys] if name == "pass_at_1.png" else ys
                ax.plot(xs, ys, marker="o", lw=2 if selector == "ours" else 1.2, label=selector)
            for r in rows:  # evaluation-only rows (an untuned base model): a horizontal line
                if not r["sample_num"] and r.get(key) is not None and name == "pass_at_1.png":
                    ax.axhline(100 * float(r[key]), ls="--", color="#555555", lw=1, label=r["selector"])
            ax.set_title(key.replace("_", " ") + (" (%)" if name == "pass_at_1.png" else ""), fontsize=9)
            ax.set_xlabel("sample_num")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
        made.append(out / name)
    return made


def make_report(root: str | Path, out: str | Path | None = None) -> Path:
    """Write report.md, report.csv and plots for the sweep under `root`; return the markdown path."""
    root = Path(root)
    out = Path(out) if out else root
    out.mkdir(parents=True, exist_ok=True)
    rows, failed = collect(root)
    if not rows and not failed:
        raise FileNotFoundError(f"no selection.json or failed.json under {root}")
    tests = significance_tests(rows, root)
    plot(rows, out)
    if tests:
        write_significance(tests, out)
        plot_significance(tests, out)
    md, _ = write_table(rows, failed, out, tests)
    return md


def add_workspace(root: str | Path, md: Path, sync: bool) -> str:
    """`--wandb`: the sweep's W&B workspace (codeselect.workspace); a section in report.md."""
    from codeselect.workspace import publish

    done = publish(root, md.parent, sync=sync)
    where = f"[{done['url']}]({done['url']})" if done["url"] else f"`{done['spec'].name}` (not pushed yet)"
    with open(md, "a", encoding="utf-8") as fh:
        fh.write(f"\n## W&B workspace\n\nGroup `{done['sweep'].group}`: {where}.\n\n"
                 f"![workspace preview]({done['preview'].name})\n")
    return done["message"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codeselect.report", description=__doc__.splitlines()[0])
    parser.add_argument("root", help="a multirun dir (or any folder holding selection.json files)")
    parser.add_argument("--out", help="where to write the report (default: the root)")
    parser.add_argument("--wandb", action="store_true",
                        help="also build the sweep's W&B workspace: saved online, else its spec as JSON")
    parser.add_argument("--sync", action="store_true",
                        help="with --wandb, online: first upload the sweep's offline runs (`wandb sync`, in run order)")
    args = parser.parse_args(argv)
    if not Path(args.root).is_dir():
        print(f"error: {args.root}: not a directory", file=sys.stderr)
        return 2
    try:
        md = make_report(args.root, args.out)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    message = add_workspace(args.root, md, args.sync) if args.wandb else ""
    print(md.read_text())
    print(f"report: {md}")
    if message:
        print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
