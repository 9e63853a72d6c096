"""What the selection report costs on the main job: 10,000 of the default pool (and the real 15K pool).

    python benchmarks/bench_selection_report.py                       # default pool, sample_num=10000
    python benchmarks/bench_selection_report.py --pool ../shared/data/instruct/code-instruct-15k.jsonl.gz

Times `write_selection_report` (the pool pass for `source`, token counts of the subset and the pool,
typicality, the picture, the markdown, the dataset card) on a seeded 10,000-row pick, with the pool's
cached MiniLM embeddings when present (else random unit rows: typicality costs the same), beside the
selection's own total for scale. Median of `--repeats` runs after a warm-up; writes
benchmarks/results/selection_report.md.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))

from codeselect.config import conf_defaults  # noqa: E402
from codeselect.pool import open_pool  # noqa: E402
from codeselect.selection_report import write_selection_report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", help="a pool file (default: the embedded default pool)")
    parser.add_argument("--sample-num", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/selection_report.md"))
    args = parser.parse_args()

    import os

    cache = Path(os.environ.get("CODESELECT_CACHE", Path.home() / ".cache/codeselect"))
    if args.pool:
        pool_path = Path(args.pool)
    else:
        from codeselect.stdlib_pool import build_stdlib_pool

        pool_path = build_stdlib_pool(cache / "pools", min_pairs=int(conf_defaults("data/stdlib")["min_pairs"]))
    fields = conf_defaults("data/stdlib")["fields"]
    pool = open_pool(pool_path, fields)
    n = len(pool)
    k = min(args.sample_num, n)
    cached = sorted(cache.glob("embeddings/*/vectors.npy"))
    emb = None
    for path in cached:
        arr = np.load(path, mmap_mode="r")
        if arr.shape[0] == n:
            emb, source = torch.from_numpy(np.array(arr, dtype=np.float32)), f"cached MiniLM ({path.parent.name})"
            break
    if emb is None:
        gen = torch.Generator().manual_seed(0)
        emb, source = torch.nn.functional.normalize(torch.randn(n, 384, generator=gen), dim=1), "random unit rows"
    picked = np.random.default_rng(42).choice(n, k, replace=False).tolist()
    opts = conf_defaults("stage/select")["report"]
    manifest = {"selector": "random", "sample_num": k, "pool_size": n, "pool_rows": n, "pool_path": str(pool_path),
                "pool_format": pool.source.kind, "pool_hash": pool.hash(), "output_file": "subset.jsonl",
                "metrics": {}, "selector_info": {"name": "random", "params": {}},
                "decontamination": {"mode": "off"}, "config": {"seed": 42}}
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        write_selection_report(pool, picked, emb, manifest, opts, tmp)  # warm-up (imports, tokenizer files)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            summary = write_selection_report(pool, picked, emb, manifest, opts, tmp)
            times.append(time.perf_counter() - t0)
    median = float(np.median(times))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.machine()) if Path("/proc/cpuinfo").is_file() else platform.machine()
    lines = ["# Selection report cost", "",
             f"`python benchmarks/bench_selection_report.py{' --pool ' + args.pool if args.pool else ''}`: "
             f"`write_selection_report` on {k:,} of {n:,} rows of `{pool_path.name}` (embeddings: {source}), "
             f"tokenizer {summary['tokenizer']}, {os.cpu_count()} CPUs ({cpu}), median of {args.repeats} "
             "after a warm-up.", "",
             "| pool | rows | picked | report (s), median | runs (s) | training tokens |",
             "|---|---|---|---|---|---|",
             f"| {pool_path.name} | {n:,} | {k:,} | {median:.2f} | {', '.join(f'{t:.2f}' for t in times)} "
             f"| {summary['tokens']:,} |", ""]
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
