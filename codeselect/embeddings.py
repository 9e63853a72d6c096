"""Sentence embeddings of a pool's instructions: packaged encoders, precomputed files, a disk cache.

`embed_pool` is the one entry point. With `embedding=minilm` or `embedding=mpnet` it encodes the
instruction text only (as the reference does) with sentence-transformers, whose `encode` sorts the
texts by length, batches them and restores the input order; the rows are L2-normalised and cached
under `cache_dir/embeddings/` keyed by model and content hash, so every later run (another selector,
another sample_num) loads them instead of encoding again. With `embedding=precomputed` it reads
the reference's `.pt` dict `{str(id): tensor}` or a `.npy` matrix aligned with the pool.
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from codeselect.data import atomic_write, texts_hash
from codeselect.errors import UserError

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _as_dict(cfg: Any) -> dict[str, Any]:
    """The `embedding` node as a plain dict (a DictConfig's `???` values are left out)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return {k: cfg[k] for k in cfg if not OmegaConf.is_missing(cfg, k)}
    return dict(cfg)


def normalise_rows(x: torch.Tensor) -> torch.Tensor:
    """float32 rows scaled to unit L2 norm."""
    x = x.to(torch.float32)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def embed_pool(records: Sequence[Mapping[str, Any]], cfg: Any, *, cache_dir: Path,
               device: str = "cpu") -> torch.Tensor:
    """float32 n x d CPU tensor of L2-normalised instruction embeddings, rows aligned with `records`."""
    opts = _as_dict(cfg)
    if opts.get("name") == "precomputed":
        if not opts.get("path"):
            raise UserError("set embedding.path=FILE (.pt dict {str(id): tensor} or .npy matrix)",
                            key="embedding.path")
        return load_precomputed(opts["path"], records)
    if not opts.get("model"):
        raise UserError("no encoder given: use embedding=minilm, mpnet or precomputed", key="embedding.model")
    texts = [str(rec["instruction"]) for rec in records]
    path = cache_path(opts, texts, Path(cache_dir))
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            cached = None
        if cached is not None and cached.ndim == 2 and cached.shape[0] == len(texts):
            log.info("embeddings: cache hit, no encoding (%s)", path)
            return normalise_rows(torch.from_numpy(cached))
    matrix = encode_texts(texts, opts, cache_dir=Path(cache_dir), device=device)
    out = normalise_rows(torch.from_numpy(np.asarray(matrix, dtype=np.float32)))
    with atomic_write(path, "wb") as fh:
        np.save(fh, out.numpy())
    log.info("embeddings: %d x %d cached in %s", out.shape[0], out.shape[1], path)
    return out


def cache_path(opts: Mapping[str, Any], texts: Sequence[str], cache_dir: Path) -> Path:
    """`cache_dir/embeddings/<model>[-msl<N>][-<dtype>]-<texts hash>.npy`."""
    parts = [re.sub(r"[^A-Za-z0-9._-]+", "__", str(opts["model"]))]
    if opts.get("max_seq_length"):
        parts.append(f"msl{int(opts['max_seq_length'])}")
    if opts.get("dtype", "float32") != "float32":
        parts.append(str(opts["dtype"]))
    parts.append(texts_hash(texts))
    return cache_dir / "embeddings" / ("-".join(parts) + ".npy")


def encode_texts(texts: Sequence[str], opts: Mapping[str, Any], *, cache_dir: Path,
                 device: str = "cpu") -> np.ndarray:
    """Encode with sentence-transformers (length-sorted batches, progress bar): float32 n x d."""
    dtype = str(opts.get("dtype", "float32"))
    if dtype not in _DTYPES:
        raise UserError(f"must be one of {sorted(_DTYPES)}, got {dtype!r}", key="embedding.dtype")
    location = model_location(opts, cache_dir)
    log.info("embeddings: encoding %d texts with %s on %s", len(texts), location, device)
    try:
        model = load_encoder(location, device, int(opts.get("max_seq_length") or 0), dtype)
    except OSError as exc:  # a hub name with no network and no local copy
        hint = opts.get("package") or " ".join(opts.get("zip_parts") or [])
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load encoder {location!r} ({reason})"
                        + (f"; pip install {hint.replace('_', '-')}" if hint else ""),
                        key="embedding.model") from None
    emb = model.encode(list(texts), batch_size=int(opts.get("batch_size", 64)),
                       show_progress_bar=bool(opts.get("show_progress", True)),
                       convert_to_tensor=True, normalize_embeddings=True)
    return emb.float().cpu().numpy()


@functools.lru_cache(maxsize=1)
def load_encoder(location: str, device: str, max_seq_length: int = 0, dtype: str = "float32") -> Any:
    """A SentenceTransformer (the last one is kept, so repeated calls in one process load it once)."""
    from sentence_transformers import SentenceTransformer  # ~8 s import: only when encoding

    model = SentenceTransformer(location, device=device)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    if dtype != "float32" and device != "cpu":
        model.to(_DTYPES[dtype])
    return model


def model_location(opts: Mapping[str, Any], cache_dir: Path) -> str:
    """A local folder holding the packaged copy of the model when installed, else its hub name."""
    package = opts.get("package")
    if package:
        try:
            module = importlib.import_module(str(package))
        except ImportError:
            log.warning("embeddings: package %s is not installed; using the hub name %s",
                        package, opts["model"])
        else:
            return str(module.get_model_path())
    parts = opts.get("zip_parts")
    if parts:
        folder = assemble_split_zip(list(parts), cache_dir / "models" / Path(str(opts["model"])).name)
        if folder is not None:
            return str(folder)
        log.warning("embeddings: %s is not installed; using the hub name %s", parts[0], opts["model"])
    return str(opts["model"])


