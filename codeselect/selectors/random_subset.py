"""random: a seeded uniform sample without replacement (the paper's reference uses seed 42)."""
from __future__ import annotations

import torch

from codeselect.errors import UserError
from codeselect.selectors.base import SelectionContext, Selector


def check_k(k: int, n: int) -> None:
    """Every selector needs 1 <= k <= n (select.py checks earlier; this guards library callers)."""
    if not 1 <= k <= n:
        raise UserError(f"must be in [1, {n}] for a pool of {n} records, got {k}", key="sample_num")


class RandomSelector(Selector):
    """Uniform sample of k distinct indices from `torch.randperm` with a generator seeded by `ctx.seed`.

    The same seed and pool size give the same indices on every machine (torch's CPU generator);
    the exact indices differ from the reference's (another RNG), the distribution is the same.
    """

    needs_embeddings = False

    def __init__(self, name: str = "random") -> None:
        self.name = name

    def select(self, ctx: SelectionContext, k: int) -> list[int]:
        check_k(k, ctx.n)
        gen = torch.Generator().manual_seed(int(ctx.seed))
        picks = torch.randperm(ctx.n, generator=gen)[:k]
        ctx.info["random"] = {"seed": int(ctx.seed)}
        return picks.tolist()
