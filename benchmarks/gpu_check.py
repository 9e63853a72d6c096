"""GPU check (one GPU, under 8 minutes): the paper's recipe with FSDP on SmolLM2, then vLLM generation.

    python benchmarks/gpu_check.py [--steps 20] [--tasks 378] [--out benchmarks/results/gpu_check.md]

1. `train.py experiment=paper model=smollm2 model.dtype=bfloat16 trainer.devices=1 trainer.max_steps=20`:
   FSDP (full shard, one device), bf16 mixed precision, the published batching (16 samples per micro-batch
   packed into rows of <= 4096 tokens, accumulation 4, packed samples not isolated), the model loaded in
   bf16 and upcast: the check reads back from train.json that the optimizer updated fp32 parameters with
   fp32 state, the peak GPU memory and tokens/s, and that the loss fell;
2. `evaluate.py experiment=paper model=<that checkpoint> benchmark=mbpp backend=vllm backend.device=cuda`:
   the published generation settings (768 new tokens, max_model_len 4096, greedy) with vLLM's CUDA build
   (`make setup VLLM=vllm VLLM_TORCH=`), sandboxed evalplus: pass@1 and generation time.

Writes the numbers and a verdict per check to `--out`. `--plan` prints the commands and the training
plan (rows, micro-batches, optimizer steps, warm-up) on any machine, without a GPU.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def train_args(data: Path, run_dir: Path, steps: int) -> list[str]:
    """train.py's arguments: the paper's recipe on one GPU for `steps` optimizer steps."""
    return ["experiment=paper", f"data.path={data}", "model=smollm2", "model.dtype=bfloat16",
            "model.save_dtype=bfloat16", "trainer.devices=1", f"trainer.max_steps={steps}",
            "checkpoint_every_n_steps=0", "logger=none", "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}"]


def evaluate_args(checkpoint: Path, mbpp: Path, tasks: int, run_dir: Path) -> list[str]:
    """evaluate.py's arguments: the published generation settings with vLLM on the GPU."""
    return ["experiment=paper", f"model={checkpoint}", "benchmark=mbpp", f"benchmark.path={mbpp}",
            f"limit={tasks}", "backend=vllm", "backend.device=cuda", "logger=none",
            f"root={run_dir / 'generations'}", f"hydra.run.dir={run_dir}"]


def write_data(out: Path, n: int) -> Path:
    """The first `n` real pairs of code-instruct-15k as a selection file."""
    with gzip.open(SHARED / "instruct" / "code-instruct-15k.jsonl.gz", "rt", encoding="utf-8") as fh, \
            open(out, "w", encoding="utf-8") as dst:
        for i, line in enumerate(fh):
            if i == n:
                break
            dst.write(line)
    return out


def checks(train: dict[str, Any], evaluation: dict[str, Any] | None) -> list[tuple[str, bool, str]]:
    """(what, passed, value) for the report."""
    out = [
        ("fp32 master weights under bf16-mixed FSDP", train.get("param_dtypes") == ["float32"],
         ", ".join(train.get("param_dtypes", []))),
        ("fp32 AdamW state", train.get("optimizer_state_dtypes") == ["float32"],
         ", ".join(train.get("optimizer_state_dtypes", []))),
        ("optimizer steps as planned", train.get("steps") == train.get("plan", {}).get("optimizer_steps"),
         f"{train.get('steps')} / {train.get('plan', {}).get('optimizer_steps')}"),
        ("loss fell", bool(train.get("losses")) and train["losses"][-1] < train["losses"][0],
         f"{train['losses'][0]:.4f} -> {train['losses'][-1]:.4f}" if train.get("losses") else "-"),
        ("precision", str(train.get("precision")) == "bf16-mixed", str(train.get("precision"))),
    ]
    if evaluation is not None:
        p1 = evaluation.get("pass@1", {})
        out.append(("vLLM generation + grading on MBPP+", evaluation.get("n_tasks", 0) > 0,
                    f"{evaluation.get('n_tasks')} tasks, pass@1 base {p1.get('base')}, plus {p1.get('plus')}"))
    return out


def render(train: dict[str, Any], evaluation: dict[str, Any] | None, times: dict[str, float],
           device: str) -> str:
    lines = ["# GPU check: the paper's recipe with FSDP on SmolLM2, then vLLM generation", "",
             f"`python benchmarks/gpu_check.py` on {device}.", "",
             "| check | result | value |", "|---|---|---|"]
    for what, ok, value in checks(train, evaluation):
        lines.append(f"| {what} | {'ok' if ok else 'FAILED'} | {value} |")
    plan = train.get("plan", {})
    lines += ["", f"Training: {train.get('steps')} optimizer steps of {plan.get('batch_size')} samples x "
              f"{plan.get('accumulate')} micro-batches, {train.get('tokens', 0):,} tokens, "
              f"{train.get('tokens_per_s', 0):,.0f} tokens/s, peak GPU memory "
              f"{train.get('cuda_peak_memory_gib')} GiB; {plan.get('tokens_per_micro_batch_mean')} padded "
              f"tokens per micro-batch on average (max {plan.get('tokens_per_micro_batch_max')}).",
              ""]
    if evaluation is not None:
        lines += [f"Generation: {evaluation.get('n_tasks')} MBPP+ tasks in "
                  f"{evaluation.get('timings', {}).get('generate_s')} s (engine start included).", ""]
    lines.append("Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + ".")
    return "\n".join(lines) + "\n"


def run(argv: list[str], log: Path) -> float:
    t = time.perf_counter()
    with open(log, "w") as fh:
        out = subprocess.run([sys.executable, *argv], cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
                             env={**os.environ, "WANDB_MODE": "offline"})
    if out.returncode:
        raise SystemExit(f"error: {' '.join(argv[:2])} failed (exit {out.returncode}); see {log}:\n"
                         + log.read_text()[-2000:])
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--samples", type=int, default=1600, help="pairs to train on (20 steps use 1,280)")
    ap.add_argument("--tasks", type=int, default=378, help="MBPP+ tasks to generate for")
    ap.add_argument("--mbpp", type=Path, default=SHARED / "evalplus" / "MbppPlus-v0.2.0.jsonl")
    ap.add_argument("--workdir", type=Path, default=REPO / "outputs" / "gpu_check")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_check.md")
    ap.add_argument("--plan", action="store_true", help="print the commands and the training plan; no GPU needed")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = write_data(args.workdir / "selection.jsonl", args.samples)
    train_dir, eval_dir = args.workdir / "train", args.workdir / "evaluate"
    t_args = train_args(data, train_dir, args.steps)
    e_args = evaluate_args(train_dir / "checkpoint", args.mbpp, args.tasks, eval_dir)
    if args.plan:
        print("train.py " + " ".join(t_args))
        print("evaluate.py " + " ".join(e_args))
        run(["train.py", *t_args, "dry_run=true"], args.workdir / "plan.log")
        print((args.workdir / "plan.log").read_text())
        return 0
    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA GPU here; the check needs one (--plan runs without)", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name(0)
    times = {"train": run(["train.py", *t_args], args.workdir / "train.log")}
    train = json.loads((train_dir / "train.json").read_text())
    times["evaluate"] = run(["evaluate.py", *e_args], args.workdir / "evaluate.log")
    evaluation = json.loads((eval_dir / "summary.json").read_text())
    text = render(train, evaluation, times, device)
    args.out.write_text(text)
    print(text)
    return 0 if all(ok for _, ok, _ in checks(train, evaluation)) else 1


if __name__ == "__main__":
    sys.exit(main())
