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

__all__ = ["KINDS", "ScorerConfig", "compute_scores", "ifd_scores", "read_scores_file", "single_scorer",
           "split_scorers", "top_k_descending", "summarize", "zero_failed"]


def zero_failed(values: np.ndarray) -> np.ndarray:
    """The reference's rule for a score that failed or is NaN (nothing to score): 0."""
    out = np.asarray(values, dtype=np.float64).copy()
    out[~np.isfinite(out)] = 0.0
    return out


def ifd_scores(ppl: np.ndarray, ppl_alone: np.ndarray) -> np.ndarray:
    """IFD = PPL(response | instruction) / PPL(response); a NaN or failed part (no targets, or a
    response-alone sequence cut to nothing) makes it 0, as in the reference."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return zero_failed(np.asarray(ppl, dtype=np.float64) / np.asarray(ppl_alone, dtype=np.float64))


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
