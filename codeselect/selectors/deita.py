"""DEITA baseline: complexity x quality scores, then the reference's blocked diversity filter.

Each sample gets complexity (instruction only) and quality (instruction + response) from DEITA's
scorer LMs: the expected rating 1..6 under a softmax over the six rating tokens' next-token logits.
Samples are sorted by complexity x quality, highest first (stable: ties in pool order).

The filter is the reference's (SYSTEM.md section 4): the first candidate is kept; the rest are
taken in blocks of `block_size` (10,000) in score order, and a candidate is dropped if its cosine
similarity exceeds `threshold` (0.9) to any sample kept from earlier blocks, or to ANY earlier
candidate of its own block, kept or not. The first k survivors in score order are the selection;
if fewer than k survive the whole pool, the best-scored dropped ones fill the rest. Survivors of a
block never change once it is done, so the walk stops as soon as k have survived (same result).
Cosines as the reference computes them: rows divided by their norms, float32 products.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from codeselect.selectors.base import SelectionContext, Selector, check_k


def _any_above(a: torch.Tensor, b: torch.Tensor, threshold: float, chunk: int = 8192) -> torch.Tensor:
    """For each row of `a`: is its product with any row of `b` above `threshold` (b chunked)."""
    hit = torch.zeros(a.shape[0], dtype=torch.bool)
    for lo in range(0, b.shape[0], chunk):
        hit |= (a @ b[lo:lo + chunk].T > threshold).any(dim=1)
    return hit


def blocked_filter(order: np.ndarray, embeddings: np.ndarray, k: int, threshold: float,
                   block_size: int = 10000) -> tuple[list[int], int]:
    """The reference's blocked diversity filter over `order` (pool indices, best first).

    Returns (the selection: first k survivors, then the best dropped ones if short; how many of the
    selection are survivors)."""
    x = torch.from_numpy(np.ascontiguousarray(embeddings[order], dtype=np.float32))
    x = x / x.norm(dim=1, keepdim=True)
    kept = [0]
    for start in range(1, len(order), block_size):
        if len(kept) >= k:
            break
        cur = x[start:start + block_size]
        near_kept = _any_above(cur, x[kept], threshold)
        near_own = torch.zeros(cur.shape[0], dtype=torch.bool)
        for lo in range(0, cur.shape[0], 2048):  # earlier candidates of the block, kept or not
            rows = cur[lo:lo + 2048]
            sims = (rows @ cur[:lo + rows.shape[0]].T).tril_(diagonal=lo - 1)  # only l < j
            near_own[lo:lo + rows.shape[0]] = (sims > threshold).any(dim=1)
        kept.extend((start + torch.nonzero(~(near_kept | near_own)).flatten()).tolist())
    chosen = kept[:k]
    if len(chosen) < k:
        survived = set(kept)
        chosen += [p for p in range(len(order)) if p not in survived][:k - len(chosen)]
    return [int(order[p]) for p in chosen], min(len(kept), k)


class DeitaSelector(Selector):
    """DEITA score-first, diversity-aware selection. `scores_path` (JSONL with `id`, `complexity`,
    `quality`) skips the scorer LMs."""

    name = "deita"

    def __init__(self, scorer: Any = None, scores_path: str | None = None, threshold: float = 0.9,
                 block_size: int = 10000, name: str = "deita", progress: bool = True) -> None:
        from codeselect.errors import UserError

        if int(block_size) < 1:
            raise UserError(f"must be a positive integer, got {block_size}", key="selector.block_size")
        self.scorer, self.scores_path, self.threshold = scorer, scores_path, float(threshold)
        self.block_size, self.name, self.progress = int(block_size), name, progress

    def scores(self, ctx: SelectionContext) -> tuple[np.ndarray, np.ndarray]:
        """(complexity, quality) per pool sample, from the scores file or the scorer LMs."""
        from codeselect.scoring import compute_scores, read_scores_file, split_scorers, summarize

        if self.scores_path:
            s = read_scores_file(self.scores_path, ["complexity", "quality"], ctx.records)
            ctx.info["scores_path"] = str(self.scores_path)
        else:
            comp_cfg, qual_cfg = split_scorers(self.scorer)
            kw = dict(cache_dir=ctx.cache_dir, pool_hash=ctx.pool_hash, device=ctx.device,
                      progress=self.progress)
            if comp_cfg == qual_cfg:  # one model rates both: one pass, one load
                info: dict[str, Any] = {}
                s = compute_scores(ctx.records, ["complexity", "quality"], comp_cfg, info=info, **kw)
                ctx.info["scoring"] = info
            else:
                ci: dict[str, Any] = {}
                qi: dict[str, Any] = {}
                s = {"complexity": compute_scores(ctx.records, ["complexity"], comp_cfg, info=ci, **kw)["complexity"],
                     "quality": compute_scores(ctx.records, ["quality"], qual_cfg, info=qi, **kw)["quality"]}
                ctx.info["scoring"] = {"complexity": ci, "quality": qi}
        ctx.info["complexity"], ctx.info["quality"] = summarize(s["complexity"]), summarize(s["quality"])
        ctx.report_scores.update(complexity=s["complexity"], quality=s["quality"])
        return s["complexity"], s["quality"]

    def select(self, ctx: SelectionContext, k: int) -> list[int]:
        if ctx.embeddings is None:
            raise ValueError("deita needs the pool embeddings")
        check_k(k, ctx.n)
        complexity, quality = self.scores(ctx)
        final = complexity * quality
        order = np.argsort(-final, kind="stable")  # highest first, ties in pool order, NaN last
        emb = ctx.embeddings.detach().float().cpu().numpy()
        chosen, n_kept = blocked_filter(order, emb, k, self.threshold, self.block_size)
        ctx.info.update(threshold=self.threshold, block_size=self.block_size, kept_by_filter=n_kept,
                        filled=k - n_kept)
        return chosen
