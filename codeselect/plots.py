"""Small pictures people would rather look at than read."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def pca_2d(x: np.ndarray, seed: int = 0, fit_rows: int = 20000) -> np.ndarray:
    """Project rows onto their first two principal components (fitted on at most `fit_rows` rows)."""
    rng = np.random.default_rng(seed)
    fit = x if len(x) <= fit_rows else x[rng.choice(len(x), fit_rows, replace=False)]
    mean = fit.mean(axis=0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    return (x - mean) @ vt[:2].T


def plot_selection(embeddings: np.ndarray, indices: Sequence[int], path: str | Path, *,
                   title: str = "", max_points: int = 20000, seed: int = 0) -> Path:
    """Scatter the pool (grey) and the selection (colour) on the pool's first two PCs; save a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    emb = np.asarray(embeddings, dtype=np.float32)
    xy = pca_2d(emb, seed=seed)
    rng = np.random.default_rng(seed)
    pool_rows = np.arange(len(emb)) if len(emb) <= max_points else rng.choice(len(emb), max_points, replace=False)
    sel = np.asarray(indices)
    sel_rows = sel if len(sel) <= max_points else rng.choice(sel, max_points, replace=False)
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=110)
    ax.scatter(xy[pool_rows, 0], xy[pool_rows, 1], s=2, c="#bbbbbb", alpha=0.5, label=f"pool ({len(emb):,})",
               rasterized=True)
    ax.scatter(xy[sel_rows, 0], xy[sel_rows, 1], s=3, c="#d62728", alpha=0.7,
               label=f"selection ({len(sel):,})", rasterized=True)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title or "pool vs selection", fontsize=10)
    ax.legend(loc="upper right", fontsize=8, markerscale=4)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
