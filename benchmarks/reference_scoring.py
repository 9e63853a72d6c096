"""A plain re-implementation of the reference's LM scoring loop, for side-by-side timing.

Written from SYSTEM.md section 4, the way the reference computes it: one sample at a time,
tokenised on the fly, `model(input_ids, labels=labels)` with the instruction tokens set to -100 for
PPL(response | instruction), again on the response alone for PPL(response), and one forward pass
per prompt for DEITA's ratings. Not used by the library.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from codeselect.prompts import prompt_text
from codeselect.scoring.encoding import _TEMPLATE_TAILS, deita_prompt


def _ids(tok: Any, text: str) -> list[int]:
    ids = tok(text, add_special_tokens=True)["input_ids"]
    if tok.bos_token_id is not None and (not ids or ids[0] != tok.bos_token_id):
        ids = [tok.bos_token_id] + ids
    return ids


@torch.no_grad()
def _ppl(model: Any, ids: list[int], start: int) -> float:
    """exp(mean NLL) of tokens start.. given the ones before; NaN when there is nothing to score."""
    if start >= len(ids) or start < 1:
        return math.nan
    input_ids = torch.tensor([ids])
    labels = input_ids.clone()
    labels[0, :start] = -100
    return math.exp(float(model(input_ids=input_ids, labels=labels).loss))


def reference_perplexities(records: Sequence[dict[str, Any]], model: Any, tok: Any,
                           max_length: int) -> dict[str, list[float]]:
    """PPL(response | instruction) and PPL(response) per record, one forward pass per sample each."""
    ppl, alone = [], []
    for rec in records:
        prompt = prompt_text(rec["instruction"])
        full = _ids(tok, prompt + rec["response"])[:max_length]
        ppl.append(_ppl(model, full, len(_ids(tok, prompt))))
        alone.append(_ppl(model, _ids(tok, rec["response"])[:max_length], 1))
    return {"ppl": ppl, "ppl_alone": alone}


@torch.no_grad()
def reference_ratings(records: Sequence[dict[str, Any]], kind: str, model: Any, tok: Any,
                      rating_ids: Sequence[int], max_length: int) -> list[float]:
    """DEITA's expected rating per record (`complexity` or `quality`), one forward pass per sample:
    the softmax over the six rating tokens' logits at the last position, weighted by 1..6. A prompt
    over `max_length` keeps its `##Complexity: ` / `##Quality: ` tail, as the library does."""
    tail = tok(_TEMPLATE_TAILS[kind], add_special_tokens=False)["input_ids"]
    out = []
    for rec in records:
        ids = _ids(tok, deita_prompt(kind, rec))
        if len(ids) > max_length:
            ids = ids[:max_length - len(tail)] + tail
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1, list(rating_ids)]
        probs = torch.softmax(logits.double(), dim=-1)
        out.append(float((probs * torch.arange(1, 7, dtype=torch.float64)).sum()))
    return out
