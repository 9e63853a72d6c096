"""On-disk score cache for one (scorer, pool): finished kinds as `.npy`, unfinished ones as part files.

Layout under `<cache_dir>/scores/<model-key>/<pool-hash>/`:
    <kind>.npy              float64, pool order (NaN = nothing to score): the finished scores
    parts-<kind>/*.npz      indices + values of completed batches, written as scoring goes
A run that stops midway leaves its part files; the next run reads them and scores only the rest.
"""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np

from codeselect.data import atomic_write


class ScoreStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def final_path(self, kind: str) -> Path:
        return self.root / f"{kind}.npy"

    def parts_dir(self, kind: str) -> Path:
        return self.root / f"parts-{kind}"

    def load_final(self, kind: str, n: int) -> np.ndarray | None:
        """Finished scores of `kind`, or None when not (fully) computed yet."""
        path = self.final_path(kind)
        if not path.is_file():
            return None
        values = np.load(path)
        return values if values.shape == (n,) else None

    def load_parts(self, kind: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(values, done) from the part files of an unfinished run; values are NaN where not done."""
        values = np.full(n, np.nan)
        done = np.zeros(n, dtype=bool)
        folder = self.parts_dir(kind)
        if folder.is_dir():
            for part in sorted(folder.glob("*.npz")):
                with np.load(part) as data:
                    idx = data["indices"]
                    values[idx] = data["values"]
                    done[idx] = True
        return values, done

    def write_part(self, kind: str, tag: str, indices: np.ndarray, values: np.ndarray) -> Path:
        """Record completed batches atomically (a crash never leaves half a part file)."""
        path = self.parts_dir(kind) / f"{tag}-{uuid.uuid4().hex[:8]}.npz"
        with atomic_write(path, "wb") as fh:
            np.savez(fh, indices=indices.astype(np.int64), values=values.astype(np.float64))
        return path

    def finalize(self, kind: str, values: np.ndarray) -> Path:
        """Store the complete scores and drop the part files."""
        path = self.final_path(kind)
        with atomic_write(path, "wb") as fh:
            np.save(fh, values.astype(np.float64))
        shutil.rmtree(self.parts_dir(kind), ignore_errors=True)
        return path
