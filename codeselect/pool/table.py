"""A pool held as Arrow columns: ids, instructions, responses; records built only when asked for.

A million rows of code instructions are ~2 GB of text; as Python dicts they would be several times
that. `Pool` keeps the three core columns as Arrow string arrays (one buffer each, no per-row Python
object), remembers where each row came from in the source, and hands selectors `pool.records`, a
lazy sequence whose item `i` is the dict `{"id", "instruction", "response"}` of pool position `i`.
The selected rows are written from the source itself, every key unchanged (`formats.write_rows`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence, overload

import numpy as np

from codeselect.errors import UserError
from codeselect.pool.fields import Fields, map_row
from codeselect.pool.formats import JSON, JSONL, Source, detect, iter_text_rows, read_table

_CHUNK = 65536


@dataclass
class Pool:
    """The pool as columns. `rows[i]` is the source row of pool position `i` (after removals)."""

    source: Source
    fields: Fields
    ids: Any                       # pyarrow string array
    instructions: Any              # pyarrow large_string array
    responses: Any                 # pyarrow large_string array
    rows: np.ndarray               # int64 source row per position
    int_ids: bool = False          # ids were JSON ints: records give them back as int
    synthetic_ids: bool = False    # ids made from the row number (no id key in the source)
    lines: np.ndarray | None = None  # JSONL line per position (for messages)
    flags: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def records(self) -> "PoolRecords":
        return PoolRecords(self)

    def id(self, i: int) -> Any:
        v = self.ids[i].as_py()
        return int(v) if self.int_ids else v

    def instruction(self, i: int) -> str:
        return self.instructions[i].as_py()

    def response(self, i: int) -> str:
        return self.responses[i].as_py()

    def column(self, name: str, start: int = 0, stop: int | None = None) -> list[str]:
        """`instruction` or `response` texts of positions [start, stop) as Python strings."""
        arr = {"instruction": self.instructions, "response": self.responses, "id": self.ids}[name]
        stop = len(self) if stop is None else stop
        return arr.slice(start, stop - start).to_pylist()

    def iter_column(self, name: str, chunk: int = _CHUNK) -> Iterator[list[str]]:
        for s in range(0, len(self), chunk):
            yield self.column(name, s, min(s + chunk, len(self)))

    def id_strings(self) -> list[str]:
        return self.ids.to_pylist()

    def where(self, i: int) -> dict[str, Any]:
        """UserError location of pool position `i` in the source."""
        if self.lines is not None:
            return self.source.where(line=int(self.lines[i]))
        return self.source.where(row=int(self.rows[i]))

    def subset(self, keep: Sequence[int] | np.ndarray) -> "Pool":
        """A pool of the positions `keep` (in that order); rows still point into the source."""
        import pyarrow as pa

        idx = np.asarray(keep, dtype=np.int64)
        take = pa.array(idx)
        return replace(self, ids=self.ids.take(take), instructions=self.instructions.take(take),
                       responses=self.responses.take(take), rows=self.rows[idx],
                       lines=None if self.lines is None else self.lines[idx], flags=dict(self.flags))

    def hash(self) -> str:
        """Equals `pool_hash(self.records)`: sha256 over id, instruction, response per row, in order."""
        h = hashlib.sha256()
        for s in range(0, len(self), _CHUNK):
            e = min(s + _CHUNK, len(self))
            for rid, ins, res in zip(self.column("id", s, e), self.column("instruction", s, e),
                                     self.column("response", s, e)):
                h.update(rid.encode("utf-8"))
                h.update(b"\x00")
                h.update(ins.encode("utf-8"))
                h.update(b"\x00")
                h.update(res.encode("utf-8"))
                h.update(b"\x00\x01")
        return h.hexdigest()[:16]


class PoolRecords(Sequence):
    """`pool.records[i]` -> `{"id", "instruction", "response"}`, built on access (the selectors' view)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def __len__(self) -> int:
        return len(self._pool)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self._pool)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        p = self._pool
        return {"id": p.id(i), "instruction": p.instruction(i), "response": p.response(i)}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        p = self._pool
        for s in range(0, len(p), _CHUNK):
            e = min(s + _CHUNK, len(p))
            for rid, ins, res in zip(p.column("id", s, e), p.column("instruction", s, e),
                                     p.column("response", s, e)):
                yield {"id": int(rid) if p.int_ids else rid, "instruction": ins, "response": res}


