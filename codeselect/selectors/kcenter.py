"""kcenter: greedy k-center (farthest-point) selection on euclidean distance.

Reference semantics (SYSTEM.md section 4): the first point is `np.random.seed(seed);
np.random.choice(np.arange(n))` (reproduced by a private `RandomState(seed)`), then repeatedly the
point farthest from the chosen set, first maximum on ties, output in pick order. The reference
measures distances with scikit-learn's `pairwise_distances` on float32 embeddings, which computes
||x||^2 + ||y||^2 - 2 <x, y> in float64, stores it as float32, clips at 0 and takes a float32
square root. Rounding to float32 makes distances that differ in float64 equal, and the first-index
rule then decides; so we compare the same float32 keys (`reference_key`). Every float32 key is a
monotone function of the exact squared distance, so the running minimum commutes with it and the
keys, hence the picks, are the reference's.

Speed: one running vector of squared distances to the chosen set (never an n x k matrix), kept
lazily: stale distances are upper bounds, so most picks only touch the farthest few thousand rows,
and the whole pool is brought up to date with one chunked matrix product per block of picks.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from codeselect.errors import UserError
from codeselect.selectors.base import SelectionContext, Selector, pool_embeddings, resolve_device

log = logging.getLogger(__name__)


def _refresh(x: torch.Tensor, sq: torch.Tensor, d2: torch.Tensor, new: list[int], chunk_size: int) -> None:
    """d2 = min(d2, squared distance to each row of x[new]), chunk by chunk (in place)."""
    if not new:
        return
    idx = torch.tensor(new, dtype=torch.long, device=x.device)
    xn, sqn = x[idx], sq[idx]
    for lo in range(0, x.shape[0], chunk_size):
        hi = min(x.shape[0], lo + chunk_size)
        dist = torch.addmm(sq[lo:hi, None] + sqn[None, :], x[lo:hi], xn.T, alpha=-2.0)
        torch.minimum(d2[lo:hi], dist.min(dim=1).values, out=d2[lo:hi])
    d2[idx] = -math.inf  # chosen rows are never picked again (matters for duplicates)


def reference_key(d2: torch.Tensor) -> torch.Tensor:
    """The reference's float32 distance for squared distances `d2`: round to float32, clip at 0,
    float32 sqrt (as scikit-learn's euclidean distances of float32 inputs); -inf stays -inf."""
    key = d2.to(torch.float32).clamp(min=0.0).sqrt_()  # a new tensor: `d2` itself is left as it is
    return key.masked_fill_(d2 == -math.inf, -math.inf)


def greedy_kcenter(x: torch.Tensor, k: int, first: int, *, chunk_size: int = 8192,
                   candidates: int = 2048, trace_points: int = 100, progress: bool = True
                   ) -> tuple[list[int], dict]:
    """Greedy k-center picks on the rows of `x` (any norms), starting at row `first`.

    The farthest row is the first maximum of `reference_key` of the squared distance to the
    chosen set. Each row's squared distance only shrinks, so a stale value is an upper bound. We keep
    exact values for the `candidates` farthest rows and pick among them while the best key of them
    still beats every other row's (stale) key; then one chunked matrix product brings all rows up to
    date. The picks equal the plain greedy's; memory stays O(n + chunk_size * picks per block).

    Returns the k picks in order and stats: `radius` (the covering radius of the picks: max over
    the pool of the distance to the nearest pick), `radius_trace` ([t, covering radius of the
    first t picks] at up to `trace_points` evenly spaced t) and `refreshes`.
    """
    n = x.shape[0]
    sq = (x * x).sum(dim=1)
    d2 = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
    picks: list[int] = [int(first)]
    pending = [int(first)]
    every = max(1, k // max(1, trace_points))
    trace: list[list[float]] = []
    refreshes = 0
    bar = tqdm(total=k, desc="kcenter", disable=not progress, mininterval=1.0)
    bar.update(1)
    while True:
        _refresh(x, sq, d2, pending, chunk_size)
        pending, refreshes = [], refreshes + 1
        key = reference_key(d2)
        m = min(candidates, n)
        thr = torch.topk(key, m, sorted=False).values.min()
        in_cand = key >= thr  # rows tied with the threshold are candidates too
        cand = torch.nonzero(in_cand).flatten()  # ascending: ties -> lowest index
        outside = float(key.masked_fill(in_cand, -math.inf).max())  # bound on every other row
        xc, sqc, dc = x[cand], sq[cand], d2[cand]
        while True:
            kc = reference_key(dc)
            j = int(torch.argmax(kc))
            best = float(kc[j])
            if pending and not best > outside:
                break  # another row may be as far now: bring every row up to date
            t = len(picks)  # here `best` is exact and the farthest of all rows
            if t % every == 0 or t == k:  # covering radius of the first t picks
                trace.append([t, math.sqrt(max(float(dc[j]), 0.0))])
            if t == k:
                bar.close()
                return picks, {"radius": trace[-1][1], "radius_trace": trace, "refreshes": refreshes}
            p = int(cand[j])
            picks.append(p)
            pending.append(p)
            bar.update(1)
            torch.minimum(dc, sqc + sq[p] - 2.0 * (xc @ x[p]), out=dc)
            dc[j] = -math.inf


def reference_first_point(n: int, seed: int) -> int:
    """`np.random.seed(seed); np.random.choice(np.arange(n))`, without touching numpy's global state."""
    return int(np.random.RandomState(int(seed)).choice(np.arange(n)))


class KCenterSelector(Selector):
    """Greedy k-center on the embeddings as given (the reference does not re-normalise them); the
    first point is drawn from `ctx.seed` as the reference draws it."""

    def __init__(self, name: str = "kcenter", device: str | None = None, dtype: str = "float64",
                 chunk_size: int = 8192, candidates: int = 2048, progress: bool = True) -> None:
        if dtype not in ("float32", "float64"):
            raise UserError(f"must be float32 or float64, got {dtype!r}", key="selector.dtype")
        if int(chunk_size) < 1:
            raise UserError(f"must be positive, got {chunk_size}", key="selector.chunk_size")
        if int(candidates) < 1:
            raise UserError(f"must be positive, got {candidates}", key="selector.candidates")
        self.name, self.device, self.dtype = name, device, dtype
        self.chunk_size, self.candidates, self.progress = int(chunk_size), int(candidates), progress

    def select(self, ctx: SelectionContext, k: int) -> list[int]:
        emb = pool_embeddings(ctx, k, "kcenter")
        n = emb.shape[0]
        device = resolve_device(self.device) if self.device else ctx.device
        x = emb.to(device=device, dtype=getattr(torch, self.dtype))
        first = reference_first_point(n, ctx.seed)
        picks, stats = greedy_kcenter(x, k, first, chunk_size=self.chunk_size, candidates=self.candidates,
                                      progress=self.progress)
        ctx.info["kcenter"] = {"first": first, "device": str(device), "dtype": self.dtype, **stats}
        log.info("kcenter: %d picks from %d, covering radius %.4f", k, n, stats["radius"])
        return picks
