"""random: a seeded uniform sample without replacement (the paper's reference uses seed 42)."""
from __future__ import annotations

import torch

from codeselect.selectors.base import SelectionContext, Selector, check_k


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
