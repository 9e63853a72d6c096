"""The CPU experiment end to end, timed: `experiment=smollm2` (ours, random) + the untuned model.

    python benchmarks/smollm2_experiment.py [--out multirun/smollm2] [--results benchmarks/results/smollm2.md]

1. `python pipeline.py -m experiment=smollm2`: for ours and random, select from the embedded default
   pool, fine-tune SmolLM2-135M-Instruct one epoch, generate with vLLM's CPU engine on all of MBPP+
   and HumanEval+, score in the sandbox;
2. `python evaluate.py experiment=smollm2 model=smollm2` on both benchmarks: the untuned model's row
   (the recipe's generation and vLLM settings);
3. `python -m codeselect.report`: the table, the paired significance tests, the plots.
Writes the table, the p-values, each fine-tune's plan (optimizer steps, warm-up) and loss curve
(`<results stem>/loss.png`) and the wall time of each step to `--results`.
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def step(name: str, argv: list[str], times: dict[str, float]) -> None:
    print(f"== {name}: {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=REPO, check=True, env={**os.environ, "WANDB_MODE": "offline"})
    times[name] = time.perf_counter() - t0
    print(f"== {name}: {times[name]:.0f} s", flush=True)


def evaluate_overrides(overrides: list[str]) -> list[str]:
    """The pipeline's overrides that evaluate.py takes too: `evaluate.X=...` as `X=...` and the
    shared `backend.X=...` as they are (`+` kept)."""
    out = []
    for o in overrides:
        plus, body = ("+" if o.startswith("+") else ""), o.lstrip("+")
        if body.startswith("evaluate."):
            out.append(plus + body[len("evaluate."):])
        elif body.startswith("backend."):
            out.append(o)
    return out


def training_runs(out: Path) -> dict[str, dict]:
    """The pipeline jobs' train.json, by job folder name (ours-sn200, random-sn200)."""
    import json

    runs = {}
    for path in sorted(out.glob("*/train/train.json")):
        runs[path.parent.parent.name] = json.loads(path.read_text())
    return runs


def plot_losses(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (name, d) in enumerate(runs.items()):
        ls, color = d["losses"], f"C{i}"
        mean = [sum(ls[max(0, k - 4):k + 1]) / len(ls[max(0, k - 4):k + 1]) for k in range(len(ls))]
        ax.plot(range(1, len(ls) + 1), ls, color=color, alpha=0.3, linewidth=1)
        ax.plot(range(1, len(ls) + 1), mean, color=color, linewidth=2, label=f"{name} (mean of 5 steps)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (window token mean)")
    ax.set_title("SmolLM2-135M-Instruct fine-tuning, one epoch")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "multirun" / "smollm2"))
    ap.add_argument("--results", default=str(REPO / "benchmarks/results/smollm2.md"))
    ap.add_argument("--evalplus", default=str(REPO.parent / "shared/data/evalplus"),
                    help="folder with HumanEvalPlus-v0.1.10.jsonl and MbppPlus-v0.2.0.jsonl")
    ap.add_argument("overrides", nargs="*", help="extra pipeline overrides (e.g. sample_num=100)")
    args = ap.parse_args()
    files = {"humaneval": Path(args.evalplus) / "HumanEvalPlus-v0.1.10.jsonl",
             "mbpp": Path(args.evalplus) / "MbppPlus-v0.2.0.jsonl"}
    for f in files.values():
        if not f.is_file():
            print(f"error: {f}: not found (--evalplus)", file=sys.stderr)
            return 2
    out = Path(args.out).resolve()
    py = sys.executable
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    step("pipeline (ours, random)", [py, "pipeline.py", "-m", "experiment=smollm2", "logger=none",
                                     f"hydra.sweep.dir={out}",
                                     *(f"benchmark_options.{b}.path={f}" for b, f in files.items()),
                                     *args.overrides], times)
    for bench in ("humaneval", "mbpp"):
        step(f"untuned model, {bench}", [py, "evaluate.py", "experiment=smollm2", "model=smollm2", "backend=vllm",
                                         "backend.device=cpu", f"benchmark={bench}",
                                         f"benchmark.path={files[bench]}",
                                         "generation.max_new_tokens=512", "logger=none",
                                         f"root={out / 'base' / 'generations'}",
                                         f"hydra.run.dir={out / 'base' / bench}",
                                         *evaluate_overrides(args.overrides)], times)
    step("report", [py, "-m", "codeselect.report", str(out)], times)
    total = time.perf_counter() - t0
    rows = list(csv.DictReader(open(out / "report.csv")))
    sig = list(csv.DictReader(open(out / "significance.csv")))
    cols = ["humaneval_base", "humaneval_plus", "mbpp_base", "mbpp_plus"]
    pct = lambda v: "-" if v in ("", None) else f"{100 * float(v):.1f}"  # noqa: E731
    lines = ["# SmolLM2-135M-Instruct on a CPU: select -> fine-tune -> vLLM generation -> evalplus", "",
             "`python benchmarks/smollm2_experiment.py` (conf/experiment/smollm2.yaml): the embedded "
             "default pool, ours and random at the configured size, one epoch of SFT, greedy vLLM CPU "
             "generation on all of HumanEval+ (164) and MBPP+ (378), sandboxed evalplus; the untuned "
             "model evaluated the same way. 2-core machine shared with other jobs.", "",
             "| model | sample_num | HumanEval+ base | HumanEval+ plus | MBPP+ base | MBPP+ plus | train loss |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        label = r["selector"] + (" (untuned)" if r["sample_num"] == "0" else "")
        loss = r.get("train_final_loss") or "-"
        loss = f"{float(loss):.3f}" if loss != "-" else loss
        lines.append(f"| {label} | {r['sample_num'] if r['sample_num'] != '0' else '-'} | "
                     + " | ".join(pct(r.get(c)) for c in cols) + f" | {loss} |")
    lines += ["", "Paired per-task tests (exact McNemar; paired bootstrap 95% interval of the difference, "
              "points):", "", "| benchmark | tests | A | B | A - B (95% CI) | A only | B only | p |",
              "|---|---|---|---|---|---|---|---|"]
    for s in sig:
        lines.append(f"| {s['benchmark']} | {s['metric']} | {s['a']} | {s['b']} | "
                     f"{100 * float(s['diff']):+.1f} ({100 * float(s['ci_low']):+.1f}, "
                     f"{100 * float(s['ci_high']):+.1f}) | {s['a_only']} | {s['b_only']} | "
                     f"{float(s['p_value']):.3g} |")
    runs = training_runs(out)
    if runs:
        plot = Path(args.results).with_suffix("") / "loss.png"
        plot_losses(runs, plot)
        lines += ["", f"Fine-tuning ([loss curves]({plot.parent.name}/{plot.name})):", "",
                  "| job | samples | rows | micro-batches | optimizer steps | warm-up | peak LR | loss first 5 "
                  "steps -> last 5 | train time |", "|---|---|---|---|---|---|---|---|---|"]
        for name, d in runs.items():
            pl, ls = d["plan"], d["losses"]
            head, tail = sum(ls[:5]) / len(ls[:5]), sum(ls[-5:]) / len(ls[-5:])
            lines.append(f"| {name} | {pl['samples']} | {pl['rows_per_epoch']} | "
                         f"{pl['micro_batches_per_epoch']} | {d['steps']} | {pl['warmup_steps']} | "
                         f"{max(d['lrs']):.2g} | {head:.3f} -> {tail:.3f} | {d['time_s']:.0f} s |")
    lines += ["", f"Wall time: {total / 60:.1f} min in all ("
              + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items()) + ").", ""]
    Path(args.results).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
