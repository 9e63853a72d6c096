"""The vLLM side of `codeselect.vllm_client`: a standalone script run by vLLM's own interpreter.

It imports only the standard library and vLLM (never `codeselect`), so it runs in an environment that
has vLLM and its pins (e.g. `.venv-vllm`, see `codeselect/vllm_client.py` for why). Protocol: one JSON
object per line on stdin, one answer per line on a private copy of the original stdout (fd 1 itself
is pointed at stderr, so whatever vLLM or its engine processes print cannot corrupt the answers).

    -> {"engine": {...vllm.LLM kwargs}, "device": "auto"|"cpu"|"cuda", "cpu": {...}}
    <- {"ok": true, "load_s": ..., "platform": "cpu"}
    -> {"op": "generate", "token_ids": [[...]] (or "prompts": [...]), "sampling": {...SamplingParams}}
    <- {"ok": true, "texts": [[...n texts...], ...], "output_tokens": N, "s": ...}
    -> {"op": "mean_logprob", "token_ids": [[...]], "starts": [...]}
    <- {"ok": true, "values": [mean log p(token t | tokens < t) over t in starts[i]..len-1, ...]}
    -> {"op": "next_token_logprobs", "token_ids": [[...]], "candidates": [ids]}
    <- {"ok": true, "values": [[log p(candidate | tokens) for each candidate], ...]}
    -> {"op": "exit"}
An error answers {"ok": false, "error": "..."}; a failed engine start ends the worker.

vLLM spawns its engine processes, hence the `__main__` guard.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from typing import Any


def _cpu_environment(cpu: dict[str, Any]) -> None:
    """vLLM's CPU settings (read when the engine starts): KV-cache size and OpenMP threads."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu.get("kvcache_gb", 2)))
    threads = cpu.get("threads")
    if threads:
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{int(threads) - 1}")


def start(request: dict[str, Any]) -> tuple[Any, Any, str]:
    device = request.get("device", "auto")
    if device == "cpu":
        _cpu_environment(request.get("cpu") or {})
    import vllm
    from vllm.platforms import current_platform

    platform = str(getattr(current_platform, "device_type", "") or "unknown")
    if device == "auto" and platform == "cpu":
        _cpu_environment(request.get("cpu") or {})
    engine = dict(request["engine"])
    if platform == "cpu":  # GPU-only settings mean nothing to the CPU engine
        engine.pop("gpu_memory_utilization", None)
    return vllm, vllm.LLM(**engine), platform


def _tokens_prompts(vllm: Any, token_ids: list[list[int]]) -> list[Any]:
    from vllm.inputs import TokensPrompt

    return [TokensPrompt(prompt_token_ids=list(ids)) for ids in token_ids]


def generate(vllm: Any, llm: Any, req: dict[str, Any]) -> dict[str, Any]:
    params = vllm.SamplingParams(**req["sampling"])
    prompts = _tokens_prompts(vllm, req["token_ids"]) if "token_ids" in req else req["prompts"]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    texts = [[c.text for c in o.outputs] for o in outputs]
    tokens = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return {"texts": texts, "output_tokens": tokens}


def _logprob(entry: Any) -> float:
    return float(entry.logprob if hasattr(entry, "logprob") else entry)


def mean_logprob(vllm: Any, llm: Any, req: dict[str, Any]) -> dict[str, Any]:
    """Mean log-probability of each sequence's tokens from `starts[i]` on (prompt logprobs)."""
    params = vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
    outputs = llm.generate(_tokens_prompts(vllm, req["token_ids"]), params, use_tqdm=False)
    values = []
    for ids, start, out in zip(req["token_ids"], req["starts"], outputs):
        plp = out.prompt_logprobs  # position t: {token id: Logprob} for the prompt token t (None at 0)
        total = [_logprob(plp[t][ids[t]]) for t in range(max(start, 1), len(ids))]
        values.append(sum(total) / len(total) if total else math.nan)
    return {"values": values}


def next_token_logprobs(vllm: Any, llm: Any, req: dict[str, Any]) -> dict[str, Any]:
    """Log-probabilities of the candidate tokens after each sequence: one decoding step with
    `logprob_token_ids` (vLLM's raw log-softmax over the vocabulary, before any sampling setting)."""
    cands = [int(c) for c in req["candidates"]]
    params = vllm.SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=cands,
                                 detokenize=False)
    outputs = llm.generate(_tokens_prompts(vllm, req["token_ids"]), params, use_tqdm=False)
    return {"values": [[_logprob(o.outputs[0].logprobs[0][c]) for c in cands] for o in outputs]}


OPS = {"generate": generate, "mean_logprob": mean_logprob, "next_token_logprobs": next_token_logprobs}


def main() -> int:
    answers = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # everything else printed to stdout (here or in child processes) goes to stderr
    sys.stdout = sys.stderr

    def answer(obj: dict[str, Any]) -> None:
        answers.write(json.dumps(obj) + "\n")
        answers.flush()

    line = sys.stdin.readline()
    if not line:
        return 1
    t0 = time.perf_counter()
    try:
        vllm, llm, platform = start(json.loads(line))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        traceback.print_exc()
        answer({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    import vllm as _v

    answer({"ok": True, "load_s": round(time.perf_counter() - t0, 2), "platform": platform,
            "vllm": getattr(_v, "__version__", "?")})
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("op") == "exit":
            break
        t = time.perf_counter()
        try:
            out = OPS[req["op"]](vllm, llm, req)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            answer({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            continue
        answer({"ok": True, "s": round(time.perf_counter() - t, 3), **out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
