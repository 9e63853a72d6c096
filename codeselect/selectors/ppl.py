"""PPL baseline: keep the k samples with the highest PPL(response | instruction).

The perplexity of the response given the instruction (paper's prompt format, instruction masked out
of the loss) under the scorer LM, the base model to be fine-tuned. Highest first; ties keep pool
order; samples with nothing to score (NaN) rank last.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from codeselect.selectors.base import SelectionContext
from codeselect.selectors.top_score import TopScoreSelector


class PPLSelector(TopScoreSelector):
    """Top-k by conditional perplexity. `scores_path` (JSONL with `id` and `ppl`) skips the LM."""

    name = "ppl"

    def scores(self, ctx: SelectionContext) -> np.ndarray:
        """PPL(response | instruction) per pool sample, from the scores file or the scorer LM."""
        from codeselect.scoring import compute_scores, read_scores_file, single_scorer, summarize

        if self.scores_path:
            ppl = read_scores_file(self.scores_path, ["ppl"], ctx.records)["ppl"]
            ctx.info["scores_path"] = str(self.scores_path)
        else:
            info: dict[str, Any] = {}
            ppl = compute_scores(ctx.records, ["ppl"], single_scorer(self.scorer),
                                 cache_dir=ctx.cache_dir, pool_hash=ctx.pool_hash,
                                 device=ctx.device, progress=self.progress, info=info)["ppl"]
            ctx.info.update(info)
        ctx.info["ppl"] = summarize(ppl)
        return ppl
