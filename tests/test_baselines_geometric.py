"""random, kcenter and dq against brute-force versions of their published semantics (SYSTEM.md 4)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codeselect.errors import UserError
from codeselect.selectors.base import SelectionContext
from codeselect.selectors.dq import DQSelector, graphcut_bins, greedy_graphcut, sample_bins
from codeselect.selectors.kcenter import KCenterSelector
from codeselect.selectors.random_subset import RandomSelector

REPO = Path(__file__).resolve().parents[1]


def clustered(n: int, d: int, clusters: int = 5, seed: int = 0, duplicates: int = 0) -> torch.Tensor:
    """Unit rows around a few centres; the last `duplicates` rows copy earlier ones (exact ties)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, d, generator=gen)
    x = centres[torch.randint(clusters, (n,), generator=gen)] + 0.7 * torch.randn(n, d, generator=gen)
    x = torch.nn.functional.normalize(x, dim=1)
    if duplicates:
        x[n - duplicates:] = x[torch.randint(n - duplicates, (duplicates,), generator=gen)]
    return x


def context(x: torch.Tensor, seed: int = 42) -> SelectionContext:
    return SelectionContext(records=[{"id": i} for i in range(len(x))], embeddings=x, seed=seed)


# ---------------------------------------------------------------- brute-force references
def brute_kcenter(x: np.ndarray, k: int, first: int) -> tuple[list[int], float]:
    """Farthest point first with explicit euclidean distances; ties -> lowest index."""
    dist = np.linalg.norm(x - x[first], axis=1)
    picks = [first]
    while len(picks) < k:
        masked = dist.copy()
        masked[picks] = -np.inf
        p = int(np.argmax(masked))
        picks.append(p)
        dist = np.minimum(dist, np.linalg.norm(x - x[p], axis=1))
    return picks, float(dist.max())


