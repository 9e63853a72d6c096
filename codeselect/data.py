"""Instruction pools: load and validate JSON/JSONL records, hash them, write selections atomically."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

from codeselect.errors import UserError

REQUIRED_KEYS = ("id", "instruction", "response")


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _is_jsonl(path: Path) -> bool:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name.endswith(".jsonl")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file (optionally gzipped).

    Malformed JSON, a line that is not an object, non-UTF-8 text or an unreadable file raise
    UserError naming the file (and line).
    """
    path = Path(path)
    try:
        with _open_text(path) as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise UserError(f"malformed JSON ({exc.msg} at column {exc.colno})",
                                    file=path, line=lineno) from None
                if not isinstance(rec, dict):
                    raise UserError(f"expected a JSON object, got {type(rec).__name__}",
                                    file=path, line=lineno)
                yield lineno, rec
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text ({exc.reason})", file=path) from None
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read ({exc})", file=path) from None


def _check_record(rec: Any, path: Path, line: int | None) -> None:
    if not isinstance(rec, dict):
        raise UserError(f"expected a JSON object, got {type(rec).__name__}", file=path, line=line)
    for key in REQUIRED_KEYS:
        if key not in rec:
            raise UserError("missing required key", file=path, line=line, key=key)
    if isinstance(rec["id"], bool) or not isinstance(rec["id"], (int, str)):
        raise UserError(f"must be an int or a string, got {type(rec['id']).__name__}",
                        file=path, line=line, key="id")
    for key in ("instruction", "response"):
        if not isinstance(rec[key], str):
            raise UserError(f"must be a string, got {type(rec[key]).__name__}",
                            file=path, line=line, key=key)


def load_pool(path: str | Path) -> list[dict[str, Any]]:
    """Read a pool (`.json` array, `.jsonl`, optionally gzipped) and validate every record.

    Every record needs `id` (int or str, unique), `instruction` and `response` (str); extra keys
    are kept untouched. Problems raise UserError naming the file, line and key.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("pool file not found", file=path)
    records: list[dict[str, Any]] = []
    lines: list[int | None] = []
    if _is_jsonl(path):
        for lineno, rec in iter_jsonl(path):
            _check_record(rec, path, lineno)
            records.append(rec)
            lines.append(lineno)
    else:
        try:
            with _open_text(path) as fh:
                data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise UserError(f"malformed JSON ({exc.msg} at column {exc.colno})",
                            file=path, line=exc.lineno) from None
        except UnicodeDecodeError as exc:
            raise UserError(f"not UTF-8 text ({exc.reason})", file=path) from None
        except (OSError, EOFError) as exc:
            raise UserError(f"cannot read ({exc})", file=path) from None
        if not isinstance(data, list):
            raise UserError("a .json pool must hold a list of objects", file=path)
        for i, rec in enumerate(data):
            if not isinstance(rec, dict):
                raise UserError(f"item {i} is not a JSON object", file=path)
            try:
                _check_record(rec, path, None)
            except UserError as exc:
                raise UserError(f"item {i}: {exc.args[0].split(': ', 1)[-1]}",
                                file=path, key=exc.key) from None
            records.append(rec)
            lines.append(None)
    if not records:
        raise UserError("the pool is empty", file=path)
    seen: dict[str, int] = {}
    for i, rec in enumerate(records):
        key = str(rec["id"])
        if key in seen:
            where = lines[i]
            raise UserError(f"duplicate id {key!r} (first at record {seen[key] + 1})",
                            file=path, line=where, key="id")
        seen[key] = i
    return records


def pool_hash(records: Sequence[dict[str, Any]]) -> str:
    """Content hash of a pool (ids, instructions and responses, in order): the cache key for scores."""
    h = hashlib.sha256()
    for rec in records:
        for key in REQUIRED_KEYS:
            h.update(str(rec[key]).encode("utf-8"))
            h.update(b"\x00")
        h.update(b"\x01")
    return h.hexdigest()[:16]


def texts_hash(texts: Sequence[str]) -> str:
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
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return f"{name}-sn{size_tag(sample_num)}.jsonl"


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


def write_jsonl(path: str | Path, records: Sequence[dict[str, Any]]) -> Path:
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
