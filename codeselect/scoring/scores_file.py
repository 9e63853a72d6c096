"""Scores the user already has: a JSONL file keyed by pool id, e.g. `{"id": 7, "ifd": 0.83}`."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from codeselect.data import iter_jsonl
from codeselect.errors import UserError


def read_scores_file(path: str | Path, keys: Sequence[str],
                     records: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-key arrays in pool order from a scores JSONL (ids compared as strings; extra ids ignored).

    Every line needs `id` and every key in `keys` as a finite number. Bad JSON, a missing key, a
    non-number, NaN/inf, a repeated id, or a pool id without scores raise UserError naming the file
    (and the line and key where there is one).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError("scores file not found", file=path)
    found: dict[str, list[float]] = {}
    for lineno, row in iter_jsonl(path):
        if "id" not in row:
            raise UserError("missing required key", file=path, line=lineno, key="id")
        values = []
        for key in keys:
            if key not in row:
                raise UserError("missing required key", file=path, line=lineno, key=key)
            value = row[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"must be a number, got {json.dumps(value)}",
                                file=path, line=lineno, key=key)
            if not math.isfinite(value):
                raise UserError(f"must be a finite number, got {value}", file=path, line=lineno, key=key)
            values.append(float(value))
        sid = str(row["id"])
        if sid in found:
            raise UserError(f"duplicate id {sid!r}", file=path, line=lineno, key="id")
        found[sid] = values
    missing = [str(r["id"]) for r in records if str(r["id"]) not in found]
    if missing:
        raise UserError(f"no scores for {len(missing)} of {len(records)} pool ids (first: {missing[0]!r})",
                        file=path, key="id")
    table = np.array([found[str(r["id"])] for r in records], dtype=np.float64).reshape(len(records), len(keys))
    return {key: table[:, j] for j, key in enumerate(keys)}
