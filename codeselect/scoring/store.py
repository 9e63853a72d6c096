"""On-disk score cache for one (scorer, pool): finished kinds as `.npy`, unfinished ones as part files.

Layout under `<cache_dir>/scores/<model-key>/<pool-hash>/`:
    <kind>.npy              float64, pool order (NaN = nothing to score): the finished scores
    parts-<kind>/*.npz      indices + values of completed batches, written as scoring goes
A run that stops midway leaves its part files; the next run reads them and scores only the rest.
Jobs of a sweep may score the same pool at once: each removes only the part files it read into
its final scores (never the folder another job is writing into), and a job whose parts were
taken by a job that finished first reads that job's final scores.
"""
from __future__ import annotations

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

    def part_files(self, kind: str) -> list[Path]:
        """The finished part files of `kind` now on disk."""
        folder = self.parts_dir(kind)
        return sorted(folder.glob("*.npz")) if folder.is_dir() else []

    def load_parts(self, kind: str, n: int, files: list[Path] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(values, done) from part files (`files`, default all now on disk); NaN where not done.
        A part that another job removed meanwhile is skipped."""
        values = np.full(n, np.nan)
        done = np.zeros(n, dtype=bool)
        for part in self.part_files(kind) if files is None else files:
            try:
                data = np.load(part)
            except FileNotFoundError:
                continue
            with data:
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

    def finalize(self, kind: str, values: np.ndarray, parts: list[Path] = ()) -> Path:
        """Store the complete scores, then drop the part files they were read from (`parts`); the
        folder goes only when empty (another job may still be writing into it)."""
        path = self.final_path(kind)
        with atomic_write(path, "wb") as fh:
            np.save(fh, values.astype(np.float64))
        for part in parts:
            part.unlink(missing_ok=True)
        try:
            self.parts_dir(kind).rmdir()
        except OSError:  # not empty, or already gone
            pass
        return path
