"""The shared shape of score-ranking baselines (ifd, ppl): per-sample scores, then top-k descending."""
from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from codeselect.selectors.base import SelectionContext, Selector


class TopScoreSelector(Selector):
    """Keeps the k samples with the highest score (ties keep pool order; NaN ranks last). The
    scores come from the scorer LM (`scorer`), or from a JSONL file keyed by id (`scores_path`)."""

    def __init__(self, scorer: Any = None, scores_path: str | None = None, name: str | None = None,
                 progress: bool = True) -> None:
        self.scorer, self.scores_path, self.progress = scorer, scores_path, progress
        self.name = name or self.name

    @abstractmethod
    def scores(self, ctx: SelectionContext) -> np.ndarray:
        """One score per pool sample, in pool order."""

    def select(self, ctx: SelectionContext, k: int) -> list[int]:
        from codeselect.scoring import top_k_descending

        return top_k_descending(self.scores(ctx), k)
