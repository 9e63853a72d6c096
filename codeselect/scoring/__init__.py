"""Per-sample scores from causal LMs (IFD, PPL, DEITA complexity/quality), cached and resumable.

transformers and Lightning are imported only when something is scored.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from codeselect.scoring.config import ScorerConfig, single_scorer, split_scorers
from codeselect.scoring.encoding import KINDS
from codeselect.scoring.engine import compute_scores
from codeselect.scoring.scores_file import read_scores_file

__all__ = ["KINDS", "ScorerConfig", "compute_scores", "read_scores_file", "single_scorer",
           "split_scorers", "top_k_descending", "summarize"]


def top_k_descending(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the k highest scores, highest first; ties keep pool order (lower index first),
    NaN (nothing to score, e.g. an empty response) ranks last."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")  # NaN sorts to the end
    return [int(i) for i in order[:k]]


def summarize(values: np.ndarray) -> dict[str, Any]:
    """Mean/min/max and NaN count of a score array, for the manifest."""
    finite = values[np.isfinite(values)]
    stats: dict[str, Any] = {"nan": int(len(values) - len(finite))}
    if len(finite):
        stats.update(mean=float(finite.mean()), min=float(finite.min()), max=float(finite.max()))
    return stats
