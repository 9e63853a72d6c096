"""The selector interface: every selector turns a pool (records + embeddings) into k distinct indices."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from codeselect.errors import UserError


@dataclass
class SelectionContext:
    """Everything a selector may use. `embeddings` are float32, n x d, L2-normalised rows."""

    records: Sequence[Mapping[str, Any]]  # a list, or the pool's lazy record sequence
    embeddings: torch.Tensor | None
    seed: int = 42
    cache_dir: Path = Path(".cache")
    pool_hash: str = ""
    device: str = "cpu"
    info: dict[str, Any] = field(default_factory=dict)  # selectors put extra results here
    # per-sample values (pool order) that the written records gain under these keys, e.g. `ifd`
    record_scores: dict[str, Any] = field(default_factory=dict)
    # per-sample values (pool order) shown in the selection report only (not written), e.g. deita's
    report_scores: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.records)


class Selector(ABC):
    """Base class. Subclasses are built by `hydra.utils.instantiate` from `conf/selector/<name>.yaml`."""

    name: str = "base"

    @abstractmethod
    def select(self, ctx: SelectionContext, k: int) -> list[int]:
        """Return exactly k distinct pool indices (0-based), in the selector's own order."""


from codeselect.hf import resolve_device  # noqa: E402,F401  (the one device rule; selectors import it here)


def check_k(k: int, n: int) -> None:
    """Every selector needs 1 <= k <= n (select.py checks earlier; this guards library callers)."""
    if not 1 <= k <= n:
        raise UserError(f"must be in [1, {n}] for a pool of {n} records, got {k}", key="sample_num")


def pool_embeddings(ctx: SelectionContext, k: int, selector: str) -> torch.Tensor:
    """The pool's embeddings for an embedding-based selector, after checking they exist and k fits."""
    if ctx.embeddings is None:
        raise UserError(f"the {selector} selector needs embeddings", key="embedding")
    check_k(k, ctx.embeddings.shape[0])
    return ctx.embeddings
