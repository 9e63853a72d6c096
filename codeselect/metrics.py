"""Subset-quality metrics: compare selectors without training a model.

All on the L2-normalised embeddings, the selected set S against the pool P:

- `mmd`: squared maximum mean discrepancy between P and S (biased V-statistic, so >= 0) with the
  Gaussian kernel k(a, b) = exp(-|a - b|^2 / h). The bandwidth h is the median heuristic: the
  median squared distance between pairs of (up to 1,000) pool points drawn from `seed`. It depends
  on the pool and seed only, never on S, so every selector on a pool is measured with the same
  kernel. P and S are each subsampled to `mmd_sample` points (seeded) when larger.
- `coverage_mean_max_sim`: mean over P of the largest cosine similarity to S (higher is better).
- `kcenter_radius`: max over P of the euclidean distance to the nearest point of S (lower is better).
- `diversity`: mean pairwise cosine distance within S (1 - mean off-diagonal cosine), exact in
  O(k d) from the norm of the sum.

The nearest-point search is chunked (exact, see codeselect.mapping.nearest), so a 92K x 768 pool
with k = 25K needs a few hundred MB; the MMD needs O(mmd_sample^2) time and a few hundred MB.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from codeselect.mapping import nearest

BANDWIDTH_POINTS = 1000


def _sample(x: torch.Tensor, m: int, seed: int) -> torch.Tensor:
    if x.shape[0] <= m:
        return x
    return x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:m]]


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared euclidean distances of unit rows, in float64."""
    return (2.0 - 2.0 * (a @ b.T).double()).clamp_min_(0.0)


def _kernel_mean(a: torch.Tensor, b: torch.Tensor, h: float, chunk: int = 2048) -> float:
    total = 0.0
    for lo in range(0, a.shape[0], chunk):
        total += float(torch.exp(-_sq_dist(a[lo:lo + chunk], b) / h).sum())
    return total / (a.shape[0] * b.shape[0])


def median_bandwidth(pool: torch.Tensor, seed: int = 42) -> float:
    """Median squared distance between distinct pairs of up to 1,000 seeded pool points."""
    p = _sample(F.normalize(pool.float(), dim=1), BANDWIDTH_POINTS, seed)
    d2 = _sq_dist(p, p)
    iu = torch.triu_indices(p.shape[0], p.shape[0], offset=1)
    h = float(d2[iu[0], iu[1]].median()) if p.shape[0] > 1 else 1.0
    return h if h > 0 else 1.0


def mmd2(pool: torch.Tensor, subset: torch.Tensor, h: float) -> float:
    """Biased squared MMD between two sets of unit rows with kernel exp(-|a-b|^2 / h)."""
    return (_kernel_mean(pool, pool, h) + _kernel_mean(subset, subset, h)
            - 2.0 * _kernel_mean(pool, subset, h))


def subset_metrics(embeddings: torch.Tensor, indices: Sequence[int], *, seed: int = 42,
                   mmd_sample: int = 20000, chunk_size: int = 4096,
                   precision: str = "auto") -> dict[str, float]:
    """Quality of the subset `indices` of the pool `embeddings` (n x d); see the module docstring."""
    x = F.normalize(embeddings.detach().float().cpu(), dim=1)
    idx = torch.as_tensor(list(indices), dtype=torch.long)
    if idx.numel() == 0:
        raise ValueError("empty subset")
    s = x[idx]
    k = s.shape[0]

    h = median_bandwidth(x, seed)
    mmd = mmd2(_sample(x, mmd_sample, seed), _sample(s, mmd_sample, seed + 1), h)

    max_sim, _ = nearest(x, s, chunk_size=chunk_size, precision=precision, exact=True)
    radius = float(torch.sqrt(torch.clamp(2.0 - 2.0 * max_sim.double().min(), min=0.0)))

    total = s.double().sum(dim=0)
    off_diag = float(total @ total) - float((s.double() ** 2).sum())
    diversity = 1.0 - off_diag / (k * (k - 1)) if k > 1 else 0.0
    return {
        "mmd": float(max(mmd, 0.0)),
        "mmd_bandwidth": h,
        "coverage_mean_max_sim": float(max_sim.double().mean()),
        "kcenter_radius": radius,
        "diversity": float(diversity),
    }
