"""Padding vs packing for SFT: tokens/s, non-padding fraction and optimizer steps on the tiny model and
real pool data.

Three ways to batch the same samples, `--batch-size` per micro-batch:
- `pad`: one sample per row, padded to the longest row of the micro-batch (`data.mode=pad`);
- `pack, per micro-batch`: the published recipe's batching (`data.batching=samples`, the default): each
  micro-batch's samples sorted by length and packed into rows of max_length; same optimizer steps as pad;
- `pack, best fit`: the whole selection best-fit packed once, `--batch-size` ROWS per micro-batch
  (`data.batching=best_fit`): the fewest pad tokens and far fewer, fuller optimizer steps.
Packed samples are isolated (position ids restart per sample). Each trains one epoch with the same
optimizer, through the real job (`codeselect.train.run.run_training`), alternating over `--repeats`
rounds (best round kept).

    python benchmarks/bench_packing.py [--samples 400] [--max-length 1024] [--batch-size 4]
"""
from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data" / "instruct" / "code-instruct-15k.jsonl.gz"
for key, value in {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(key, value)


def write_pool(path: Path, n: int) -> Path:
    with gzip.open(SHARED, "rt") as fh, open(path, "w") as out:
        for i, line in enumerate(fh):
            if i == n:
                break
            out.write(line)
    return path


MODES = {"pad": ["data.mode=pad"],
         "pack, per micro-batch": ["data.mode=pack", "data.batching=samples"],
         "pack, best fit": ["data.mode=pack", "data.batching=best_fit"]}


def train_once(pool: Path, mode: str, args: argparse.Namespace, run_dir: Path) -> dict:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from codeselect.train.run import run_training

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            f"data.path={pool}", "model=tiny", "strategy=single", *MODES[mode],
            f"data.max_length={args.max_length}", f"batch_size={args.batch_size}",
            "trainer.accumulate_grad_batches=1", "trainer.max_epochs=1", "optim.lr=1e-3",
            "optim.warmup_steps=2", "logger=none", "checkpoint_every_n_steps=0",
            "trainer.enable_progress_bar=false", f"cache_dir={args.cache_dir}"])
    return run_training(cfg, run_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cache-dir", default=str(REPO / ".cache" / "bench"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "packing.md"))
    args = ap.parse_args()

    import torch

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pool = write_pool(Path(tmp) / "pool.jsonl", args.samples)
        for rnd in range(args.repeats):
            for mode in MODES:
                s = train_once(pool, mode, args, Path(tmp) / f"{mode}-{rnd}")
                print(f"round {rnd} {mode}: {s['tokens_per_s']:.0f} tokens/s, "
                      f"non-pad {s['non_pad_fraction']:.3f}, {s['steps']} steps, {s['time_s']:.1f} s")
                if mode not in results or s["tokens_per_s"] > results[mode]["tokens_per_s"]:
                    results[mode] = s
    pad = results["pad"]
    lines = [
        "# Padding vs packing (tiny model, real pool data)",
        "",
        f"`python benchmarks/bench_packing.py --samples {args.samples} --max-length {args.max_length} "
        f"--batch-size {args.batch_size} --repeats {args.repeats}`: one epoch over the first "
        f"{args.samples} pairs of code-instruct-15k, tiny 2-layer Llama (random init, BPE trained on the "
        f"data), CPU ({os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads), "
        f"best of {args.repeats} alternating rounds; {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "| batching | tokens/s (real tokens) | vs pad | non-padding fraction | optimizer steps | epoch time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in results.items():
        lines.append(f"| {name} | {s['tokens_per_s']:.0f} | {s['tokens_per_s'] / pad['tokens_per_s']:.2f}x | "
                     f"{s['non_pad_fraction']:.3f} | {s['steps']} | {s['time_s']:.1f} |")
    lines += [
        "",
        "All three see the same tokens per epoch. Packing per micro-batch (the published recipe, our default)",
        "keeps pad's optimizer steps and learning-rate schedule and removes the padding between the samples",
        "of a micro-batch (what is left: rows of one micro-batch padded to its longest); best-fit packing",
        "of the whole selection fills rows nearly completely but takes several times fewer, fuller",
        "optimizer steps, which changes the optimisation (more tokens per update, a schedule that is shorter",
        "in steps). Packed samples are isolated (loss equal to one-by-one, `tests/test_train_data.py`). This",
        "machine is shared with other jobs, so absolute tokens/s vary between runs; the ratios are the result.",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
