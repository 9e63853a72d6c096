"""The Lightning pieces of scoring: a predict-only module and a writer that saves results as they come.

Module-level classes (not closures) so that `strategy=ddp_spawn` can pickle them to worker processes.
"""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from codeselect.scoring.config import ScorerConfig
from codeselect.scoring.encoding import PPL_KINDS
from codeselect.scoring.loading import load_model
from codeselect.scoring.reductions import (expected_rating, head_perplexity, head_rating,
                                           last_position_logits, masked_perplexity)
from codeselect.scoring.store import ScoreStore


# Architectures whose logits are exactly `lm_head(final hidden state)` (no soft-capping or scaling
# after the head), so the head may be applied to the needed positions only.
PLAIN_HEAD_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3", "starcoder2", "gpt2", "gpt_bigcode"})


def plain_head(model: Any) -> bool:
    """Whether `model`'s logits are a plain linear head on its base model's last hidden state."""
    head = model.get_output_embeddings()
    return (getattr(model.config, "model_type", None) in PLAIN_HEAD_MODELS
            and isinstance(head, torch.nn.Linear) and getattr(model, "base_model", None) is not model)


class ScoringModule(pl.LightningModule):
    """Loads the scorer in `configure_model` (once per rank) and turns padded batches into scores."""

    def __init__(self, cfg: ScorerConfig, source: str, device: str, kinds: list[str],
                 rating_ids: list[int] | None) -> None:
        super().__init__()
        self.cfg, self.source, self.target_device = cfg, source, device
        self.kinds, self.rating_ids = kinds, rating_ids
        self.scorer = None
        self.head_only = False

    def configure_model(self) -> None:
        if self.scorer is None:
            self.scorer = load_model(self.cfg, self.source, self.target_device)
            self.head_only = plain_head(self.scorer)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        # Rows are right-padded and the scorer is causal: a real token never attends to the padding
        # after it, and only real positions are read below. So no mask is needed, which keeps SDPA on
        # its fused causal kernel instead of materialising a B x H x L x L mask (several times faster).
        ids, kind = batch["input_ids"], self.kinds[int(batch["kind"])]
        if self.head_only:  # the LM head only where a score reads it (same numbers, less work)
            hidden = self.scorer.base_model(input_ids=ids, use_cache=False).last_hidden_state
            head = self.scorer.get_output_embeddings()
            if kind in PPL_KINDS:
                values = head_perplexity(hidden, head, ids, batch["starts"], batch["lengths"])
            else:
                values = head_rating(hidden, head, batch["lengths"], self.rating_ids)
        else:
            logits = self.scorer(input_ids=ids, use_cache=False).logits
            if kind in PPL_KINDS:
                values = masked_perplexity(logits, ids, batch["starts"], batch["lengths"])
            else:
                values = expected_rating(last_position_logits(logits, batch["lengths"]), self.rating_ids)
        return {"kind": kind, "indices": batch["indices"].cpu().numpy(),
                "values": values.double().cpu().numpy()}


class PartWriter(BasePredictionWriter):
    """Writes every `every` completed batches to the score cache, so an interrupted run can resume."""

    def __init__(self, store: ScoreStore, every: int) -> None:
        super().__init__(write_interval="batch")
        self.store, self.every = store, every
        self.buffer: list[dict[str, Any]] = []

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any,
                           batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.buffer.append(prediction)
        if len(self.buffer) >= self.every:
            self.flush(trainer.global_rank)

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        self.flush(trainer.global_rank)

    def flush(self, rank: int) -> None:
        for kind in sorted({p["kind"] for p in self.buffer}):
            done = [p for p in self.buffer if p["kind"] == kind]
            self.store.write_part(kind, f"r{rank}", np.concatenate([p["indices"] for p in done]),
                                  np.concatenate([p["values"] for p in done]))
        self.buffer = []
