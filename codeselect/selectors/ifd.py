"""IFD baseline: keep the k samples with the highest instruction-following difficulty.

IFD = PPL(response | instruction) / PPL(response), both from the scorer LM (the base model to be
fine-tuned), the conditional one in the paper's prompt format with the instruction masked out of the
loss (definitions: codeselect.scoring.encoding). A failed or NaN score is 0, as in the reference.
Highest first; ties keep pool order. Each selected record gains the key `ifd` with its score.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from codeselect.selectors.base import SelectionContext
from codeselect.selectors.top_score import TopScoreSelector


class IFDSelector(TopScoreSelector):
    """Top-k by IFD. `scores_path` (JSONL with `id` and `ifd`) skips the LM."""

    name = "ifd"

    def scores(self, ctx: SelectionContext) -> np.ndarray:
        """IFD per pool sample, from the scores file or the scorer LM."""
        from codeselect.scoring import (compute_scores, ifd_scores, read_scores_file, single_scorer,
                                        summarize, zero_failed)

        if self.scores_path:
            ifd = zero_failed(read_scores_file(self.scores_path, ["ifd"], ctx.records)["ifd"])
            ctx.info["scores_path"] = str(self.scores_path)
        else:
            info: dict[str, Any] = {}
            s = compute_scores(ctx.records, ["ppl", "ppl_alone"], single_scorer(self.scorer),
                               cache_dir=ctx.cache_dir, pool_hash=ctx.pool_hash,
                               device=ctx.device, progress=self.progress, info=info)
            ifd = ifd_scores(s["ppl"], s["ppl_alone"])
            ctx.info.update(info)
            ctx.info["ppl"], ctx.info["ppl_alone"] = summarize(s["ppl"]), summarize(s["ppl_alone"])
        ctx.info["ifd"] = summarize(ifd)
        ctx.record_scores["ifd"] = ifd
        return ifd
