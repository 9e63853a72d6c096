"""From a batch's hidden states or logits to per-sample scores: masked perplexity and DEITA's expected rating."""
from __future__ import annotations

from typing import Sequence

import torch

RATINGS = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])


def target_pairs(input_ids: torch.Tensor, starts: torch.Tensor,
                 lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the positions whose next token is a target: tokens `starts[b] .. lengths[b]-1`
    of row b, each predicted from the position before it. Right padding."""
    pos = torch.arange(1, input_ids.shape[1], device=input_ids.device)
    target = (pos[None, :] >= starts[:, None]) & (pos[None, :] < lengths[:, None])  # B x (L-1)
    return target.nonzero(as_tuple=True)


def rows_perplexity(nll: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
    """exp(mean NLL) per row from per-target NLLs; a row with no targets gives NaN."""
    total = torch.zeros(batch, dtype=torch.float64, device=nll.device).index_add_(0, rows, nll.double())
    count = torch.bincount(rows, minlength=batch)
    mean = total / count.clamp(min=1)
    return torch.where(count > 0, torch.exp(mean), torch.full_like(mean, float("nan")))


def masked_perplexity(logits: torch.Tensor, input_ids: torch.Tensor, starts: torch.Tensor,
                      lengths: torch.Tensor) -> torch.Tensor:
    """exp(mean NLL of tokens `starts[b] .. lengths[b]-1` of each row), each predicted from the
    position before it. Positions before `starts` (the instruction) and padding are not targets;
    a row with no targets gives NaN. Right padding; logits B x L x V; the loss is taken in fp32."""
    rows, cols = target_pairs(input_ids, starts, lengths)
    picked = logits[rows, cols].float()                # logits at position t-1 predict token t
    nll = torch.nn.functional.cross_entropy(picked, input_ids[rows, cols + 1], reduction="none")
    return rows_perplexity(nll, rows, input_ids.shape[0])


def head_perplexity(hidden: torch.Tensor, head: torch.nn.Module, input_ids: torch.Tensor,
                    starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """`masked_perplexity` from the final hidden states, applying the LM head only at target
    positions (no logits for the instruction or the padding)."""
    rows, cols = target_pairs(input_ids, starts, lengths)
    logits = head(hidden[rows, cols]).float()
    nll = torch.nn.functional.cross_entropy(logits, input_ids[rows, cols + 1], reduction="none")
    return rows_perplexity(nll, rows, input_ids.shape[0])


def expected_rating(last_logits: torch.Tensor, rating_ids: Sequence[int]) -> torch.Tensor:
    """DEITA score: sum_r r * softmax over the six rating tokens' logits (last position), per row."""
    scores = last_logits[..., list(rating_ids)].double()
    probs = torch.softmax(scores, dim=-1)
    return (probs * RATINGS.to(probs)).sum(-1)


def last_position_logits(logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's logits at its last real token (right padding)."""
    return logits[torch.arange(logits.shape[0], device=logits.device), lengths - 1]


def head_rating(hidden: torch.Tensor, head: torch.nn.Linear, lengths: torch.Tensor,
                rating_ids: Sequence[int]) -> torch.Tensor:
    """`expected_rating` from the final hidden states: only the six rating rows of the LM head, only
    at each row's last real token."""
    last = last_position_logits(hidden, lengths)
    ids = torch.tensor(list(rating_ids), device=hidden.device)
    bias = None if head.bias is None else head.bias[ids]
    logits = torch.nn.functional.linear(last, head.weight[ids], bias)
    return expected_rating(logits, range(len(ids)))
