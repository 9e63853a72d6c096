"""Precomputed embeddings: the reference's `.pt` dict `{str(id): tensor}` or a `.npy` matrix in pool order."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from codeselect.errors import UserError

log = logging.getLogger(__name__)


def normalise_rows(x: torch.Tensor) -> torch.Tensor:
    """float32 rows scaled to unit L2 norm."""
    x = x.to(torch.float32)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def load_precomputed(path: str | Path, ids: Sequence[Any]) -> torch.Tensor:
    """Embeddings from a `.pt` dict `{str(id): tensor}` (any order) or a `.npy` matrix in pool order.

    `ids` are the pool's ids in pool order (as the pool holds them: int or str)."""
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise UserError("embeddings file not found", file=path, key="embedding.path")
    n = len(ids)
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise UserError(f"not a readable .npy matrix ({exc})", file=path) from None
        if arr.ndim != 2:
            raise UserError(f"expected a 2-D matrix (pool size x dim), got shape {tuple(arr.shape)}", file=path)
        if arr.shape[0] != n:
            raise UserError(f"{arr.shape[0]} rows but the pool has {n} records", file=path)
        if not np.issubdtype(arr.dtype, np.number):
            raise UserError(f"expected numbers, got dtype {arr.dtype}", file=path)
        if arr.dtype == np.float32 and _unit_rows(arr, ids, path):
            # already float32 unit rows: memory-mapped copy-on-write, nothing copied into RAM
            log.info("embeddings: %d x %d memory-mapped from %s", arr.shape[0], arr.shape[1], path)
            return torch.from_numpy(np.load(path, allow_pickle=False, mmap_mode="c"))
        matrix = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    elif path.suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            raise UserError(f"not a readable torch file ({type(exc).__name__})", file=path) from None
        if not isinstance(obj, Mapping):
            raise UserError(f"expected a dict {{str(id): tensor}}, got {type(obj).__name__}", file=path)
        matrix = _stack_by_id(obj, ids, path)
    else:
        raise UserError("unsupported embeddings file: use .pt (dict {str(id): tensor}) or .npy", file=path)
    finite = torch.isfinite(matrix).all(dim=1)
    if not bool(finite.all()):
        row = int((~finite).nonzero()[0])
        raise UserError(f"non-finite value (NaN or inf) in the row of pool id {ids[row]!r} "
                        f"(row {row})", file=path)
    zero = matrix.abs().sum(dim=1) == 0
    if bool(zero.any()):
        row = int(zero.nonzero()[0])
        raise UserError(f"all-zero vector for pool id {ids[row]!r} (row {row})", file=path)
    log.info("embeddings: %d x %d loaded from %s", matrix.shape[0], matrix.shape[1], path)
    norms = matrix.double().norm(dim=1)
    if bool(((norms - 1.0).abs() <= 1e-5).all()):
        return matrix  # already unit rows (the reference's .pt is): keep their bits, as its selectors do
    return normalise_rows(matrix)


def _unit_rows(arr: np.ndarray, ids: Sequence[Any], path: Path, chunk: int = 65536) -> bool:
    """Checks every row (finite, not all-zero) a chunk at a time; True when all have unit norm."""
    unit = True
    for s in range(0, arr.shape[0], chunk):
        block = np.asarray(arr[s:s + chunk], dtype=np.float32)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = s + int(np.nonzero(~finite)[0][0])
            raise UserError(f"non-finite value (NaN or inf) in the row of pool id {ids[row]!r} "
                            f"(row {row})", file=path)
        norms = np.linalg.norm(block, axis=1)
        if (norms == 0).any():
            row = s + int(np.nonzero(norms == 0)[0][0])
            raise UserError(f"all-zero vector for pool id {ids[row]!r} (row {row})", file=path)
        unit = unit and bool((np.abs(norms - 1) <= 1e-5).all())
    return unit


def _stack_by_id(vectors: Mapping[Any, Any], ids: Sequence[Any], path: Path) -> torch.Tensor:
    """Rows of a `{str(id): tensor}` dict in pool order, validated."""
    by_id = {str(k): v for k, v in vectors.items()}
    missing = [str(i) for i in ids if str(i) not in by_id]
    if missing:
        raise UserError(f"no embedding for pool id {missing[0]!r} ({len(missing)} of {len(ids)} "
                        f"pool ids missing)", file=path)
    rows = []
    dim = None
    for rid in ids:
        v = by_id[str(rid)]
        if not isinstance(v, torch.Tensor):
            raise UserError(f"id {rid!r}: expected a tensor, got {type(v).__name__}", file=path)
        v = v.detach().reshape(-1) if v.dim() == 2 and v.shape[0] == 1 else v.detach()
        if v.dim() != 1:
            raise UserError(f"id {rid!r}: expected a 1-D vector, got shape {tuple(v.shape)}", file=path)
        if dim is None:
            dim = v.shape[0]
        elif v.shape[0] != dim:
            raise UserError(f"id {rid!r}: dimension {v.shape[0]}, other vectors have {dim}", file=path)
        rows.append(v.to(torch.float32))
    extra = len(by_id) - len(ids)
    if extra > 0:
        log.info("embeddings: %s holds %d vectors for ids outside the pool (ignored)", path, extra)
    return torch.stack(rows)
