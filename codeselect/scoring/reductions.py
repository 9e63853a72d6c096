"""From a batch's logits to per-sample scores: masked perplexity and DEITA's expected rating."""
from __future__ import annotations

from typing import Sequence

import torch

RATINGS = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])


def masked_perplexity(logits: torch.Tensor, input_ids: torch.Tensor, starts: torch.Tensor,
                      lengths: torch.Tensor) -> torch.Tensor:
    """exp(mean NLL of tokens `starts[b] .. lengths[b]-1` of each row), each predicted from the
    position before it. Positions before `starts` (the instruction) and padding are not targets;
    a row with no targets gives NaN. Right padding; logits B x L x V; the loss is taken in fp32."""
    b, length = input_ids.shape
    pos = torch.arange(1, length, device=input_ids.device)
    target = (pos[None, :] >= starts[:, None]) & (pos[None, :] < lengths[:, None])  # B x (L-1)
    rows, cols = target.nonzero(as_tuple=True)
    picked = logits[rows, cols].float()                # logits at position t-1 predict token t
    nll = torch.nn.functional.cross_entropy(picked, input_ids[rows, cols + 1], reduction="none")
    total = torch.zeros(b, dtype=torch.float64, device=logits.device).index_add_(0, rows, nll.double())
    count = target.sum(1)
    mean = total / count.clamp(min=1)
    return torch.where(count > 0, torch.exp(mean), torch.full_like(mean, float("nan")))


def expected_rating(last_logits: torch.Tensor, rating_ids: Sequence[int]) -> torch.Tensor:
    """DEITA score: sum_r r * softmax over the six rating tokens' logits (last position), per row."""
    scores = last_logits[..., list(rating_ids)].double()
    probs = torch.softmax(scores, dim=-1)
    return (probs * RATINGS.to(probs)).sum(-1)


def last_position_logits(logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's logits at its last real token (right padding)."""
    return logits[torch.arange(logits.shape[0], device=logits.device), lengths - 1]
