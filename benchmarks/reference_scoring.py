"""A plain re-implementation of the reference's LM scoring loop, for side-by-side timing.

Written from SYSTEM.md section 4, the way the reference computes it: one sample at a time,
tokenised on the fly. PPL(response | instruction): the paper's prompt (BOS text included) + the
response + EOS encoded as one string without special tokens, cut at max_length, the prompt's own
token count masked with -100, `model(input_ids, labels=labels)`; PPL(response): response + EOS
without special tokens, cut at max_length - L_p + 1, `model(ids, labels=ids)`; a failure scores 0.
DEITA: one forward pass per prompt. Not used by the library.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from codeselect.scoring.encoding import _TEMPLATE_TAILS, deita_prompt

SYSTEM_PROMPT = "You are a helpful programming assistant."


def _ids(tok: Any, text: str) -> list[int]:
    ids = tok(text, add_special_tokens=True)["input_ids"]
    if tok.bos_token_id is not None and (not ids or ids[0] != tok.bos_token_id):
        ids = [tok.bos_token_id] + ids
    return ids


@torch.no_grad()
def _loss_ppl(model: Any, ids: list[int], n_masked: int) -> float:
    """exp(HF's mean label-shifted loss) with the first `n_masked` labels ignored; 0 on failure."""
    try:
        input_ids = torch.tensor([ids])
        labels = input_ids.clone()
        labels[0, :n_masked] = -100
        return math.exp(float(model(input_ids=input_ids, labels=labels).loss))
    except Exception:  # the reference: an empty sequence or any error scores 0
        return 0.0


def reference_perplexities(records: Sequence[dict[str, Any]], model: Any, tok: Any,
                           max_length: int) -> dict[str, list[float]]:
    """PPL(response | instruction) and PPL(response) per record, one forward pass per sample each."""
    ppl, alone = [], []
    bos, eos = tok.bos_token or "", tok.eos_token or ""
    for rec in records:
        prompt = f"{bos}{SYSTEM_PROMPT}\n### Instruction:\n{rec['instruction']}\n### Response:\n"
        n_prompt = len(tok.encode(prompt, add_special_tokens=False)[:max_length])
        response = rec["response"] + eos
        full = tok.encode(prompt + response, add_special_tokens=False)[:max_length]
        ppl.append(_loss_ppl(model, full, n_prompt))
        resp = tok.encode(response, add_special_tokens=False)[:max(0, max_length - n_prompt + 1)]
        alone.append(_loss_ppl(model, resp, 0))
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
