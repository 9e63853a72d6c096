"""SFT data: the paper's prompt format through the chat template, response-only loss, `pad` or `pack`.

Every sample becomes `input_ids` and `labels` (-100 on the system line and instruction, so only the
response and its EOS carry loss), truncated to `max_length`. Two ways to batch them:

- `pad`: one sample per row, right-padded to the longest row of the batch, with an attention mask;
- `pack`: samples are packed greedily (best-fit decreasing) into rows of at most `max_length` tokens.
  Packed samples stay isolated: position ids restart at 0 for every sample and there is no 2-D
  attention mask, which makes transformers build a block-diagonal causal mask (SDPA/eager) or
  use varlen kernels (flash-attention) from the position ids. This holds only with
  `use_cache=False`, which the SFT module always passes. The first token of every sample carries
  no label, so no token is ever trained to predict the next sample.
"""
from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import lightning.pytorch as pl
import torch

from codeselect.errors import UserError

log = logging.getLogger(__name__)

IGNORE = -100
MODES = ("pack", "pad")


@dataclass
class Encoded:
    """Tokenised samples and what truncation did to them."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    truncated: int = 0
    dropped: int = 0  # samples whose prompt alone fills max_length: no response token to learn


def apply_paper_template(tokenizer: Any, chat_template: str = "paper") -> Any:
    """`paper`: force the paper's template; `tokenizer`: keep the tokenizer's own (paper's if none)."""
    from codeselect.prompts import CHAT_TEMPLATE, ensure_chat_template

    if chat_template == "paper":
        tokenizer.chat_template = CHAT_TEMPLATE
    elif chat_template == "tokenizer":
        ensure_chat_template(tokenizer)
    else:
        raise UserError(f"must be 'paper' or 'tokenizer', got {chat_template!r}", key="data.chat_template")
    return tokenizer


def render(tokenizer: Any, instruction: str, response: str) -> tuple[str, str]:
    """(prompt, completion) texts: prompt + completion is the full chat-templated sample."""
    from codeselect.prompts import messages

    full = tokenizer.apply_chat_template(messages(instruction, response), tokenize=False)
    prompt = tokenizer.apply_chat_template(messages(instruction), tokenize=False,
                                           add_generation_prompt=True)
    if not full.startswith(prompt):
        raise UserError("the chat template's generation prompt is not a prefix of the full sample; "
                        "use data.chat_template=paper", key="data.chat_template")
    return prompt, full[len(prompt):]


def encode(tokenizer: Any, records: Sequence[dict[str, Any]], max_length: int) -> Encoded:
    """Tokenise records (prompt and completion separately, as at generation time) with loss masks."""
    if max_length < 2:
        raise UserError(f"must be at least 2, got {max_length}", key="data.max_length")
    pairs = [render(tokenizer, r["instruction"], r["response"]) for r in records]
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
    completions = tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
    out = Encoded([], [])
    for p, c in zip(prompts, completions):
        ids = (list(p) + list(c))
        if len(ids) > max_length:
            out.truncated += 1
            ids = ids[:max_length]
        n_prompt = max(len(p), 1)  # the first token never carries loss (it is what isolates packs)
        if n_prompt >= len(ids):
            out.dropped += 1
            continue
        out.input_ids.append(ids)
        out.labels.append([IGNORE] * n_prompt + ids[n_prompt:])
    if not out.input_ids:
        raise UserError(f"no sample has a response token within max_length={max_length}",
                        key="data.max_length")
    return out


def pack_best_fit(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing bin packing: sample indices grouped into rows of at most `capacity` tokens.

    Deterministic (ties broken by index); O(n log n) searches over the sorted free capacities.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    free: list[tuple[int, int]] = []  # (remaining capacity, row id), sorted
    rows: list[list[int]] = []
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"sample {i} has {n} tokens > capacity {capacity}")
        pos = bisect.bisect_left(free, (n, -1))
        if pos < len(free):
            room, row = free.pop(pos)
        else:
            room, row = capacity, len(rows)
            rows.append([])
        rows[row].append(i)
        if room - n > 0:
            bisect.insort(free, (room - n, row))
    return rows


class RowDataset(torch.utils.data.Dataset):
    """One item per training row: the sample indices it holds (one in `pad` mode)."""

    def __init__(self, rows: list[list[int]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> list[int]:
        return self.rows[i]


class Collator:
    """Turns a batch of rows into model inputs (`n_real` counts the non-padding tokens)."""

    def __init__(self, encoded: Encoded, mode: str, pad_id: int, pad_to_multiple_of: int = 1) -> None:
        self.enc, self.mode, self.pad_id, self.multiple = encoded, mode, pad_id, max(1, pad_to_multiple_of)

    def __call__(self, batch: list[list[int]]) -> dict[str, torch.Tensor]:
        rows_ids, rows_labels, rows_pos = [], [], []
        for row in batch:
            ids, labels, pos = [], [], []
            for i in row:
                ids += self.enc.input_ids[i]
                labels += self.enc.labels[i]
                pos += range(len(self.enc.input_ids[i]))
            rows_ids.append(ids), rows_labels.append(labels), rows_pos.append(pos)
        width = max(len(r) for r in rows_ids)
        width = -(-width // self.multiple) * self.multiple
        n = len(batch)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        labels = torch.full((n, width), IGNORE, dtype=torch.long)
        real = torch.zeros((n, width), dtype=torch.long)
        # Padding positions count up from 0 again: a separate dummy "sample" nobody attends to.
        position_ids = torch.arange(width, dtype=torch.long).repeat(n, 1)
        for b, (ids, lab, pos) in enumerate(zip(rows_ids, rows_labels, rows_pos)):
            k = len(ids)
            input_ids[b, :k] = torch.tensor(ids)
            labels[b, :k] = torch.tensor(lab)
            real[b, :k] = 1
            position_ids[b, :k] = torch.tensor(pos)
            position_ids[b, k:] = torch.arange(width - k)
        out = {"input_ids": input_ids, "labels": labels, "n_real": real.sum()}
        if self.mode == "pack":
            out["position_ids"] = position_ids
        else:
            out["attention_mask"] = real
        return out


def plan_rows(encoded: Encoded, mode: str, max_length: int) -> list[list[int]]:
    """Rows of sample indices: one sample each (`pad`), or best-fit packs (`pack`)."""
    if mode == "pad":
        return [[i] for i in range(len(encoded.input_ids))]
    if mode == "pack":
        return pack_best_fit([len(x) for x in encoded.input_ids], max_length)
    raise UserError(f"must be one of {', '.join(MODES)}, got {mode!r}", key="data.mode")


def non_pad_fraction(encoded: Encoded, rows: list[list[int]], batch_size: int,
                     order: Sequence[int] | None = None) -> float:
    """Fraction of real tokens in the padded batches built from `rows` (in `order`, batch by batch)."""
    order = list(order) if order is not None else list(range(len(rows)))
    lengths = [sum(len(encoded.input_ids[i]) for i in rows[r]) for r in order]
    real = slots = 0
    for s in range(0, len(lengths), batch_size):
        chunk = lengths[s:s + batch_size]
        real += sum(chunk)
        slots += max(chunk) * len(chunk)
    return real / slots if slots else 0.0


class SFTDataModule(pl.LightningDataModule):
    """LightningDataModule over tokenised records; rows are shuffled with `seed` every epoch."""

    def __init__(self, records: Sequence[dict[str, Any]], tokenizer: Any, *, max_length: int,
                 mode: str = "pack", batch_size: int = 1, seed: int = 42, num_workers: int = 0,
                 pad_to_multiple_of: int = 1) -> None:
        super().__init__()
        if mode not in MODES:
            raise UserError(f"must be one of {', '.join(MODES)}, got {mode!r}", key="data.mode")
        if batch_size < 1:
            raise UserError(f"must be positive, got {batch_size}", key="batch_size")
        self.tokenizer, self.mode, self.max_length = tokenizer, mode, int(max_length)
        self.batch_size, self.seed, self.num_workers = int(batch_size), int(seed), int(num_workers)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.encoded = encode(tokenizer, records, self.max_length)
        self.rows = plan_rows(self.encoded, mode, self.max_length)
        self.collator = Collator(self.encoded, mode, pad_id, pad_to_multiple_of)
        log.info("%d samples (%d truncated, %d dropped) -> %d %s rows of <= %d tokens",
                 len(self.encoded.input_ids), self.encoded.truncated, self.encoded.dropped,
                 len(self.rows), mode, self.max_length)

    def stats(self) -> dict[str, Any]:
        """Counts for train.json; the non-padding fraction of the planned first epoch."""
        gen = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(self.rows), generator=gen).tolist()
        return {"samples": len(self.encoded.input_ids), "truncated": self.encoded.truncated,
                "dropped": self.encoded.dropped, "rows": len(self.rows), "mode": self.mode,
                "tokens_per_epoch": sum(len(x) for x in self.encoded.input_ids),
                "planned_non_pad_fraction": round(non_pad_fraction(self.encoded, self.rows,
                                                                   self.batch_size, order), 4)}

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        gen = torch.Generator().manual_seed(self.seed)
        return torch.utils.data.DataLoader(RowDataset(self.rows), batch_size=self.batch_size,
                                           shuffle=True, generator=gen, collate_fn=self.collator,
                                           num_workers=self.num_workers, drop_last=False)
