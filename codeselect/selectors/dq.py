"""dq (dataset quantisation): GraphCut bins, then a seeded equal share of k from every bin.

Bins. The pool is split into `bins` bins one after another. Bin b is built on its ground set R
(every sample not yet in an earlier bin) by greedy GraphCut maximisation: starting from S = {},
repeatedly add the candidate i in R \\ S with the largest gain

    gain(i | S) = lam * sum_{j in R} <f_j, f_i>  -  2 * sum_{s in S} <f_s, f_i>

until the bin holds its size. Our reading of the reference ("sum_all"): the first sum runs over
the bin's whole ground set R (the samples still unassigned when the bin starts, including i
itself and the bin's own picks), fixed while the bin fills; this is what the dataset-quantisation
code computes (column sums of the similarity matrix of the remaining pool). Ties go to the lowest
pool index. Bin sizes: n // bins each, the first n % bins bins one more, so every sample lands in
a bin (the reference drops those n % bins leftovers); the last bin takes what is left.

Speed and memory. With dot-product similarity the gain is linear in f_i: gain = <w, f_i> with
w = lam * sum_R f_j - 2 * sum_S f_s, so no n x n matrix is needed (memory O(n d + n block)).
Each pick would still cost one memory-bound pass over R; instead we speculate `block` picks on
the best candidates and verify them all with one matrix product (see `greedy_graphcut`). The
picks are exactly those of the plain greedy.

Sampling. Bin b gives k // bins samples, the first k % bins bins one more (never more than the
bin holds, since the bin sizes follow the same rule with n >= k), drawn uniformly without
replacement with one generator seeded by `ctx.seed`; the result lists bin 0's draws first.
"""
from __future__ import annotations

import logging
import math
import time

import torch
from tqdm.auto import tqdm

from codeselect.errors import UserError
from codeselect.selectors.base import SelectionContext, Selector, pool_embeddings, resolve_device

log = logging.getLogger(__name__)


