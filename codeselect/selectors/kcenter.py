"""kcenter: greedy k-center (farthest-point) selection on euclidean distance.

Start at a point drawn from the seed, then repeatedly add the pool point farthest from the chosen
set. We keep one running vector of squared distances to the chosen set, so each step is one
(chunked) matrix-vector product: O(n d) work and O(n + chunk) extra memory per step, never an
n x k distance matrix. Ties go to the lowest pool index (`torch.argmax` returns the first
maximum), so the picks equal those of a brute-force greedy from the same first point.
"""
from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm

from codeselect.errors import UserError
from codeselect.selectors.base import SelectionContext, Selector, resolve_device

log = logging.getLogger(__name__)


def greedy_kcenter(x: torch.Tensor, k: int, first: int, *, chunk_size: int = 1 << 20,
                   trace_points: int = 100, progress: bool = True) -> tuple[list[int], dict]:
    """Greedy k-center picks on the rows of `x` (any norms), starting at row `first`.

    Returns the k picks in order and stats: `radius` (the covering radius of the picks: max over
    the pool of the distance to the nearest pick) and `radius_trace` ([t, covering radius of the
    first t picks] at up to `trace_points` evenly spaced t; it is also the distance of pick t+1).
    """
    n = x.shape[0]
    sq = (x * x).sum(dim=1)
    d2 = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
    picks = [int(first)]
    every = max(1, k // max(1, trace_points))
    trace: list[list[float]] = []
    p = int(first)
    for step in tqdm(range(1, k + 1), desc="kcenter", disable=not progress, mininterval=1.0):
        xp, sqp = x[p], sq[p]
        for lo in range(0, n, chunk_size):  # d2 = min(d2, |x - x_p|^2), chunk by chunk
            hi = min(n, lo + chunk_size)
            new = sq[lo:hi] + sqp - 2.0 * (x[lo:hi] @ xp)
            torch.minimum(d2[lo:hi], new, out=d2[lo:hi])
        d2[p] = -float("inf")  # chosen points are never picked again (matters for duplicates)
        p = int(torch.argmax(d2))  # first maximum: ties -> lowest index
        radius = float(d2[p].clamp_min(0).sqrt())  # 0 once every point is chosen (d2 all -inf)
        if step % every == 0 or step == k:
            trace.append([step, radius])
        if step == k:
            break
        picks.append(p)
    return picks, {"radius": radius, "radius_trace": trace}


class KCenterSelector(Selector):
    """Greedy k-center on the (unit) embeddings; the first point is drawn from `ctx.seed`."""

    def __init__(self, name: str = "kcenter", device: str | None = None, dtype: str = "float32",
                 chunk_size: int = 1 << 20, progress: bool = True) -> None:
        if dtype not in ("float32", "float64"):
            raise UserError(f"must be float32 or float64, got {dtype!r}", key="selector.dtype")
        if int(chunk_size) < 1:
            raise UserError(f"must be positive, got {chunk_size}", key="selector.chunk_size")
        self.name, self.device, self.dtype = name, device, dtype
        self.chunk_size, self.progress = int(chunk_size), progress

    def select(self, ctx: SelectionContext, k: int) -> list[int]:
        if ctx.embeddings is None:
            raise UserError("the kcenter selector needs embeddings", key="embedding")
        n = ctx.embeddings.shape[0]
        if not 1 <= k <= n:
            raise UserError(f"must be in [1, {n}] for a pool of {n} records, got {k}", key="sample_num")
        device = resolve_device(self.device) if self.device else ctx.device
        x = ctx.embeddings.to(device=device, dtype=getattr(torch, self.dtype))
        first = int(torch.randint(n, (1,), generator=torch.Generator().manual_seed(int(ctx.seed))))
        picks, stats = greedy_kcenter(x, k, first, chunk_size=self.chunk_size, progress=self.progress)
        ctx.info["kcenter"] = {"first": first, "device": str(device), "dtype": self.dtype, **stats}
        log.info("kcenter: %d picks from %d, covering radius %.4f", k, n, stats["radius"])
        return picks