def brute_graphcut_bins(x: np.ndarray, bins: int, lam: float) -> tuple[list[np.ndarray], list[float]]:
    """DQ bins from an n x n similarity matrix, re-summing the chosen set's rows every step."""
    sim = x @ x.T
    n = len(x)
    sizes = [n // bins + (1 if b < n % bins else 0) for b in range(bins)]
    remaining = np.arange(n)
    out, gains = [], []
    for size in sizes:
        sub = sim[np.ix_(remaining, remaining)]
        colsum = sub.sum(axis=0)  # over the bin's whole ground set (what is left)
        chosen: list[int] = []
        for _ in range(size):
            gain = lam * colsum - 2.0 * sub[chosen].sum(axis=0)
            gain[chosen] = -np.inf
            j = int(np.argmax(gain))
            chosen.append(j)
            gains.append(float(gain[j]))
        mask = np.zeros(len(remaining), dtype=bool)
        mask[chosen] = True
        out.append(remaining[mask])
        remaining = remaining[~mask]
    return out, gains


# ---------------------------------------------------------------- kcenter
@pytest.mark.parametrize("n, d, k, dtype, candidates", [(400, 16, 60, "float64", 8), (300, 8, 300, "float64", 16),
                                                        (500, 32, 80, "float32", 2048), (500, 3, 200, "float64", 1)])
def test_kcenter_matches_brute_force_greedy(n: int, d: int, k: int, dtype: str, candidates: int) -> None:
    x = clustered(n, d, seed=n)
    ctx = context(x)
    picks = KCenterSelector(dtype=dtype, chunk_size=97, candidates=candidates, progress=False).select(ctx, k)
    first = ctx.info["kcenter"]["first"]
    expected, radius = brute_kcenter(x.double().numpy(), k, first)
    assert picks == expected
    assert ctx.info["kcenter"]["radius"] == pytest.approx(radius, abs=1e-5)


def test_kcenter_with_duplicate_rows_takes_every_row_once() -> None:
    x = clustered(60, 4, duplicates=20)
    ctx = context(x)
    picks = KCenterSelector(dtype="float64", candidates=4, progress=False).select(ctx, 60)
    assert sorted(picks) == list(range(60))
    assert ctx.info["kcenter"]["radius"] == 0.0
    # with exact duplicates left, the tie at distance 0 goes to the lowest unpicked index
    assert picks == brute_kcenter(x.double().numpy(), 60, ctx.info["kcenter"]["first"])[0]


def test_kcenter_first_point_follows_the_seed() -> None:
    x = clustered(200, 8)
    a, b, c = (KCenterSelector(progress=False).select(context(x, seed=s), 10) for s in (1, 1, 2))
    assert a == b and a != c


# ---------------------------------------------------------------- dq
@pytest.mark.parametrize("n, d, bins, lam, block", [(203, 16, 10, 1.0, 256), (300, 8, 10, 1.0, 4),
                                                     (157, 6, 3, 0.5, 16), (120, 12, 7, 2.0, 1)])
def test_dq_bins_and_gains_match_brute_force_graphcut(n: int, d: int, bins: int, lam: float, block: int) -> None:
    x = clustered(n, d, seed=n, duplicates=10).double()
    expected, gains = brute_graphcut_bins(x.numpy(), bins, lam)
    got = graphcut_bins(x, bins, lam, block=block, progress=False)
    assert [b.tolist() for b in got] == [b.tolist() for b in expected]
    # gains of the first bin's picks, in pick order
    picks, got_gains = greedy_graphcut(x, len(expected[0]), lam, block=block)
    assert sorted(picks) == expected[0].tolist()
    assert got_gains == pytest.approx(gains[:len(picks)], rel=1e-9, abs=1e-9)


def test_dq_bins_partition_the_pool_with_even_sizes() -> None:
    x = clustered(95, 8).double()
    got = graphcut_bins(x, 10, progress=False)
    assert [len(b) for b in got] == [10] * 5 + [9] * 5
    assert sorted(torch.cat(got).tolist()) == list(range(95))


def test_dq_samples_an_equal_seeded_share_from_every_bin() -> None:
    x = clustered(200, 8)
    ctx = context(x, seed=7)
    picks = DQSelector(progress=False).select(ctx, 43)
    info = ctx.info["dq"]
    assert info["bin_sizes"] == [20] * 10 and info["quotas"] == [5, 5, 5] + [4] * 7
    bins = graphcut_bins(x.double(), 10, progress=False)
    start = 0
    for members, quota in zip(bins, info["quotas"]):  # bin 0's draws first, then bin 1's, ...
        assert set(picks[start:start + quota]) <= set(members.tolist())
        start += quota
    assert picks == sample_bins(bins, 43, seed=7)
    assert picks != sample_bins(bins, 43, seed=8)


def test_dq_k_equal_to_n_returns_the_whole_pool() -> None:
    x = clustered(37, 4)
    assert sorted(DQSelector(progress=False).select(context(x), 37)) == list(range(37))


# ---------------------------------------------------------------- random
def test_random_is_seeded_and_without_replacement() -> None:
    ctx = context(torch.zeros(1000, 2))
    a = RandomSelector().select(ctx, 500)
    assert len(set(a)) == 500 and all(0 <= i < 1000 for i in a)
    assert a == RandomSelector().select(context(torch.zeros(1000, 2)), 500)
    assert a != RandomSelector().select(context(torch.zeros(1000, 2), seed=43), 500)


# ---------------------------------------------------------------- all three
SELECTORS = {"random": RandomSelector, "kcenter": KCenterSelector, "dq": DQSelector}


@pytest.mark.parametrize("name", sorted(SELECTORS))
@pytest.mark.parametrize("k", [1, 29, 150])
def test_exactly_k_distinct_indices_and_deterministic(name: str, k: int) -> None:
    x = clustered(150, 8, duplicates=5)
    kwargs = {} if name == "random" else {"progress": False}
    first = SELECTORS[name](**kwargs).select(context(x), k)
    assert len(first) == k and len(set(first)) == k and all(0 <= i < 150 for i in first)
    assert SELECTORS[name](**kwargs).select(context(x), k) == first


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_config_builds_the_selector(name: str) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "conf" / "selector" / f"{name}.yaml")
    selector = instantiate(cfg, _convert_="all")
    assert isinstance(selector, SELECTORS[name]) and selector.name == name


@pytest.mark.parametrize("cls, kwargs, key", [(DQSelector, {"bins": 0}, "selector.bins"),
                                              (DQSelector, {"dtype": "int8"}, "selector.dtype"),
                                              (KCenterSelector, {"chunk_size": 0}, "selector.chunk_size")])
def test_bad_knobs_are_user_errors_naming_the_key(cls: type, kwargs: dict, key: str) -> None:
    with pytest.raises(UserError, match=f"key '{key}'"):
        cls(**kwargs)


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_k_out_of_range_is_a_user_error(name: str) -> None:
    with pytest.raises(UserError, match="sample_num"):
        SELECTORS[name]().select(context(clustered(10, 4)), 11)
