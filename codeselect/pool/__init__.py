"""Instruction pools: formats and field mapping, Arrow-backed records, decontamination, dedup.

`open_pool(path, fields)` is the scalable entry point (Arrow columns, lazy records); `load_pool`
returns plain dicts for small pools (training data, tests).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from codeselect.pool.fields import Fields
from codeselect.pool.formats import JSON, JSONL, Source, detect, iter_jsonl, iter_text_rows, read_table, \
    selection_path, write_rows
from codeselect.pool.io import atomic_write, pool_hash, selection_filename, size_tag, texts_hash, \
    write_json, write_jsonl
from codeselect.pool.table import Pool, PoolRecords, open_pool

__all__ = ["Fields", "Pool", "PoolRecords", "Source", "atomic_write", "detect", "iter_jsonl", "load_pool",
           "open_pool", "pool_hash", "selection_filename", "selection_path", "size_tag", "texts_hash",
           "write_json", "write_jsonl", "write_rows"]


def load_pool(path: str | Path, fields: Fields | dict | None = None, split: str = "train") -> list[dict[str, Any]]:
    """Every row of a pool as a dict, validated: the source's own keys, with `id`, `instruction` and
    `response` set from the field mapping (ids synthesised from the row number when absent)."""
    pool = open_pool(path, fields, split)
    if pool.source.kind in (JSONL, JSON):
        rows = [row for _where, row in iter_text_rows(pool.source)]
    else:
        rows = read_table(pool.source).to_pylist()
    if pool.fields.is_default and not pool.synthetic_ids:
        return rows
    return [dict(row, **core) for row, core in zip(rows, pool.records)]
