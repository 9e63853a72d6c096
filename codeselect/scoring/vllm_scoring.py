"""Scores through vLLM (`scorer.engine=vllm`): prompt log-probabilities for PPL / IFD, the six rating
tokens' next-token log-probabilities for DEITA.

Same inputs as the HF path (the `TokenStore` sequences, handed to vLLM as token ids, so both paths
score identical tokens), same batch plan, same part files: resume and the scores file behave the
same. Per sequence:
- PPL kinds: exp(-mean log p(token t | tokens < t)) over the targets t = starts .. length - 1
  (vLLM's prompt logprobs), which is the HF path's exp(mean NLL);
- rating kinds: sum_r r * softmax(log p(rating token r | prompt)); a softmax over log-probabilities
  equals one over the logits (they differ by the log-partition constant), as DEITA defines it.
vLLM runs in its own environment (`codeselect.vllm_client`); the engine loads once per call.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from codeselect.errors import UserError
from codeselect.scoring.batching import PlannedBatch
from codeselect.scoring.config import ScorerConfig
from codeselect.scoring.encoding import PPL_KINDS, RATINGS, TokenStore
from codeselect.scoring.store import ScoreStore

log = logging.getLogger(__name__)


def _model_max(source: str) -> int | None:
    """max_position_embeddings of a local model folder (None when unknown)."""
    import json
    from pathlib import Path

    path = Path(source) / "config.json"
    try:
        return int(json.loads(path.read_text())["max_position_embeddings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def engine_kwargs(cfg: ScorerConfig, source: str, device: str, max_length: int) -> dict[str, Any]:
    """vllm.LLM arguments for scoring: token-id inputs (no tokenizer), the HF path's dtype. The
    context is one token longer than `max_length` (the rating step decodes one token) unless that
    passes the model's own limit."""
    opts = dict(cfg.vllm)
    model_max = _model_max(source)
    context = int(max_length) + 1 if model_max is None or max_length < model_max else int(max_length)
    dtype = "float32" if cfg.dtype == "auto" and not device.startswith("cuda") else \
        ("bfloat16" if cfg.dtype == "auto" else cfg.dtype)
    return {"model": source, "dtype": dtype, "max_model_len": context,
            "skip_tokenizer_init": True, "enable_prefix_caching": False,
            "trust_remote_code": cfg.trust_remote_code, "seed": 0,
            "tensor_parallel_size": int(opts.get("tensor_parallel_size", 1)),
            "gpu_memory_utilization": float(opts.get("gpu_memory_utilization", 0.9)),
            **({"revision": cfg.revision} if cfg.revision else {}),
            **dict(opts.get("engine_args") or {})}


def expected_rating(logprobs: list[float]) -> float:
    """DEITA's expected rating from the six rating tokens' log-probabilities."""
    top = max(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    return sum(r * w for r, w in zip(RATINGS, weights)) / sum(weights)


def run_vllm(cfg: ScorerConfig, source: str, device: str, stores: dict[str, TokenStore],
             batches: list[PlannedBatch], rating_ids: list[int] | None, store: ScoreStore,
             max_length: int) -> float:
    """Score `batches` with vLLM, writing a part file every `cfg.chunk_batches` batches; returns
    the engine's start-up time in seconds."""
    from codeselect.vllm_client import VLLMEngine

    if cfg.gguf_file:
        raise UserError("scorer.engine=vllm needs an HF folder, not a GGUF file (for SmolLM2 use "
                        "the folder model=smollm2 converts)", key="scorer.gguf_file")
    opts = dict(cfg.vllm)
    with VLLMEngine(engine_kwargs(cfg, source, device, max_length), python=opts.get("python", "auto"),
                    device=str(opts.get("device", "auto")), cpu=dict(opts.get("cpu") or {}),
                    key="scorer.vllm") as engine:
        step = max(1, cfg.chunk_batches)
        for begin in range(0, len(batches), step):
            chunk = batches[begin:begin + step]
            for kind in sorted({b.kind for b in chunk}):
                ts = stores[kind]
                idx = np.concatenate([b.indices for b in chunk if b.kind == kind])
                seqs = [ts.sequence(int(i)).tolist() for i in idx]
                if kind in PPL_KINDS:
                    means = engine.mean_logprob(seqs, [int(ts.starts[i]) for i in idx])
                    values = np.exp(-np.asarray(means, dtype=np.float64))
                else:
                    assert rating_ids is not None
                    lps = engine.next_token_logprobs(seqs, rating_ids)
                    values = np.asarray([expected_rating(row) for row in lps], dtype=np.float64)
                store.write_part(kind, "vllm", idx, values)
            log.info("vLLM scored %d/%d batches", min(begin + step, len(batches)), len(batches))
        return engine.load_s
