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
    """DQ bins as SYSTEM.md 4 states them, from an n x n similarity matrix, re-summing the chosen set's
    rows every step."""
    sim = x @ x.T
    n = len(x)
    remaining = np.arange(n)
    out, gains = [], []
    for size in [n // bins] * bins:  # every bin n // bins; the n % bins leftovers in none
        sub = sim[np.ix_(remaining, remaining)]
        # sums row by row, so that duplicate samples' columns see the same operations and tie exactly
        colsum = np.zeros(len(remaining))
        for row in sub:  # over the bin's whole ground set (what is left)
            colsum += row
        chosen: list[int] = []
        picked = np.zeros(len(remaining))
        for _ in range(size):
            gain = lam * colsum - 2.0 * picked
            gain[chosen] = -np.inf
            j = int(np.argmax(gain))  # the first maximum
            chosen.append(j)
            picked += sub[j]
            gains.append(float(gain[j]))
        mask = np.zeros(len(remaining), dtype=bool)
        mask[chosen] = True
        out.append(remaining[mask])
        remaining = remaining[~mask]
    return out, gains


# ---------------------------------------------------------------- kcenter
def reference_kcenter(x: np.ndarray, k: int, seed: int) -> list[int]:
    """SYSTEM.md 4's kcenter as the published script runs it: numpy's legacy global RNG for the first
    point, scikit-learn's pairwise euclidean distances (one n x 1 pass per pick), a running
    minimum, `np.argmax` (first maximum)."""
    from sklearn.metrics import pairwise_distances

    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        first = np.random.choice(np.arange(len(x)))
    finally:
        np.random.set_state(saved)
    picks = [int(first)]
    min_d = pairwise_distances(x, x[first].reshape(1, -1), metric="euclidean")
    for _ in range(1, k):
        p = int(np.argmax(min_d))
        picks.append(p)
        min_d = np.minimum(min_d, pairwise_distances(x, x[p].reshape(1, -1), metric="euclidean"))
    return picks


@pytest.mark.parametrize("n, d, k, candidates", [(400, 16, 60, 8), (300, 8, 280, 16), (500, 32, 80, 2048),
                                                 (500, 3, 200, 1)])
def test_kcenter_matches_the_references_loop(n: int, d: int, k: int, candidates: int) -> None:
    x = clustered(n, d, seed=n)
    ctx = context(x)
    picks = KCenterSelector(chunk_size=97, candidates=candidates, progress=False).select(ctx, k)
    assert picks == reference_kcenter(x.numpy(), k, seed=42)
    assert ctx.info["kcenter"]["first"] == picks[0]


def test_kcenter_float32_ties_go_to_the_lowest_index_as_in_the_reference() -> None:
    """Rows whose distances differ in float64 but round to the same float32 distance are tied in the
    reference, and its argmax takes the first; a float64 argmax would take the farther one."""
    base = clustered(50, 8, seed=3).double()
    gen = torch.Generator().manual_seed(1)
    far = 3.0 * torch.nn.functional.normalize(torch.randn(8, dtype=torch.float64, generator=gen), dim=0)
    x = torch.cat([base, far[None]]).float()
    # a copy of the far row, nudged by one float32 ulp in one coordinate: farther in float64
    nudged = x[-1].clone()
    nudged[0] = torch.nextafter(nudged[0], torch.tensor(10.0))
    x = torch.cat([x, nudged[None]])
    ref = reference_kcenter(x.numpy(), 10, seed=42)
    got = KCenterSelector(candidates=4, progress=False).select(context(x), 10)
    assert got == ref


def test_kcenter_with_duplicate_rows_takes_every_row_once() -> None:
    x = clustered(60, 4, duplicates=20)
    ctx = context(x)
    picks = KCenterSelector(candidates=4, progress=False).select(ctx, 40)
    assert len(set(picks)) == 40
    assert picks == reference_kcenter(x.numpy(), 40, seed=42)


def test_kcenter_first_point_follows_the_seed() -> None:
    x = clustered(200, 8)
    a, b, c = (KCenterSelector(progress=False).select(context(x, seed=s), 10) for s in (1, 1, 2))
    assert a == b and a != c
    assert a[0] == int(np.random.RandomState(1).choice(np.arange(200)))


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


def test_dq_bins_leave_the_remainder_out() -> None:
    x = clustered(95, 8).double()
    got = graphcut_bins(x, 10, progress=False)
    assert [len(b) for b in got] == [9] * 10  # 95 // 10 each; 5 samples in no bin
    assert len(set(torch.cat(got).tolist())) == 90


def reference_bin_draw(bins: list[list[int]], k: int, seed: int) -> list[int]:
    """SYSTEM.md 4's sampling with the module-level calls the reference makes."""
    import random

    saved = random.getstate()
    try:
        random.seed(seed)
        out: list[int] = []
        for i, members in enumerate(bins):
            q = k // len(bins) + (1 if i < k % len(bins) else 0)
            out.extend(random.sample(members, q) if len(members) > q else members)
        return out
    finally:
        random.setstate(saved)


@pytest.mark.parametrize("n, k", [(200, 43), (203, 150), (95, 90), (95, 85)])
def test_dq_draws_as_the_reference_bin_by_bin(n: int, k: int) -> None:
    x = clustered(n, 8)
    ctx = context(x, seed=7)
    picks = DQSelector(progress=False).select(ctx, k)
    bins = [b.tolist() for b in graphcut_bins(x.double(), 10, progress=False)]
    assert picks == reference_bin_draw(bins, k, seed=7)
    assert ctx.info["dq"]["bin_sizes"] == [n // 10] * 10
    other_seed = DQSelector(progress=False).select(context(x, seed=8), k)
    # a bin that holds no more than its quota is given whole, in pool order, with no draw
    assert (picks == other_seed) == (k == 10 * (n // 10))


def test_dq_k_beyond_what_the_bins_hold_names_the_largest_k() -> None:
    with pytest.raises(UserError, match="at most 90 .*got 91"):
        DQSelector(progress=False).select(context(clustered(95, 4)), 91)


# ---------------------------------------------------------------- random
def test_random_is_the_references_draw_in_draw_order() -> None:
    import random

    records = [{"id": f"r{i}"} for i in range(1000)]
    random.seed(777)
    marker = random.random()
    saved = random.getstate()
    random.seed(42)  # the published script: random.seed(42); random.sample(records, k)
    expected = [int(r["id"][1:]) for r in random.sample(records, 500)]
    random.setstate(saved)
    ctx = SelectionContext(records=records, embeddings=None, seed=42)
    random.seed(777)
    got = RandomSelector().select(ctx, 500)
    assert random.random() == marker  # the global RNG is untouched
    assert got == expected
    assert got != RandomSelector().select(SelectionContext(records=records, embeddings=None, seed=43), 500)


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
