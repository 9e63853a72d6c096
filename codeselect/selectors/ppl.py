"""PPL baseline: keep the k samples with the highest PPL(response | instruction).

The perplexity of the response given the instruction (paper's prompt format, instruction masked out
of the loss) under the scorer LM, the base model to be fine-tuned (definitions:
codeselect.scoring.encoding). A failed or NaN score is 0. Highest first; ties keep pool order. Each
selected record gains the key `ppl` with its score, as in the reference.
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
        from codeselect.scoring import compute_scores, read_scores_file, single_scorer, summarize, zero_failed

        if self.scores_path:
            ppl = read_scores_file(self.scores_path, ["ppl"], ctx.records)["ppl"]
            ctx.info["scores_path"] = str(self.scores_path)
        else:
            info: dict[str, Any] = {}
            ppl = compute_scores(ctx.records, ["ppl"], single_scorer(self.scorer),
                                 cache_dir=ctx.cache_dir, pool_hash=ctx.pool_hash,
                                 device=ctx.device, progress=self.progress, info=info)["ppl"]
            ctx.info.update(info)
        ppl = zero_failed(ppl)
        ctx.info["ppl"] = summarize(ppl)
        ctx.record_scores["ppl"] = ppl
        return ppl
