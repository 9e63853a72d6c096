"""The selector interface: every selector turns a pool (records + embeddings) into k distinct indices."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class SelectionContext:
    """Everything a selector may use. `embeddings` are float32, n x d, L2-normalised rows."""

    records: list[dict[str, Any]]
    embeddings: torch.Tensor | None
    seed: int = 42
    cache_dir: Path = Path(".cache")
    pool_hash: str = ""
    device: str = "cpu"
    info: dict[str, Any] = field(default_factory=dict)  # selectors put extra results here

    @property
    def n(self) -> int:
        return len(self.records)


class Selector(ABC):
    """Base class. Subclasses are built by `hydra.utils.instantiate` from `conf/selector/<name>.yaml`."""

    name: str = "base"
    needs_embeddings: bool = True

    @abstractmethod
    def select(self, ctx: SelectionContext, k: int) -> list[int]:
        """Return exactly k distinct pool indices (0-based), in the selector's own order."""


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device
