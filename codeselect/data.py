"""Compatibility: the pool helpers moved to `codeselect.pool`; this module re-exports them."""
from __future__ import annotations

from codeselect.pool import (Fields, Pool, atomic_write, iter_jsonl, load_pool, open_pool, pool_hash,  # noqa: F401
                             selection_filename, size_tag, texts_hash, write_json, write_jsonl)
from codeselect.pool.io import CORE_KEYS as REQUIRED_KEYS  # noqa: F401
