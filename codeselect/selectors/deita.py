"""DEITA baseline: complexity x quality scores, walked best first through a cosine diversity filter.

Each sample gets complexity (instruction only) and quality (instruction + response) from DEITA's
scorer LMs: the expected rating 1..6 under a softmax over the six rating tokens' next-token logits.
Samples are walked by complexity x quality, highest first (ties: lower index first). A sample is kept
unless its cosine similarity to an already kept one exceeds `threshold` (0.9); the walk stops at k.
If fewer than k survive, the best skipped samples (in score order) fill the rest.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from codeselect.selectors.base import SelectionContext, Selector


def diversity_filter(order: np.ndarray, embeddings: np.ndarray, k: int, threshold: float,
                     block: int = 512) -> tuple[list[int], int]:
    """Walk `order`; keep an index unless its similarity to a kept one is > threshold; fill up to k
    with the skipped ones in walk order. Returns (selection, how many the filter itself kept).

    Candidates are taken in blocks: one matrix product against the kept set and one within the
    block, then an exact sequential pass over the block, so the result equals the one-by-one walk.
    """
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    kept: list[int] = []
    kept_emb = np.empty((k, emb.shape[1]), dtype=np.float32)
    skipped: list[int] = []
    pos = 0
    while len(kept) < k and pos < len(order):
        cand = order[pos:pos + block]
        pos += len(cand)
        e = emb[cand]
        near_kept = (e @ kept_emb[:len(kept)].T > threshold).any(1) if kept else np.zeros(len(cand), bool)
        inner = e @ e.T > threshold
        accepted: list[int] = []  # positions within the block
        for j, idx in enumerate(cand):
            if len(kept) == k:
                break
            if near_kept[j] or (accepted and inner[j, accepted].any()):
                skipped.append(int(idx))
                continue
            accepted.append(j)
            kept_emb[len(kept)] = e[j]
            kept.append(int(idx))
    n_kept = len(kept)
    return kept + skipped[:k - n_kept], n_kept


class DeitaSelector(Selector):
    """DEITA score-first, diversity-aware selection. `scores_path` (JSONL with `id`, `complexity`,
    `quality`) skips the scorer LMs."""

    name = "deita"

    def __init__(self, scorer: Any = None, scores_path: str | None = None, threshold: float = 0.9,
                 name: str = "deita", progress: bool = True) -> None:
        self.scorer, self.scores_path, self.threshold = scorer, scores_path, float(threshold)
        self.name, self.progress = name, progress

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
        return s["complexity"], s["quality"]

    def select(self, ctx: SelectionContext, k: int) -> list[int]:
        if ctx.embeddings is None:
            raise ValueError("deita needs the pool embeddings")
        complexity, quality = self.scores(ctx)
        final = complexity * quality
        order = np.argsort(-final, kind="stable")  # highest first, ties in pool order, NaN last
        emb = ctx.embeddings.detach().float().cpu().numpy()
        chosen, n_kept = diversity_filter(order, emb, k, self.threshold)
        ctx.info.update(threshold=self.threshold, kept_by_filter=n_kept, filled=k - n_kept)
        return chosen
