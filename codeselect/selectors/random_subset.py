"""random: a seeded uniform sample without replacement, drawn as the reference draws it.

SYSTEM.md section 4: `random.seed(seed); random.sample(records, k)` over the records in pool order,
output in draw order. `random.sample` picks positions from the population's length alone, so a
private `random.Random(seed).sample(range(n), k)` gives the same positions without touching the
global RNG state.
"""
from __future__ import annotations

import random

from codeselect.selectors.base import SelectionContext, Selector, check_k


class RandomSelector(Selector):
    """k distinct pool indices, the reference's draw for `ctx.seed` (42 by default), in draw order."""

    def __init__(self, name: str = "random") -> None:
        self.name = name

    def select(self, ctx: SelectionContext, k: int) -> list[int]:
        check_k(k, ctx.n)
        ctx.info["random"] = {"seed": int(ctx.seed)}
        return random.Random(int(ctx.seed)).sample(range(ctx.n), k)
