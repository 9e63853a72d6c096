"""Length-sorted buckets: a fixed, deterministic plan of padded batches (what makes resume exact)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from codeselect.scoring.encoding import TokenStore


# A batch only takes rows at least this fraction of its longest row: padding costs linear work in
# the padded tokens and quadratic work in attention, and a sparse tail of long samples (few rows of
# very different lengths) gains nothing from sharing a batch.
MIN_FILL = 0.9


def plan_batches(lengths: np.ndarray, eligible: np.ndarray, batch_tokens: int,
                 max_batch_size: int, min_fill: float = MIN_FILL) -> list[np.ndarray]:
    """Group the eligible samples longest first into batches whose padded size (rows x longest row)
    stays within `batch_tokens` (a longer single sample still gets its own batch) and whose rows are
    at least `min_fill` of the longest. Ties in length keep pool order, so the same inputs always
    give the same plan."""
    idx = np.flatnonzero(eligible)
    order = idx[np.argsort(-lengths[idx], kind="stable")]
    sorted_len = lengths[order]
    batches: list[np.ndarray] = []
    begin = 0
    while begin < len(order):
        longest = int(sorted_len[begin])
        rows = max(1, min(max_batch_size, batch_tokens // max(longest, 1)))
        # rows that are long enough: a prefix of the descending run (binary search)
        fill = int(np.searchsorted(-sorted_len[begin:begin + rows], -min_fill * longest, side="right"))
        rows = max(1, fill)
        batches.append(order[begin:begin + rows])
        begin += rows
    return batches


@dataclass(frozen=True)
class PlannedBatch:
    kind: str
    batch_no: int         # position in the kind's plan
    indices: np.ndarray   # pool indices


class BatchDataset(torch.utils.data.Dataset):
    """Each item is one whole padded batch (use with `batch_size=None`)."""

    def __init__(self, stores: dict[str, TokenStore], batches: list[PlannedBatch], pad_id: int,
                 kind_codes: dict[str, int]) -> None:
        self.stores, self.batches, self.pad_id, self.kind_codes = stores, batches, pad_id, kind_codes

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Any]:
        pb = self.batches[i]
        store = self.stores[pb.kind]
        lengths = store.lengths[pb.indices]
        ids = torch.full((len(pb.indices), int(lengths.max())), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, j in enumerate(pb.indices):
            seq = torch.from_numpy(store.sequence(int(j)))
            ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask,
                "lengths": torch.from_numpy(lengths.astype(np.int64)),
                "starts": torch.from_numpy(store.starts[pb.indices].astype(np.int64)),
                "indices": torch.from_numpy(pb.indices.astype(np.int64)),
                "kind": torch.tensor(self.kind_codes[pb.kind]), "batch_no": torch.tensor(pb.batch_no)}


def identity_collate(item: Any) -> Any:
    """Items are already batches."""
    return item