def _part_file(dist_name: str) -> Path | None:
    """The `*.zip.NNN` payload inside an installed distribution (None when not installed)."""
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if re.search(r"\.zip\.\d+$", f.name):
            return Path(str(dist.locate_file(f)))
    return None


def _model_folder(root: Path) -> Path | None:
    """The folder under `root` holding a sentence-transformers model (`modules.json`)."""
    hits = sorted(root.rglob("modules.json"), key=lambda p: len(p.parts))
    return hits[0].parent if hits else None


def assemble_split_zip(dist_names: list[str], dest: Path) -> Path | None:
    """Join a zip split over several wheels, unzip it once into `dest`; the model folder or None.

    None when no part is installed; a UserError when only some are. Stray `desktop.ini` files are
    dropped. The unzip goes to a temporary folder renamed into place, so a crash leaves no half model.
    """
    if dest.is_dir() and (folder := _model_folder(dest)) is not None:
        return folder
    files = {name: _part_file(name) for name in dist_names}
    missing = [name for name, f in files.items() if f is None]
    if len(missing) == len(dist_names):
        return None
    if missing:
        raise UserError(f"model parts partly installed, missing {', '.join(missing)}: "
                        f"pip install {' '.join(missing)}", key="embedding.zip_parts")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as tmp:
        joined = Path(tmp) / "model.zip"
        with open(joined, "wb") as out:
            for name in dist_names:
                with open(files[name], "rb") as part:  # type: ignore[arg-type]
                    shutil.copyfileobj(part, out, 16 << 20)
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(unpacked)
        joined.unlink()
        for junk in [p for p in unpacked.rglob("*") if p.name.lower() == "desktop.ini"]:
            junk.unlink()
        if _model_folder(unpacked) is None:
            raise UserError(f"the joined zip of {dist_names[0]}.. holds no modules.json",
                            key="embedding.zip_parts")
        try:
            unpacked.rename(dest)
        except OSError:  # another process finished first
            if not dest.is_dir():
                raise
    log.info("embeddings: unpacked %s into %s", dist_names[0], dest)
    return _model_folder(dest)


def load_precomputed(path: str | Path, records: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """Embeddings from a `.pt` dict `{str(id): tensor}` (any order) or a `.npy` matrix in pool order."""
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise UserError("embeddings file not found", file=path, key="embedding.path")
    n = len(records)
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"not a readable .npy matrix ({exc})", file=path) from None
        if arr.ndim != 2:
            raise UserError(f"expected a 2-D matrix (pool size x dim), got shape {tuple(arr.shape)}", file=path)
        if arr.shape[0] != n:
            raise UserError(f"{arr.shape[0]} rows but the pool has {n} records", file=path)
        if not np.issubdtype(arr.dtype, np.number):
            raise UserError(f"expected numbers, got dtype {arr.dtype}", file=path)
        matrix = torch.from_numpy(arr.astype(np.float32, copy=False))
    elif path.suffix in (".pt", ".pth"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            raise UserError(f"not a readable torch file ({type(exc).__name__})", file=path) from None
        if not isinstance(obj, Mapping):
            raise UserError(f"expected a dict {{str(id): tensor}}, got {type(obj).__name__}", file=path)
        matrix = _stack_by_id(obj, records, path)
    else:
        raise UserError("unsupported embeddings file: use .pt (dict {str(id): tensor}) or .npy", file=path)
    finite = torch.isfinite(matrix).all(dim=1)
    if not bool(finite.all()):
        row = int((~finite).nonzero()[0])
        raise UserError(f"non-finite value (NaN or inf) in the row of pool id {records[row]['id']!r} "
                        f"(row {row})", file=path)
    zero = matrix.abs().sum(dim=1) == 0
    if bool(zero.any()):
        row = int(zero.nonzero()[0])
        raise UserError(f"all-zero vector for pool id {records[row]['id']!r} (row {row})", file=path)
    log.info("embeddings: %d x %d loaded from %s", matrix.shape[0], matrix.shape[1], path)
    norms = matrix.double().norm(dim=1)
    if bool(((norms - 1.0).abs() < 1e-5).all()):
        return matrix  # already unit rows (the reference's .pt is): keep their bits, as its selectors do
    return normalise_rows(matrix)


def _stack_by_id(vectors: Mapping[Any, Any], records: Sequence[Mapping[str, Any]], path: Path) -> torch.Tensor:
    """Rows of a `{str(id): tensor}` dict in pool order, validated."""
    by_id = {str(k): v for k, v in vectors.items()}
    missing = [str(rec["id"]) for rec in records if str(rec["id"]) not in by_id]
    if missing:
        raise UserError(f"no embedding for pool id {missing[0]!r} ({len(missing)} of {len(records)} "
                        f"pool ids missing)", file=path)
    rows = []
    dim = None
    for rec in records:
        v = by_id[str(rec["id"])]
        if not isinstance(v, torch.Tensor):
            raise UserError(f"id {rec['id']!r}: expected a tensor, got {type(v).__name__}", file=path)
        v = v.detach().reshape(-1) if v.dim() == 2 and v.shape[0] == 1 else v.detach()
        if v.dim() != 1:
            raise UserError(f"id {rec['id']!r}: expected a 1-D vector, got shape {tuple(v.shape)}", file=path)
        if dim is None:
            dim = v.shape[0]
        elif v.shape[0] != dim:
            raise UserError(f"id {rec['id']!r}: dimension {v.shape[0]}, other vectors have {dim}", file=path)
        rows.append(v.to(torch.float32))
    extra = len(by_id) - len(records)
    if extra > 0:
        log.info("embeddings: %s holds %d vectors for ids outside the pool (ignored)", path, extra)
    return torch.stack(rows)
