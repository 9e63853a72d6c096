"""dq (dataset quantisation): GraphCut bins, then a seeded equal share of k from every bin.

Bins. The pool is split into `bins` bins one after another. Bin b is built on its ground set R
(every sample not yet in an earlier bin) by greedy GraphCut maximisation: starting from S = {},
repeatedly add the candidate i in R \\ S with the largest gain

    gain(i | S) = lam * sum_{j in R} <f_j, f_i>  -  2 * sum_{s in S} <f_s, f_i>

until the bin holds its size. Our reading of the reference ("sum_all"): the first sum runs over
the bin's whole ground set R (the samples still unassigned when the bin starts, including i
itself and the bin's own picks), fixed while the bin fills; this is what the dataset-quantisation
code computes (column sums of the similarity matrix of the remaining pool). Ties go to the lowest
pool index; a bin is stored in ascending pool order. Every bin has the same budget n // bins (as
the reference): the n % bins samples left over after the last bin belong to no bin and are never
selected.

Speed and memory. With dot-product similarity the gain is linear in f_i: gain = <w, f_i> with
w = lam * sum_R f_j - 2 * sum_S f_s, so no n x n matrix is needed (memory O(n d + n block)).
Each pick would still cost one memory-bound pass over R; instead we speculate `block` picks on
the best candidates and verify them all with one matrix product (see `greedy_graphcut`). The
picks are exactly those of the plain greedy.

Sampling, as the reference (SYSTEM.md section 4): `random.seed(seed)` once, then for each bin in
order a quota q_b = k // bins (+1 for the first k % bins bins) drawn by `random.sample(bin, q_b)`,
or the whole bin in pool order, drawing nothing, when it holds no more than q_b. Reproduced by a
private `random.Random(seed)` (`sample` picks positions from the length alone), output bin by bin
in draw order. A k the bins cannot supply (more than bins * (n // bins)) is a user error.
"""
from __future__ import annotations

import logging
import math
import random
import time

import torch
from tqdm.auto import tqdm

from codeselect.errors import UserError
from codeselect.selectors.base import SelectionContext, Selector, pool_embeddings, resolve_device

log = logging.getLogger(__name__)


def split_evenly(total: int, parts: int) -> list[int]:
    """`total // parts` per part, the first `total % parts` parts one more."""
    return [total // parts + (1 if b < total % parts else 0) for b in range(parts)]


def max_selectable(n: int, bins: int) -> int:
    """The largest k the bins can supply: every bin holds n // bins samples."""
    return bins * (n // bins)


def tie_tolerance(x: torch.Tensor) -> float:
    """Gains closer than this are ties (-> lowest index): a bound on the rounding of a sum of n
    similarities. Exact duplicates tie exactly in exact arithmetic, but the float sums that give
    their gains may differ in the last bit; distinct samples are never this close in practice."""
    n = x.shape[0]
    return 4.0 * n * torch.finfo(x.dtype).eps * float((x * x).sum(dim=1).max())


def first_max(values: torch.Tensor, tol: float, dim: int = 0) -> torch.Tensor:
    """Index of the first entry within `tol` of the maximum along `dim` (ties -> lowest index)."""
    top = values.max(dim=dim, keepdim=True).values
    return (values >= top - tol).to(torch.uint8).argmax(dim=dim)


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
    tol = tie_tolerance(x)
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
            j = int(first_max(gc, tol))
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
        best = first_max(before, tol, dim=0)  # first maximum per step: ties -> lowest index
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
    """Bins of the rows of `x` by successive greedy GraphCut (see module doc), n // bins rows each.

    Returns one ascending index tensor (CPU, int64) per bin; the n % bins rows left after the
    last bin are in none.
    """
    n = x.shape[0]
    size = n // bins
    remaining = torch.arange(n, device=x.device)
    out: list[torch.Tensor] = []
    bar = tqdm(total=size * bins, desc="dq bins", disable=not progress, mininterval=1.0)
    for _ in range(bins):
        t0 = time.perf_counter()
        if size == remaining.numel():  # nothing to choose: the bin is everything left
            chosen, remaining = remaining, remaining[:0]
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
    """The reference's draw: one `random.Random(seed)`; each bin in order gives its quota by
    `sample` (positions within the bin, in draw order), or all of itself when it holds no more."""
    rng = random.Random(int(seed))
    picks: list[int] = []
    for members, q in zip(bins, split_evenly(k, len(bins))):
        ids = members.tolist()
        if len(ids) > q:
            picks.extend(ids[i] for i in rng.sample(range(len(ids)), q))
        else:
            picks.extend(ids)
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
        most = max_selectable(emb.shape[0], self.bins)
        if k > most:
            raise UserError(f"dq's {self.bins} bins of {emb.shape[0] // self.bins} samples each can supply "
                            f"at most {most} of the {emb.shape[0]} samples, got {k}", key="sample_num")
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
