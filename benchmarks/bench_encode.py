"""Encoding speed on this CPU: the default float32 path vs bf16 autocast, same vectors checked.

    python benchmarks/bench_encode.py                    # MiniLM and mpnet, 512 real instructions, 3 rounds
    python benchmarks/bench_encode.py --models minilm --n 128 --rounds 2   # smoke

Texts: a seeded sample of instructions from ../shared/data/instruct/code-instruct-15k.jsonl.gz
(real lengths; truncation at the tokenizer's model_max_length, 512, as in every run). Both paths
are `codeselect.embed.encoder.encode_texts` with the packaged model, the configured batch size,
once warm; rounds interleave the two paths (the order alternates) and the table gives medians.
Writes benchmarks/results/encode.md.
"""
from __future__ import annotations

import argparse
import gzip
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["minilm", "mpnet"])
    ap.add_argument("--n", type=int, default=512, help="texts per timed call (MiniLM)")
    ap.add_argument("--n-mpnet", type=int, default=None, help="texts per timed call for mpnet (default: --n)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "encode.md")
    args = ap.parse_args()

    import torch
    from omegaconf import OmegaConf

    from codeselect.embed.encoder import encode_texts, encoder_for

    pool = REPO.parent / "shared" / "data" / "instruct" / "code-instruct-15k.jsonl.gz"
    texts = [json.loads(ln)["instruction"] for ln in gzip.open(pool, "rt", encoding="utf-8")]
    sample = random.Random(0).sample(texts, max(args.n, args.n_mpnet or 0))
    cache = REPO / ".cache" / "bench_encode"
    rows = []
    for name in args.models:
        texts = sample[:(args.n_mpnet or args.n) if name == "mpnet" else args.n]
        base = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "embedding" / f"{name}.yaml"))
        base["show_progress"] = False
        variants = {"float32 (default)": base, "bfloat16 autocast": {**base, "dtype": "bfloat16"}}
        model = encoder_for(base, cache, "cpu")
        n_tok = [len(x) for x in model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]]
        speeds: dict[str, list[float]] = {v: [] for v in variants}
        cpu: dict[str, list[float]] = {v: [] for v in variants}
        vecs: dict[str, np.ndarray] = {}
        for v, opts in variants.items():  # warm-up (first call allocates)
            encode_texts(texts[:32], opts, cache_dir=cache)
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(variants)[::-1]
            for v in order:
                t0, c0 = time.perf_counter(), time.process_time()
                vecs[v] = encode_texts(texts, variants[v], cache_dir=cache)
                speeds[v].append(len(texts) / (time.perf_counter() - t0))
                cpu[v].append(len(texts) / (time.process_time() - c0))
                print(f"{name} {v}: {speeds[v][-1]:.1f} texts/s wall, {cpu[v][-1]:.1f} texts per CPU-second",
                      flush=True)
        ref = vecs["float32 (default)"]
        for v in variants:
            cos = (vecs[v] * ref).sum(1)
            rows.append({"model": name, "path": v, "speed": statistics.median(speeds[v]), "all": speeds[v],
                         "cpu": statistics.median(cpu[v]),
                         "cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
                         "max_len": model.max_seq_length, "tokens": statistics.mean(n_tok), "batch": base["batch_size"],
                         "n": len(texts)})
        write(rows, args)


def write(rows: list[dict], args: argparse.Namespace) -> None:
    import torch

    lines = ["# Encoding speed on CPU (`benchmarks/bench_encode.py`)", "",
             f"Real instructions (a seeded sample of the 15K pool; `n` per timed call), {args.rounds} interleaved "
             "rounds, medians. "
             f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
             f"torch {torch.__version__}. The machine is shared with other jobs (load average 8-13 on 2 cores while "
             "this ran), so wall-clock texts/s are low and noisy; texts per CPU-second (process time, all threads) "
             "is what contention disturbs least, and its ratio is the speed-up the backend gives.", "",
             "| model | path | n | texts/s wall (median) | rounds | wall speed-up | texts per CPU-s | CPU speed-up | "
             "min cosine to default | mean cosine | truncation | mean tokens | batch |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        base = next(x for x in rows if x["model"] == r["model"] and x["path"].startswith("float32"))
        base_speed, base_cpu = base["speed"], base["cpu"]
        lines.append(f"| {r['model']} | {r['path']} | {r['n']} | {r['speed']:.1f} | {', '.join(f'{s:.1f}' for s in r['all'])} | "
                     f"{r['speed'] / base_speed:.2f}x | {r['cpu']:.1f} | {r['cpu'] / base_cpu:.2f}x | {r['cos_min']:.6f} | {r['cos_mean']:.6f} | {r['max_len']} | "
                     f"{r['tokens']:.0f} | {r['batch']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
