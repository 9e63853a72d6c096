"""A synthetic pool of a million rows through every pool stage: time and peak RSS per stage.

    python benchmarks/bench_pool.py                               # 1,000,000 rows (CPU heavy, ~15 min)
    python benchmarks/bench_pool.py --rows 20000 --out /tmp/p.md  # smoke

Rows are real rows of ../shared/data/instruct/code-instruct-15k.jsonl.gz (so lengths and text are
realistic) with 15% of their words swapped for random words of the pool's vocabulary (so no two
rows are equal); every 10,000th row has a HumanEval+/MBPP+ prompt planted in its instruction.
Embeddings: the real MiniLM vectors of the base rows plus Gaussian noise, unit rows, float32, written
as a .npy and memory-mapped (encoding a million texts is another benchmark: bench_encode.py).
Stages run in one process, in order; before each, the kernel's peak-RSS counter is reset
(/proc/self/clear_refs), so "peak" is that stage's own high-water mark (what it held, plus what
earlier stages left resident). Writes benchmarks/results/pool.md.
"""
from __future__ import annotations

import argparse
import gc
import gzip
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"


def _status(key: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 2**20  # kB -> GiB
    return float("nan")


def _reset_peak() -> None:
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def stage(results: list[dict[str, Any]], name: str, fn: Callable[[], Any], note: str = "") -> Any:
    _reset_peak()
    t0 = time.perf_counter()
    out = fn()
    secs = time.perf_counter() - t0
    results.append({"stage": name, "s": secs, "peak": _status("VmHWM"), "rss": _status("VmRSS"), "note": note})
    print(f"{name:<28} {secs:8.1f} s  peak {results[-1]['peak']:.2f} GiB  rss {results[-1]['rss']:.2f} GiB {note}",
          flush=True)
    return out


def generate(rows: int, work: Path, seed: int = 0) -> tuple[Path, Path, list[int]]:
    """The synthetic JSONL pool and its embeddings; returns the planted positions."""
    pool_path, emb_path = work / f"pool-{rows}.jsonl", work / f"pool-{rows}.npy"
    base = [json.loads(ln) for ln in gzip.open(SHARED / "instruct/code-instruct-15k.jsonl.gz", "rt")]
    base_emb = np.load(SHARED / "instruct/code-instruct-15k.minilm.npy", mmap_mode="r")
    prompts = [json.loads(ln)["prompt"] for name in ("HumanEvalPlus-v0.1.10", "MbppPlus-v0.2.0")
               for ln in open(SHARED / f"evalplus/{name}.jsonl")]
    vocab = sorted({w for r in base[:2000] for w in r["instruction"].split()})
    rng = np.random.default_rng(seed)
    planted = list(range(0, rows, 10_000))
    if pool_path.is_file() and emb_path.is_file():
        return pool_path, emb_path, planted
    t0 = time.perf_counter()
    picks = rng.integers(len(base), size=rows)
    emb = np.lib.format.open_memmap(work / ".emb.tmp.npy", mode="w+", dtype=np.float32,
                                    shape=(rows, base_emb.shape[1]))
    with open(work / ".pool.tmp.jsonl", "w", encoding="utf-8") as fh:
        for s in range(0, rows, 50_000):
            e = min(s + 50_000, rows)
            block = base_emb[picks[s:e]] + rng.normal(scale=0.02, size=(e - s, base_emb.shape[1]))
            emb[s:e] = (block / np.linalg.norm(block, axis=1, keepdims=True)).astype(np.float32)
            for i in range(s, e):
                r = base[picks[i]]
                out = []
                for field in ("instruction", "response"):
                    words = r[field].split(" ")
                    swap = rng.random(len(words)) < 0.15
                    for j in np.nonzero(swap)[0]:
                        words[j] = vocab[int(rng.integers(len(vocab)))]
                    out.append(" ".join(words))
                if i % 10_000 == 0:
                    out[0] += "\n" + prompts[(i // 10_000) % len(prompts)]
                fh.write(json.dumps({"id": i, "instruction": out[0], "response": out[1],
                                     "source": r["source"]}) + "\n")
    emb.flush()
    del emb
    (work / ".emb.tmp.npy").replace(emb_path)
    (work / ".pool.tmp.jsonl").replace(pool_path)
    print(f"generated {rows:,} rows in {time.perf_counter() - t0:.0f} s ({pool_path.stat().st_size / 2**30:.2f} GiB)")
    return pool_path, emb_path, planted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--work", type=Path, default=REPO / ".cache" / "bench_pool")
    ap.add_argument("--k-random", type=int, default=10_000)
    ap.add_argument("--k-kcenter", type=int, default=1_000)
    ap.add_argument("--k-ours", type=int, default=1_000)
    ap.add_argument("--ours-steps", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "pool.md")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    import torch

    from codeselect.embed import embed_pool
    from codeselect.pool import open_pool, write_rows
    from codeselect.pool.decontaminate import build_index, find_contamination
    from codeselect.selectors.base import SelectionContext
    from codeselect.selectors.kcenter import KCenterSelector
    from codeselect.selectors.ours import ParametricSelector
    from codeselect.selectors.random_subset import RandomSelector

    pool_path, emb_path, planted = generate(args.rows, args.work)
    res: list[dict[str, Any]] = []
    pool = stage(res, "load (JSONL -> Arrow)", lambda: open_pool(pool_path))
    digest = stage(res, "hash (pool content)", pool.hash)
    from codeselect.config import conf_defaults

    bench = {**conf_defaults("data/file", "decontamination"),
             "humaneval": str(SHARED / "evalplus/HumanEvalPlus-v0.1.10.jsonl"),
             "mbpp": str(SHARED / "evalplus/MbppPlus-v0.2.0.jsonl")}
    index = stage(res, "decontam: build 13-gram index", lambda: build_index(bench)[0])
    hits = stage(res, "decontam: scan instr+resp", lambda: find_contamination(pool, index))
    found = {h["position"] for h in hits}
    res[-1]["note"] = (f"{len(hits):,} rows flagged; planted found {len(found & set(planted))}/{len(planted)}")
    emb = stage(res, "embeddings (.npy, mmap)", lambda: embed_pool(pool, {"name": "precomputed",
                                                                            "path": str(emb_path)},
                                                                    cache_dir=args.work))
    ctx = SelectionContext(records=pool.records, embeddings=emb, seed=42, cache_dir=args.work, pool_hash=digest)
    r = stage(res, f"select random k={args.k_random:,}", lambda: RandomSelector().select(ctx, args.k_random))
    kc = stage(res, f"select kcenter k={args.k_kcenter:,}",
               lambda: KCenterSelector(device="cpu", progress=False).select(ctx, args.k_kcenter))
    ours = stage(res, f"select ours k={args.k_ours:,}, {args.ours_steps} steps",
                 lambda: ParametricSelector(max_iter=args.ours_steps, accelerator="cpu", progress=False)
                 .select(ctx, args.k_ours))
    out = args.work / "selected.jsonl"
    stage(res, f"write {args.k_ours:,} selected rows", lambda: write_rows(pool.source, [int(pool.rows[i]) for i in ours],
                                                                         out))
    assert len(r) == args.k_random and len(kc) == args.k_kcenter and len(ours) == args.k_ours

    lines = [
        "# A million-row pool through the pool stages (`benchmarks/bench_pool.py`)",
        "",
        f"{args.rows:,} synthetic rows ({pool_path.stat().st_size / 2**30:.2f} GiB JSONL; real 15K-pool rows with 15% "
        f"of words swapped, every 10,000th with a planted HumanEval+/MBPP+ prompt), {emb.shape[1]}-d float32 "
        f"embeddings ({emb_path.stat().st_size / 2**30:.2f} GiB .npy). One process, stages in order; peak = "
        "that stage's own RSS high-water mark (the kernel counter reset before it), so it includes what earlier "
        "stages left resident (the Arrow pool, then the mapped embeddings).",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}. ours: {args.ours_steps} Adam steps "
        f"(the default is 300), k = {args.k_ours:,}; kcenter k = {args.k_kcenter:,}; random k = {args.k_random:,}.",
        "",
        "| stage | seconds | peak RSS (GiB) | RSS after (GiB) | note |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [f"| {x['stage']} | {x['s']:.1f} | {x['peak']:.2f} | {x['rss']:.2f} | {x['note']} |" for x in res]
    lines += ["", f"Overall peak RSS of the process: {max(x['peak'] for x in res):.2f} GiB."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