def split_evenly(total: int, parts: int) -> list[int]:
    """`total // parts` per part, the first `total % parts` parts one more."""
    return [total // parts + (1 if b < total % parts else 0) for b in range(parts)]


def greedy_graphcut(x: torch.Tensor, m: int, lam: float = 1.0, *, block: int = 256,
                    stats: dict | None = None) -> tuple[list[int], list[float]]:
    """Greedy GraphCut on the rows of `x` (the ground set): m picks (row indices) and their gains.

    Speculate, then verify: the greedy runs `block` picks ahead on the best-gain candidate rows
    alone; one matrix product (all rows x the block's picks) then gives every row's exact gain
    before each of those picks, and we keep the speculated picks up to the first one that is not
    the argmax over all available rows, plus that step's true argmax. The result is exactly the
    plain greedy's; the work is one BLAS-3 product per block instead of one pass per pick.
    """
    n = x.shape[0]
    w = lam * x.sum(dim=0)
    available = torch.ones(n, dtype=torch.bool, device=x.device)
    picks: list[int] = []
    gains_at_pick: list[float] = []
    size = min(n, 4 * block)
    while len(picks) < m:
        n_avail = n - len(picks)
        size = min(size, n_avail)
        steps = min(block, m - len(picks), size)
        gains = (x @ w).masked_fill_(~available, -math.inf)
        thr = torch.topk(gains, size, sorted=False).values.min()
        cand = torch.nonzero(available & (gains >= thr)).flatten()  # ascending: ties -> lowest index
        xc, gc = x[cand], gains[cand]
        spec: list[int] = []
        for _ in range(steps):  # speculative greedy on the candidates
            j = int(torch.argmax(gc))
            spec.append(int(cand[j]))
            gc -= 2.0 * (xc @ xc[j])
            gc[j] = -math.inf
        spec_t = torch.tensor(spec, dtype=torch.long, device=x.device)
        # before[:, t] = every row's gain before speculated pick t (exact, from one product)
        before = torch.empty((n, steps), dtype=x.dtype, device=x.device)
        before[:, 0] = gains
        if steps > 1:
            sims = torch.cumsum(x @ x[spec_t[:-1]].T, dim=1)
            torch.add(gains[:, None], sims, alpha=-2.0, out=before[:, 1:])
            del sims
        for t, p in enumerate(spec[:-1]):
            before[p, t + 1:] = -math.inf  # a pick leaves the ground of later steps
        best = torch.argmax(before, dim=0)  # first maximum per step: ties -> lowest index
        wrong = torch.nonzero(best != spec_t).flatten()
        keep = steps if wrong.numel() == 0 else int(wrong[0]) + 1
        for t in range(keep):
            p = int(best[t])
            picks.append(p)
            gains_at_pick.append(float(before[p, t]))
            available[p] = False
            w -= 2.0 * x[p]
        if keep < steps:  # an outside row won: widen the candidates
            size *= 2
        if stats is not None:
            stats["blocks"] = stats.get("blocks", 0) + 1
            stats["speculated"] = stats.get("speculated", 0) + steps
    return picks, gains_at_pick


def graphcut_bins(x: torch.Tensor, bins: int = 10, lam: float = 1.0, *, block: int = 256,
                  progress: bool = True, stats: dict | None = None) -> list[torch.Tensor]:
    """Split the rows of `x` into `bins` bins by successive greedy GraphCut (see module doc).

    Returns one ascending index tensor (CPU, int64) per bin; together they partition range(n).
    """
    n = x.shape[0]
    remaining = torch.arange(n, device=x.device)
    out: list[torch.Tensor] = []
    bar = tqdm(total=n, desc="dq bins", disable=not progress, mininterval=1.0)
    for size in split_evenly(n, bins):
        t0 = time.perf_counter()
        if size >= remaining.numel():  # the last bin: everything left
            chosen = remaining
            remaining = remaining[:0]
        else:
            local, _ = greedy_graphcut(x[remaining], size, lam, block=block, stats=stats)
            mask = torch.zeros(remaining.numel(), dtype=torch.bool, device=x.device)
            mask[torch.tensor(local, dtype=torch.long, device=x.device)] = True
            chosen, remaining = remaining[mask], remaining[~mask]
        out.append(chosen.cpu())
        bar.update(size)
        if stats is not None:
            stats.setdefault("bin_seconds", []).append(round(time.perf_counter() - t0, 3))
    bar.close()
    return out


def sample_bins(bins: list[torch.Tensor], k: int, seed: int) -> list[int]:
    """A seeded uniform draw of an equal share of k (remainder to the first bins) from every bin."""
    gen = torch.Generator().manual_seed(int(seed))
    picks: list[int] = []
    for members, q in zip(bins, split_evenly(k, len(bins))):
        if q > members.numel():
            raise ValueError(f"bin of {members.numel()} cannot give {q} samples")
        picks.extend(members[torch.randperm(members.numel(), generator=gen)[:q]].tolist())
    return picks


class DQSelector(Selector):
    """Dataset quantisation on the (unit) embeddings; bins by GraphCut, then seeded sampling."""

    def __init__(self, name: str = "dq", bins: int = 10, lam: float = 1.0, device: str | None = None,
                 dtype: str = "float64", block: int = 256, progress: bool = True) -> None:
        if int(bins) < 1:
            raise UserError(f"must be a positive integer, got {bins}", key="selector.bins")
        if dtype not in ("float32", "float64"):
            raise UserError(f"must be float32 or float64, got {dtype!r}", key="selector.dtype")
        self.name, self.bins, self.lam, self.device, self.dtype = name, int(bins), float(lam), device, dtype
        if int(block) < 1:
            raise UserError(f"must be positive, got {block}", key="selector.block")
        self.block, self.progress = int(block), progress

    def select(self, ctx: SelectionContext, k: int) -> list[int]:
        emb = pool_embeddings(ctx, k, "dq")
        device = resolve_device(self.device) if self.device else ctx.device
        x = emb.to(device=device, dtype=getattr(torch, self.dtype))
        stats: dict = {}
        bins = graphcut_bins(x, self.bins, self.lam, block=self.block, progress=self.progress,
                             stats=stats)
        picks = sample_bins(bins, k, ctx.seed)
        ctx.info["dq"] = {"bins": self.bins, "lam": self.lam, "device": str(device), "dtype": self.dtype,
                          "bin_sizes": [int(b.numel()) for b in bins], "quotas": split_evenly(k, self.bins),
                          **stats}
        log.info("dq: %d bins of %s, %d picks", self.bins, ctx.info["dq"]["bin_sizes"], k)
        return picks
