"""Atomic writes, content hashes and the reference's selection file names."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Sequence

CORE_KEYS = ("id", "instruction", "response")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temporary file beside `path` and rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write records as JSONL atomically, keys and values unchanged."""
    with atomic_write(path) as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write one JSON document atomically (indented, UTF-8)."""
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False, default=str)
        fh.write("\n")
    return Path(path)


def pool_hash(records: Iterable[dict[str, Any]]) -> str:
    """Content hash of a pool (ids, instructions and responses, in order): the cache key for scores."""
    h = hashlib.sha256()
    for rec in records:
        for key in CORE_KEYS:
            h.update(str(rec[key]).encode("utf-8"))
            h.update(b"\x00")
        h.update(b"\x01")
    return h.hexdigest()[:16]


def texts_hash(texts: Iterable[str]) -> str:
    """Content hash of a list of strings (order matters): the cache key for embeddings."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def size_tag(sample_num: int) -> str:
    """The reference's size tag: 10000 -> '10K', 1500 -> '1500'."""
    return f"{sample_num // 1000}K" if sample_num % 1000 == 0 else str(sample_num)


def selection_filename(pool_path: str | Path, sample_num: int) -> str:
    """`<pool-stem>-sn<k>.jsonl`, the reference's naming (`Mixed-Python-92k-sn10K.jsonl`)."""
    name = Path(pool_path).name
    for suffix in (".gz", ".jsonl", ".json"):
        name = name.removesuffix(suffix)
    return f"{name}-sn{size_tag(sample_num)}.jsonl"


def shard_slices(n: int, size: int) -> Sequence[slice]:
    """Consecutive slices of at most `size` covering range(n)."""
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]