class _Columns:
    """Accumulates rows in Python lists and flushes them to Arrow every _CHUNK rows."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[Any]] = {"id": [], "instruction": [], "response": []}
        self.buf: dict[str, list[Any]] = {"id": [], "instruction": [], "response": []}

    def add(self, rid: str, ins: str, res: str) -> None:
        self.buf["id"].append(rid)
        self.buf["instruction"].append(ins)
        self.buf["response"].append(res)
        if len(self.buf["id"]) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        for key, vals in self.buf.items():
            if vals:
                self.chunks[key].append(pa.array(vals, type=pa.string() if key == "id" else pa.large_string()))
            self.buf[key] = []

    def arrays(self) -> tuple[Any, Any, Any]:
        import pyarrow as pa

        self.flush()
        out = []
        for key in ("id", "instruction", "response"):
            typ = pa.string() if key == "id" else pa.large_string()
            out.append(pa.concat_arrays(self.chunks[key]) if self.chunks[key] else pa.array([], type=typ))
        return out[0], out[1], out[2]


def open_pool(path: Any, fields: Fields | dict | None = None, split: str = "train") -> Pool:
    """Read and validate a pool from any supported source (see `formats`), mapped by `fields`.

    Raises UserError (file, line or row, key) for a malformed file, a missing or mistyped field, an
    empty pool or a duplicate id.
    """
    fields = fields if isinstance(fields, Fields) else Fields.from_config(fields)
    src = detect(path, split)
    if src.kind in (JSONL, JSON):
        pool = _from_text_rows(src, fields)
    else:
        pool = _from_table(src, fields)
    if len(pool) == 0:
        raise UserError("the pool is empty", file=src.path)
    if not pool.synthetic_ids:
        _check_unique_ids(pool)
    return pool


def _from_text_rows(src: Source, fields: Fields) -> Pool:
    cols = _Columns()
    lines: list[int] = []
    want_id: bool | None = None
    all_int = True
    for n, (where, row) in enumerate(iter_text_rows(src)):
        if want_id is None:
            want_id = bool(fields.id) and isinstance(row, dict) and fields.id in row
        rid, ins, res = map_row(row, fields, where, want_id=want_id)
        if want_id:
            all_int = all_int and isinstance(rid, int)
            cols.add(str(rid), ins, res)
        else:
            cols.add(str(n), ins, res)
        lines.append(where.get("line") or 0)
    ids, ins_a, res_a = cols.arrays()
    n = len(ids)
    return Pool(src, fields, ids, ins_a, res_a, np.arange(n, dtype=np.int64),
                int_ids=bool(want_id) and all_int, synthetic_ids=not want_id,
                lines=np.asarray(lines, dtype=np.int64) if src.kind == JSONL else None)


def _from_table(src: Source, fields: Fields) -> Pool:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = read_table(src)
    names = set(table.column_names)
    n = table.num_rows
    want_id = bool(fields.id) and fields.id in names
    for key in fields.used_keys():
        if key == fields.id:
            continue
        if key not in names and not (key == fields.input):
            raise UserError(f"no such column (columns: {', '.join(table.column_names)})",
                            file=src.path, key=key)
    if fields.messages or fields.input and fields.input in names:
        cols = _Columns()  # row-wise mapping, a chunk at a time
        keys = [k for k in fields.used_keys() if k in names]
        for start in range(0, n, _CHUNK):
            part = table.slice(start, _CHUNK).select(keys).to_pylist()
            for j, row in enumerate(part):
                rid, ins, res = map_row(row, fields, src.where(row=start + j), want_id=want_id)
                cols.add(str(rid) if want_id else str(start + j), ins, res)
        ids, ins_a, res_a = cols.arrays()
    else:
        ins_a = _string_column(table, fields.instruction, src)
        res_a = _string_column(table, fields.response, src)
        ids = pa.array([str(i) for i in range(n)], type=pa.string()) if not want_id else None
    int_ids = False
    if want_id:
        col = table.column(fields.id).combine_chunks()
        if col.null_count:
            first = int(pc.index(pc.is_null(col), True).as_py())
            raise UserError("missing id", file=src.where(row=first)["file"], key=fields.id)
        if pa.types.is_integer(col.type):
            int_ids = True
        elif not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise UserError(f"must be an int or a string column, got {col.type}", file=src.path, key=fields.id)
        ids = pc.cast(col, pa.string())
    return Pool(src, fields, ids, ins_a, res_a, np.arange(n, dtype=np.int64), int_ids=int_ids,
                synthetic_ids=not want_id)


def _string_column(table: Any, key: str, src: Source) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.column(key).combine_chunks()
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise UserError(f"must be a string column, got {col.type}", file=src.path, key=key)
    if col.null_count:
        first = int(pc.index(pc.is_null(col), True).as_py())
        raise UserError("must be a string, got null", file=src.where(row=first)["file"], key=key)
    return pc.cast(col, pa.large_string())


def _check_unique_ids(pool: Pool) -> None:
    import pyarrow.compute as pc

    if len(pc.unique(pool.ids)) == len(pool):
        return
    seen: dict[str, int] = {}
    for i, rid in enumerate(pool.id_strings()):
        if rid in seen:
            raise UserError(f"duplicate id {rid!r} (first at record {seen[rid] + 1})",
                            key=pool.fields.id or "id", **pool.where(i))
        seen[rid] = i
