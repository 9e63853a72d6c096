"""LM scoring throughput: our length-bucketed batches vs one sample at a time, side by side.

    python benchmarks/bench_scoring.py            # 1,000 real pairs, tiny model, all four score kinds
    python benchmarks/bench_scoring.py --n 50     # smoke

Three ways to score the same records with the same tiny model, after an untimed warm-up of each:
the reference's loop (benchmarks/reference_scoring.py: one `model(...)` call per sample, full
logits), our engine forced to one sample per batch, and our engine as configured by default.
Writes benchmarks/results/scoring.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.append(str(REPO))

from reference_scoring import reference_perplexities, reference_ratings  # noqa: E402

from codeselect.data import load_pool, pool_hash  # noqa: E402
from codeselect.scoring.config import ScorerConfig  # noqa: E402
from codeselect.scoring.encoding import rating_token_ids  # noqa: E402
from codeselect.scoring.engine import compute_scores  # noqa: E402
from codeselect.scoring.loading import tiny_model_dir  # noqa: E402

GROUPS = {"IFD / PPL inputs": ["ppl", "ppl_alone"], "DEITA inputs": ["complexity", "quality"]}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def op_shares(fn: Callable[[], Any], top: int = 4) -> list[tuple[str, float]]:
    """The `top` operators by share of self CPU time while `fn` runs."""
    from torch.profiler import profile

    with profile() as prof:
        fn()
    events = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in events) or 1.0
    names = {"aten::_scaled_dot_product_flash_attention_for_cpu": "attention", "aten::mm": "matmuls",
             "aten::_log_softmax": "log-softmax"}
    return [(names.get(k, k), t / total) for k, t in sorted(events, key=lambda e: -e[1])[:top]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--pool", default=str(REPO.parent / "shared/data/instruct/code-instruct-15k.jsonl.gz"))
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/scoring.md"))
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pool = load_pool(args.pool)
    rng = np.random.default_rng(0)
    records = [pool[i] for i in sorted(rng.choice(len(pool), args.n, replace=False))]
    batched = ScorerConfig.from_mapping({"model": "tiny", "max_length": args.max_length})
    single = ScorerConfig.from_mapping({"model": "tiny", "max_length": args.max_length, "max_batch_size": 1})
    lines = ["# LM scoring throughput: batched vs one at a time", "",
             f"{args.n:,} real pairs from code-instruct-15k, the tiny random Llama (codeselect.tiny_lm: "
             f"hidden {batched.tiny.get('hidden_size', 64)}, 2 layers), CPU fp32, max length {args.max_length}; "
             "each path warmed up once, then timed side by side in one run.", "",
             "| scores | reference loop (s) | ours, 1 per batch (s) | ours, batched (s) | batched vs reference | "
             "batched vs 1 per batch | max rel. diff vs reference |", "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = tiny_model_dir(records, root, pool_hash(records), batched)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        tok = AutoTokenizer.from_pretrained(model_dir)
        rating_ids = rating_token_ids(tok)

        def reference(kinds: list[str], recs: list[dict]) -> dict[str, np.ndarray]:
            if kinds == GROUPS["IFD / PPL inputs"]:
                return {k: np.asarray(v) for k, v in reference_perplexities(recs, model, tok, args.max_length).items()}
            return {k: np.asarray(reference_ratings(recs, k, model, tok, rating_ids, args.max_length)) for k in kinds}

        def ours(kinds: list[str], recs: list[dict], cfg: ScorerConfig, tag: str) -> dict[str, np.ndarray]:
            cache = root / tag  # a fresh score cache per run; the tiny model folder is shared
            (cache / "models").mkdir(parents=True, exist_ok=True)
            link = cache / "models" / model_dir.name
            if not link.exists():
                link.symlink_to(model_dir)
            return compute_scores(recs, kinds, cfg, cache_dir=cache, pool_hash=pool_hash(recs), progress=False)

        for g, (name, kinds) in enumerate(GROUPS.items()):
            warm = records[:16]
            reference(kinds, warm), ours(kinds, warm, single, f"w1{g}"), ours(kinds, warm, batched, f"wb{g}")
            t_ref, s_ref = timed(lambda: reference(kinds, records))
            t_one, s_one = timed(lambda: ours(kinds, records, single, f"one{g}"))
            t_bat, s_bat = timed(lambda: ours(kinds, records, batched, f"bat{g}"))
            diff = max(float(np.nanmax(np.abs(s_bat[k] - s_ref[k]) / np.abs(s_ref[k]))) for k in kinds)
            same = all(np.allclose(s_one[k], s_bat[k], rtol=1e-4, equal_nan=True) for k in kinds)
            print(f"{name}: reference {t_ref:.1f} s, ours 1/batch {t_one:.1f} s, batched {t_bat:.1f} s", flush=True)
            lines.append(f"| {name} ({' + '.join(kinds)}) | {t_ref:.2f} | {t_one:.2f} | {t_bat:.2f} | "
                         f"{t_ref / t_bat:.1f}x | {t_one / t_bat:.1f}x | {diff:.1e}{'' if same else ' (modes differ!)'} |")
        shares = op_shares(lambda: ours(GROUPS["IFD / PPL inputs"], records, batched, "profiled"))
    lines += ["", f"Throughput, batched: {args.n / t_bat:.0f} records/s for the DEITA pair.", "",
              "Where the batched IFD / PPL time goes (torch profiler, self CPU time): "
              + ", ".join(f"{name} {100 * share:.0f}%" for name, share in shares) + ".", ""]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
