"""Pool sources and their formats: JSON / JSONL (optionally gzipped), Parquet, `datasets` folders,
local data files and hub ids through the `datasets` library.

JSON and JSONL are parsed here, a row at a time, so every error names its line; everything else
is read as an Arrow table (Parquet memory-mapped by pyarrow, `save_to_disk` folders memory-mapped by
`datasets`), so a pool of millions of rows is never a list of Python dicts. Selections are written
back in the source's own format with its own keys (`write_rows`).
"""
from __future__ import annotations

import gzip
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

from codeselect.errors import UserError

JSONL, JSON, PARQUET, DATASETS = "jsonl", "json", "parquet", "datasets"
_HUB_ID = re.compile(r"^(hf://)?[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Source:
    """Where a pool comes from: `kind` is jsonl | json | parquet | datasets."""

    path: str
    kind: str
    split: str = "train"
    gz: bool = False

    @property
    def stem(self) -> str:
        name = Path(self.path.removeprefix("hf://")).name
        for suffix in (".gz", ".jsonl", ".json", ".parquet", ".csv", ".tsv"):
            name = name.removesuffix(suffix)
        return name

    def where(self, row: int | None = None, line: int | None = None) -> dict[str, Any]:
        """UserError location: file:line for text formats, `file (row N)` otherwise."""
        if line is not None:
            return {"file": self.path, "line": line}
        return {"file": self.path if row is None else f"{self.path} (row {row})"}


def detect(path: str | Path, split: str = "train") -> Source:
    """The format of `path` from its name (and, for a folder, its contents)."""
    p = Path(str(path)).expanduser()
    name = p.name.removesuffix(".gz")
    gz = p.name.endswith(".gz")
    if p.is_dir():
        return Source(str(p), DATASETS, split)
    if p.is_file():
        if name.endswith(".jsonl") or name.endswith(".ndjson"):
            return Source(str(p), JSONL, split, gz)
        if name.endswith(".json"):
            return Source(str(p), JSON, split, gz)
        if name.endswith(".parquet"):
            return Source(str(p), PARQUET, split)
        if name.endswith((".csv", ".tsv", ".arrow")):
            return Source(str(p), DATASETS, split)
        raise UserError("unsupported pool format: use .json, .jsonl(.gz), .parquet, .csv, a datasets "
                        "folder or a hub id", file=p)
    if _HUB_ID.match(str(path)) and not str(path).startswith((".", "/", "~")):
        return Source(str(path), DATASETS, split)
    raise UserError("pool file not found", file=p)


def _open_text(path: str, gz: bool) -> IO[str]:
    return gzip.open(path, "rt", encoding="utf-8") if gz else open(path, encoding="utf-8")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSONL file (optionally gzipped).

    Malformed JSON, a line that is not an object, non-UTF-8 text or an unreadable file raise
    UserError naming the file (and line).
    """
    for lineno, _raw, rec in _iter_jsonl_raw(str(path), str(path).endswith(".gz")):
        yield lineno, rec


def _iter_jsonl_raw(path: str, gz: bool) -> Iterator[tuple[int, str, dict[str, Any]]]:
    try:
        with _open_text(path, gz) as fh:
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
                yield lineno, raw, rec
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text ({exc.reason})", file=path) from None
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read ({exc})", file=path) from None


def _load_json_array(src: Source) -> list[Any]:
    try:
        with _open_text(src.path, src.gz) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise UserError(f"malformed JSON ({exc.msg} at column {exc.colno})",
                        file=src.path, line=exc.lineno) from None
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text ({exc.reason})", file=src.path) from None
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read ({exc})", file=src.path) from None
    if not isinstance(data, list):
        raise UserError("a .json pool must hold a list of objects", file=src.path)
    return data


def iter_text_rows(src: Source) -> Iterator[tuple[dict[str, Any], Any]]:
    """(UserError location, row) for every row of a JSON or JSONL source, in file order."""
    if src.kind == JSONL:
        for lineno, _raw, rec in _iter_jsonl_raw(src.path, src.gz):
            yield src.where(line=lineno), rec
    else:
        for i, rec in enumerate(_load_json_array(src)):
            yield src.where(row=i), rec


def read_table(src: Source) -> Any:
    """A pyarrow Table for a Parquet file or anything `datasets` reads (memory-mapped where it can)."""
    if src.kind == PARQUET:
        import pyarrow.parquet as pq

        try:
            return pq.read_table(src.path, memory_map=True)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for damaged files
            raise UserError(f"not a readable Parquet file ({_first_line(exc)})", file=src.path) from None
    return _dataset(src).data.table


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _dataset(src: Source) -> Any:
    """A `datasets.Dataset`: a `save_to_disk` folder, local data files, or a hub id (online)."""
    import datasets

    datasets.disable_progress_bars()  # keeps stderr to the one error line; the load is quick
    p = Path(src.path)
    try:
        if p.is_dir() and ((p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file()
                           or (p / "state.json").is_file()):
            ds = datasets.load_from_disk(str(p))
        elif p.is_file():
            builder = {".csv": "csv", ".tsv": "csv", ".arrow": "arrow"}[p.suffix]
            kwargs = {"delimiter": "\t"} if p.suffix == ".tsv" else {}
            ds = datasets.load_dataset(builder, data_files=str(p), split="train", **kwargs)
        else:  # a folder of data files, or a hub id
            ds = datasets.load_dataset(src.path.removeprefix("hf://"), split=src.split)
    except UserError:
        raise
    except Exception as exc:  # datasets raises many types (offline, bad folder, bad split)
        raise UserError(f"datasets cannot load it ({type(exc).__name__}: {_first_line(exc)})",
                        file=src.path) from None
    if isinstance(ds, datasets.DatasetDict):
        if src.split not in ds:
            raise UserError(f"no split {src.split!r} (splits: {', '.join(ds)})", file=src.path, key="data.split")
        ds = ds[src.split]
    if ds._indices is not None:  # a select()ed dataset saved with an indices mapping
        ds = ds.flatten_indices()
    return ds


def selection_path(src: Source, run_dir: Path, tag: str) -> Path:
    """`<stem>-sn<tag>` + the source's own extension (a folder for `datasets` sources)."""
    ext = {JSONL: ".jsonl", JSON: ".json", PARQUET: ".parquet", DATASETS: ""}[src.kind]
    return run_dir / f"{src.stem}-sn{tag}{ext}"


def write_rows(src: Source, rows: Sequence[int], out: Path,
               extra: dict[str, Sequence[Any]] | None = None) -> Path:
    """Write the source rows at positions `rows` (in that order) to `out`, in the source's format.

    Rows are copied with every key and value unchanged (JSON/JSONL lines re-serialised from their
    parsed objects); `extra` adds columns (e.g. a selector's score), one value per written row.
    The output appears only when complete.
    """
    from codeselect.pool.io import atomic_write

    extra = extra or {}
    if src.kind in (JSONL, JSON):
        picked = _pick_text_rows(src, rows)
        with atomic_write(out) as fh:
            if src.kind == JSON:
                objs = [dict(picked[r], **{k: v[j] for k, v in extra.items()}) for j, r in enumerate(rows)]
                json.dump(objs, fh, indent=2, ensure_ascii=False)
                fh.write("\n")
            else:
                for j, r in enumerate(rows):
                    rec = picked[r]
                    if extra:
                        rec = dict(rec, **{k: v[j] for k, v in extra.items()})
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return out
    import pyarrow as pa

    table = read_table(src).take(pa.array(list(rows), type=pa.int64()))
    for key, values in extra.items():
        table = table.append_column(key, pa.array(list(values)))
    if src.kind == PARQUET:
        import pyarrow.parquet as pq

        with atomic_write(out, "wb") as fh:
            pq.write_table(table, fh)
        return out
    import datasets

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        datasets.Dataset(table).save_to_disk(str(Path(tmp) / "ds"))
        if out.exists():
            shutil.rmtree(out)
        (Path(tmp) / "ds").rename(out)
    return out


def _pick_text_rows(src: Source, rows: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The parsed objects at the wanted row positions: one streaming pass over the file."""
    wanted = set(int(r) for r in rows)
    picked: dict[int, dict[str, Any]] = {}
    if src.kind == JSONL:
        i = -1
        for _lineno, _raw, rec in _iter_jsonl_raw(src.path, src.gz):
            i += 1
            if i in wanted:
                picked[i] = rec
                if len(picked) == len(wanted):
                    break
    else:
        data = _load_json_array(src)
        picked = {i: data[i] for i in wanted}
    return picked
