"""Subset-quality metrics against brute-force numpy, and the properties a user reads them for."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from codeselect.metrics import subset_metrics


def unit_np(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(x: np.ndarray, idx: list[int]) -> dict[str, float]:
    s = x[idx]
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    h = np.median(d2[np.triu_indices(len(x), 1)])
    k = lambda a, b: np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / h)  # noqa: E731
    mmd = k(x, x).mean() + k(s, s).mean() - 2 * k(x, s).mean()
    sim = x @ s.T
    dist = np.sqrt(((x[:, None, :] - s[None, :, :]) ** 2).sum(-1))
    cos = s @ s.T
    m = len(idx)
    return {"mmd": mmd, "coverage_mean_max_sim": sim.max(1).mean(),
            "kcenter_radius": dist.min(1).max(), "diversity": 1 - (cos.sum() - np.trace(cos)) / (m * (m - 1))}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_metrics_match_brute_force(precision: str) -> None:
    x = unit_np(60, 8, seed=0)
    idx = [3, 17, 22, 40, 41, 59, 5]
    got = subset_metrics(torch.from_numpy(x).float(), idx, precision=precision, chunk_size=7)
    want = brute(x, idx)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_whole_pool_is_perfect() -> None:
    x = torch.from_numpy(unit_np(50, 6, seed=1)).float()
    m = subset_metrics(x, range(50))
    assert m["mmd"] == pytest.approx(0, abs=1e-9)
    assert m["coverage_mean_max_sim"] == pytest.approx(1, abs=1e-6)
    assert m["kcenter_radius"] == pytest.approx(0, abs=2e-3)


def test_spread_subset_beats_clumped_subset() -> None:
    rng = np.random.default_rng(2)
    centers = unit_np(5, 16, seed=3)
    labels = rng.integers(0, 5, size=500)
    x = centers[labels] + 0.1 * rng.normal(size=(500, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    spread = [int(np.flatnonzero(labels == c)[j]) for c in range(5) for j in range(4)]
    clumped = [int(i) for i in np.flatnonzero(labels == 0)[:20]]
    a = subset_metrics(torch.from_numpy(x).float(), spread)
    b = subset_metrics(torch.from_numpy(x).float(), clumped)
    assert a["mmd"] < b["mmd"]
    assert a["coverage_mean_max_sim"] > b["coverage_mean_max_sim"]
    assert a["kcenter_radius"] < b["kcenter_radius"]
    assert a["diversity"] > b["diversity"]


def test_subsampled_mmd_is_seeded_and_bandwidth_ignores_the_subset() -> None:
    x = torch.from_numpy(unit_np(1500, 8, seed=4)).float()
    idx = list(range(0, 1500, 3))
    a = subset_metrics(x, idx, seed=7, mmd_sample=300)
    b = subset_metrics(x, idx, seed=7, mmd_sample=300)
    c = subset_metrics(x, idx, seed=8, mmd_sample=300)
    other = subset_metrics(x, list(range(200)), seed=7, mmd_sample=300)
    assert a == b and a["mmd"] != c["mmd"]
    assert other["mmd_bandwidth"] == a["mmd_bandwidth"]  # same kernel for every selector on a pool


def test_single_point_subset() -> None:
    x = torch.from_numpy(unit_np(20, 4, seed=5)).float()
    m = subset_metrics(x, [4])
    assert m["diversity"] == 0.0 and m["kcenter_radius"] > 0
