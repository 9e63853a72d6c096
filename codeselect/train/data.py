"""SFT data: the paper's prompt format through the chat template, response-only loss, micro-batches.

Every sample becomes `input_ids` and `labels` (-100 on the system line and instruction, so only the
response and its EOS carry loss), truncated to `max_length`. The instruction part (up to and including
"### Response:\\n") and the response part (response + EOS) are tokenised separately and concatenated,
as the published training script does.

How samples become micro-batches (`data.batching`, see codeselect.train.batching):

- `samples` (the published recipe): `batch_size` samples per device per micro-batch, in the sampler's
  order; `pack` sorts them by length and packs them greedily into rows of at most `max_length`
  tokens, `pad` puts one sample per row. Optimizer steps and learning rates follow the HF Trainer.
- `best_fit`: the whole selection is packed once (best-fit decreasing) and `batch_size` counts rows:
  the fewest pad tokens and far fewer, fuller optimizer steps.

Packed rows (`data.isolate`): isolated (true) means position ids restart at 0 for every sample and
there is no 2-D attention mask, which makes transformers build a block-diagonal causal mask
(SDPA/eager) or use varlen kernels (flash-attention) from the position ids; this holds only with
`use_cache=False`, which the SFT module always passes. Not isolated (false, the published recipe) is
one causal sequence per row with an attention mask over its padding: packed samples see the ones
before them. Either way the first token of a sample carries no label.
"""
from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import lightning.pytorch as pl
import torch

from codeselect.errors import UserError
from codeselect.train.batching import BATCHINGS, MicroBatch, PlannedBatchSampler, Planner

log = logging.getLogger(__name__)

IGNORE = -100
MODES = ("pack", "pad")


