"""Score a pool with a causal LM through Lightning `Trainer.predict`: batched, cached, resumable, shardable.

`compute_scores(records, kinds, scorer_cfg, ...)` returns one float64 array per kind in pool order.
Every kind scored by one model runs in one predict pass (the model loads once). Completed batches are
written to the cache as the run goes; a rerun after an interruption scores only the missing batches
of the same deterministic plan, so its scores are identical to an uninterrupted run's. With
`devices > 1` (and e.g. `strategy=ddp_spawn`) Lightning shards the batches over GPUs or CPU processes.
`engine=vllm` scores the same batches through vLLM instead (`codeselect.scoring.vllm_scoring`).
"""
from __future__ import annotations

import contextlib
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from codeselect.scoring.batching import BatchDataset, PlannedBatch, identity_collate, plan_batches
from codeselect.scoring.config import ScorerConfig, model_key
from codeselect.scoring.encoding import KINDS, PPL_KINDS, encode, rating_token_ids
from codeselect.scoring.loading import load_tokenizer, model_source, resolve_max_length, tiny_model_dir
from codeselect.scoring.store import ScoreStore

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide Lightning's banner lines and the few-workers hint; keep its progress bar and warnings."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=".*infer the batch indices.*")  # batch_size=None
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # Lightning vs newer torch
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _accelerator(device: str) -> str:
    return "gpu" if device.startswith("cuda") else device if device in ("cpu", "mps") else "auto"


def run_predict(cfg: ScorerConfig, source: str, device: str, stores: dict[str, Any],
                batches: list[PlannedBatch], pad_id: int, rating_ids: list[int] | None,
                store: ScoreStore, progress: bool, root_dir: Path) -> None:
    """Score `batches` with Lightning; results land in `store` as part files."""
    import lightning.pytorch as pl
    import torch

    from codeselect.scoring.predict import PartWriter, ScoringModule

    kinds = sorted(stores)
    dataset = BatchDataset(stores, batches, pad_id, {k: i for i, k in enumerate(kinds)})
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, collate_fn=identity_collate)
    module = ScoringModule(cfg, source, device, kinds, rating_ids)
    with _quiet_lightning():
        trainer = pl.Trainer(accelerator=_accelerator(device), devices=cfg.devices, strategy=cfg.strategy,
                             logger=False, enable_checkpointing=False, enable_model_summary=False,
                             enable_progress_bar=progress, callbacks=[PartWriter(store, cfg.chunk_batches)],
                             default_root_dir=str(root_dir))
        trainer.predict(module, dataloaders=loader, return_predictions=False)


def compute_scores(records: Sequence[dict[str, Any]], kinds: Sequence[str],
                   scorer: Mapping[str, Any] | ScorerConfig, *, cache_dir: Path, pool_hash: str,
                   device: str = "cpu", progress: bool = True,
                   info: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Per-sample scores of each kind (`ppl`, `ppl_alone`, `complexity`, `quality`) from one scorer.

    Cached under `cache_dir/scores/<model-key>/<pool_hash>/`; finished kinds are read back without
    loading the model. `info`, when given, receives the cache folder, model key and timings.
    """
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown score kind {kind!r}; known: {KINDS}")
    t0 = time.perf_counter()
    cfg = ScorerConfig.from_mapping(scorer)
    n = len(records)
    tiny_dir = tiny_model_dir(records, Path(cache_dir), pool_hash, cfg) if cfg.is_tiny else None
    source = model_source(cfg, tiny_dir)
    max_length = resolve_max_length(cfg, source)
    key = model_key(cfg, tiny_dir, device, max_length)
    store = ScoreStore(Path(cache_dir) / "scores" / key / pool_hash)
    out = {k: v for k in kinds if (v := store.load_final(k, n)) is not None}
    todo = [k for k in dict.fromkeys(kinds) if k not in out]
    computed_batches = 0
    engine_start_s = 0.0
    if todo:
        tok = load_tokenizer(cfg, source)
        rating_ids = rating_token_ids(tok, cfg.rating_token_ids) \
            if any(k not in PPL_KINDS for k in todo) else None
        stores = {k: encode(k, records, tok, max_length) for k in todo}
        pending: list[PlannedBatch] = []
        for kind, ts in stores.items():
            _, done = store.load_parts(kind, n)
            plan = plan_batches(ts.lengths, ts.scorable(), cfg.batch_tokens, cfg.max_batch_size)
            pending += [PlannedBatch(kind, b, idx) for b, idx in enumerate(plan) if not done[idx].all()]
        if pending:
            log.info("scoring %s for %d samples with %s: %d batches", "/".join(todo), n, cfg.model,
                     len(pending))
            if cfg.engine == "vllm":
                from codeselect.scoring.vllm_scoring import run_vllm

                engine_start_s = run_vllm(cfg, source, device, stores, pending, rating_ids, store,
                                          max_length)
            else:
                run_predict(cfg, source, device, stores, pending, int(tok.pad_token_id), rating_ids,
                            store, progress, Path(cache_dir))
            computed_batches = len(pending)
        for kind, ts in stores.items():
            parts = store.part_files(kind)
            values, done = store.load_parts(kind, n, parts)
            missing = ts.scorable() & ~done
            if missing.any() and (final := store.load_final(kind, n)) is not None:
                out[kind] = final  # a concurrent job finished this kind and took part files we wrote
                continue
            if missing.any():
                raise RuntimeError(f"scoring {kind} left {int(missing.sum())} samples unscored")
            values[~ts.scorable()] = np.nan
            store.finalize(kind, values, parts)
            out[kind] = values
    if info is not None:
        info.update({"scorer": cfg.model, "scorer_key": key, "engine": cfg.engine, "scores_dir": str(store.root),
                     "max_length": max_length,
                     "score_s": round(time.perf_counter() - t0, 3), "scored_batches": computed_batches,
                     **({"engine_start_s": round(engine_start_s, 3)} if cfg.engine == "vllm" else {}),
                     "cached_kinds": [k for k in kinds if k not in todo]})
    return {k: out[k] for k in kinds}