@dataclass
class Encoded:
    """Tokenised samples and what truncation did to them."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    truncated: int = 0
    dropped: int = 0   # samples whose prompt alone fills max_length, left out (keep_empty=False)
    empty: int = 0     # such samples kept: no response token to learn, but they count as samples

    def label_counts(self) -> list[int]:
        return [sum(1 for x in lab if x != IGNORE) for lab in self.labels]


# The published training script gives a Qwen2 tokenizer (which has no BOS) this BOS for the template.
QWEN2_BOS = "<|im_start|>"


def apply_paper_template(tokenizer: Any, chat_template: str = "paper") -> Any:
    """`paper`: force the paper's template; `tokenizer`: keep the tokenizer's own (paper's if none)."""
    from codeselect.prompts import CHAT_TEMPLATE, ensure_chat_template

    if chat_template == "paper":
        tokenizer.chat_template = CHAT_TEMPLATE
        if "Qwen2Tokenizer" in type(tokenizer).__name__:
            tokenizer.bos_token = QWEN2_BOS
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


def encode(tokenizer: Any, records: Sequence[dict[str, Any]], max_length: int, *,
           keep_empty: bool = False) -> Encoded:
    """Tokenise records (prompt and completion separately, as at generation time) with loss masks.

    A sample whose prompt fills `max_length` has no response token left: dropped, or kept
    (`keep_empty`, as the published recipe does: it still counts toward batches and steps)."""
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
        n_prompt = min(max(len(p), 1), len(ids))  # the first token never carries loss
        if n_prompt >= len(ids):
            if not keep_empty:
                out.dropped += 1
                continue
            out.empty += 1
        out.input_ids.append(ids)
        out.labels.append([IGNORE] * n_prompt + ids[n_prompt:])
    if not any(x != IGNORE for lab in out.labels for x in lab):
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


class Collator:
    """Turns a micro-batch (rows of sample indices) into model inputs.

    Adds `n_real` (non-padding tokens) and, for a planned micro-batch, `norm` and `step` (the loss
    denominator and whether the optimizer steps after it)."""

    def __init__(self, encoded: Encoded, pad_id: int, *, isolate: bool = True,
                 pad_to_multiple_of: int = 1) -> None:
        self.enc, self.pad_id, self.isolate = encoded, pad_id, bool(isolate)
        self.multiple = max(1, pad_to_multiple_of)

    def __call__(self, batch: list[MicroBatch] | list[list[int]]) -> dict[str, Any]:
        meta = batch[0] if len(batch) == 1 and isinstance(batch[0], MicroBatch) else None
        rows = meta.rows if meta is not None else batch
        rows_ids, rows_labels, rows_pos = [], [], []
        for row in rows:
            ids, labels, pos = [], [], []
            for i in row:
                ids += self.enc.input_ids[i]
                labels += self.enc.labels[i]
                pos += range(len(self.enc.input_ids[i]))
            rows_ids.append(ids), rows_labels.append(labels), rows_pos.append(pos)
        width = max(len(r) for r in rows_ids)
        width = -(-width // self.multiple) * self.multiple
        n = len(rows)
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
        out: dict[str, Any] = {"input_ids": input_ids, "labels": labels, "n_real": real.sum()}
        if self.isolate:
            out["position_ids"] = position_ids
        else:
            out["attention_mask"] = real
        if meta is not None:
            out["norm"] = torch.tensor(meta.norm, dtype=torch.float64)
            out["step"] = torch.tensor(meta.step)
        return out


class _Identity(torch.utils.data.Dataset):
    """The planned sampler yields whole micro-batches; the dataset hands them through."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item: MicroBatch) -> MicroBatch:
        return item


class SFTDataModule(pl.LightningDataModule):
    """LightningDataModule over tokenised records, batched as `batching` says (see module docstring)."""

    def __init__(self, records: Sequence[dict[str, Any]], tokenizer: Any, *, max_length: int,
                 mode: str = "pack", batching: str = "samples", isolate: bool = True,
                 shuffle: bool = True, batch_size: int = 1, accumulate: int = 1,
                 loss_tokens: str = "all_ranks", seed: int = 42, num_workers: int = 0,
                 pad_to_multiple_of: int = 1) -> None:
        super().__init__()
        if mode not in MODES:
            raise UserError(f"must be one of {', '.join(MODES)}, got {mode!r}", key="data.mode")
        if batching not in BATCHINGS:
            raise UserError(f"must be one of {', '.join(BATCHINGS)}, got {batching!r}", key="data.batching")
        if batch_size < 1:
            raise UserError(f"must be positive, got {batch_size}", key="batch_size")
        self.tokenizer, self.mode, self.batching = tokenizer, mode, batching
        self.max_length, self.batch_size, self.accumulate = int(max_length), int(batch_size), int(accumulate)
        self.seed, self.shuffle, self.num_workers = int(seed), bool(shuffle), int(num_workers)
        self.isolate = bool(isolate) and mode == "pack"
        self.loss_tokens = loss_tokens
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.encoded = encode(tokenizer, records, self.max_length, keep_empty=batching == "samples")
        self.best_fit_rows = (pack_best_fit([len(x) for x in self.encoded.input_ids], self.max_length)
                              if batching == "best_fit" and mode == "pack" else None)
        if batching == "best_fit" and mode == "pad":
            self.best_fit_rows = [[i] for i in range(len(self.encoded.input_ids))]
        self.collator = Collator(self.encoded, pad_id, isolate=self.isolate,
                                 pad_to_multiple_of=pad_to_multiple_of)
        self.world_size, self.rank = 1, 0
        log.info("%d samples (%d truncated, %d dropped, %d without a response token)",
                 len(self.encoded.input_ids), self.encoded.truncated, self.encoded.dropped,
                 self.encoded.empty)

    def planner(self, world_size: int) -> Planner:
        """The batching arithmetic for `world_size` ranks."""
        return Planner([len(x) for x in self.encoded.input_ids], self.encoded.label_counts(),
                       batching=self.batching, mode=self.mode, max_length=self.max_length,
                       batch_size=self.batch_size, accum=self.accumulate, world_size=world_size,
                       seed=self.seed, shuffle=self.shuffle, norm=self.loss_tokens,
                       item_rows=self.best_fit_rows)

    def setup(self, stage: str) -> None:  # noqa: D102
        if self.trainer is not None:
            self.world_size, self.rank = int(self.trainer.world_size), int(self.trainer.global_rank)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        planner = self.planner(self.world_size)
        return torch.utils.data.DataLoader(_Identity(planner.windows.used),
                                           batch_sampler=PlannedBatchSampler(planner, self.rank),
                                           collate_fn=self.collator, num_workers=self.num_workers)
