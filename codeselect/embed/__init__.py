"""Sentence embeddings of a pool's instructions: encoders, a sharded disk cache, precomputed files.

`embed_pool` is the one entry point. With `embedding=minilm` or `embedding=mpnet` it encodes the
instruction text only (as the reference does) in shards of `embedding.shard_size` texts, in pool
order; each shard is written to disk as soon as it is encoded, so a run killed at any moment
(SIGKILL included) resumes by encoding only the shards that are missing. When every shard is there
they are joined into one `.npy` matrix that later runs memory-map (another selector, another
sample_num: no encoding). The cache key holds the model, the truncation length, the backend, the
precision, a format version and the texts' content hash, so vectors made under other settings (another
backend included) are never reused.
With `embedding=precomputed` it reads the reference's `.pt` dict or a `.npy` matrix.
"""
from __future__ import annotations

import json
import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from codeselect.embed import encoder
from codeselect.embed.encoder import assemble_split_zip, encode_texts, load_encoder, model_location  # noqa: F401
from codeselect.embed.precomputed import load_precomputed, normalise_rows  # noqa: F401
from codeselect.errors import UserError
from codeselect.pool.io import atomic_write, shard_slices, texts_hash

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: truncation at model_max_length by default, sharded; v1 files are not read


def _as_dict(cfg: Any) -> dict[str, Any]:
    """The `embedding` node as a plain dict (a DictConfig's `???` values are left out)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return {k: OmegaConf.to_container(cfg[k]) if isinstance(cfg[k], (DictConfig, ListConfig)) else cfg[k]
                for k in cfg if not OmegaConf.is_missing(cfg, k)}
    return dict(cfg)


class _Texts:
    """Instruction texts of a pool (an Arrow-backed `Pool` or a list of records), sliced on demand."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.columnar = hasattr(pool, "column")

    def __len__(self) -> int:
        return len(self.pool)

    def slice(self, s: slice) -> list[str]:
        if self.columnar:
            return self.pool.column("instruction", s.start, s.stop)
        return [str(self.pool[i]["instruction"]) for i in range(s.start, s.stop)]

    def chunks(self, size: int = 65536) -> Iterator[str]:
        for s in shard_slices(len(self), size):
            yield from self.slice(s)

    def ids(self) -> list[Any]:
        if self.columnar:
            return [self.pool.id(i) for i in range(len(self.pool))] if self.pool.int_ids else self.pool.id_strings()
        return [rec["id"] for rec in self.pool]


def embed_pool(pool: Any, cfg: Any, *, cache_dir: Path, device: str = "cpu") -> torch.Tensor:
    """float32 n x d CPU tensor of L2-normalised instruction embeddings, rows aligned with the pool.

    `pool` is a `codeselect.pool.Pool` or a sequence of records with `id` and `instruction`.
    """
    opts = _as_dict(cfg)
    texts = _Texts(pool)
    if opts.get("name") == "precomputed":
        if not opts.get("path"):
            raise UserError("set embedding.path=FILE (.pt dict {str(id): tensor} or .npy matrix)",
                            key="embedding.path")
        return load_precomputed(opts["path"], texts.ids())
    if not opts.get("model"):
        raise UserError("no encoder given: use embedding=minilm, mpnet or precomputed", key="embedding.model")
    encoder.check_dtype(opts)
    encoder.check_backend(opts)
    folder = cache_path(opts, texts_hash(texts.chunks()), Path(cache_dir), device)
    matrix = folder / "vectors.npy"
    if matrix.is_file():
        try:
            cached = np.load(matrix, mmap_mode="c")
        except (OSError, ValueError):
            cached = None
        if cached is not None and cached.ndim == 2 and cached.shape[0] == len(texts):
            log.info("embeddings: cache hit, no encoding (%s)", matrix)
            return torch.from_numpy(cached)
    info = encode_sharded(texts, opts, folder, cache_dir=Path(cache_dir), device=device)
    log.info("embeddings: %d x %d cached in %s (%d shards encoded, %d reused)", len(texts), info["dim"],
             matrix, info["encoded"], info["reused"])
    return torch.from_numpy(np.load(matrix, mmap_mode="c"))


def cache_path(opts: Mapping[str, Any], content_hash: str, cache_dir: Path, device: str = "cpu") -> Path:
    """`cache_dir/embeddings/v2-<model>-ml<max length>[-<backend>][-<dtype>]-<texts hash>/` (shards, vectors.npy)."""
    parts = [f"v{CACHE_VERSION}", re.sub(r"[^A-Za-z0-9._-]+", "__", str(opts["model"]))]
    parts.append(f"ml{int(opts['max_length'])}" if opts.get("max_length") else "mlmodel")
    dtype, backend = str(opts.get("dtype", "float32")), str(opts.get("backend") or "torch")
    if backend != "torch":  # another engine: its own key at every precision, never mixed with torch's
        parts.append(f"{backend}-{dtype}")
    elif dtype != "float32":
        parts.append(f"{dtype}-{'autocast' if device == 'cpu' else 'weights'}")
    parts.append(content_hash)
    return cache_dir / "embeddings" / "-".join(parts)


def _shard_file(folder: Path, k: int, s: slice) -> Path:
    return folder / f"shard-{k:05d}-{s.start}-{s.stop}.npy"


def encode_sharded(texts: _Texts, opts: Mapping[str, Any], folder: Path, *, cache_dir: Path,
                   device: str = "cpu") -> dict[str, int]:
    """Encode the shards not yet on disk (each saved atomically when done), then join them into
    `folder/vectors.npy` and delete the shards. Returns counts of encoded and reused shards."""
    size = int(opts.get("shard_size", 8192))
    if size <= 0:
        raise UserError(f"must be positive, got {size}", key="embedding.shard_size")
    folder.mkdir(parents=True, exist_ok=True)
    slices = shard_slices(len(texts), size)
    todo = [(k, s) for k, s in enumerate(slices) if not _shard_file(folder, k, s).is_file()]
    devices = list(opts.get("devices") or [])
    mp_pool = model = None
    if todo and len(devices) > 1:
        model = encoder.encoder_for(opts, cache_dir, "cpu")
        mp_pool = model.start_multi_process_pool(devices)
        log.info("embeddings: multi-process pool on %s", ", ".join(devices))
    try:
        for n_done, (k, s) in enumerate(todo, start=1):
            vecs = encoder.encode_texts(texts.slice(s), opts, cache_dir=cache_dir, device=device, pool=mp_pool)
            with atomic_write(_shard_file(folder, k, s), "wb") as fh:
                np.save(fh, np.ascontiguousarray(vecs, dtype=np.float32))
            log.info("embeddings: shard %d/%d written (%d to go)", k + 1, len(slices), len(todo) - n_done)
    finally:
        if mp_pool is not None:
            model.stop_multi_process_pool(mp_pool)
    out = folder / "vectors.npy"
    tmp = folder / f".vectors.npy.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"  # one per job of a sweep
    try:
        first = np.load(_shard_file(folder, 0, slices[0]), mmap_mode="r")
        dim = int(first.shape[1])
        joined = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(texts), dim))
        for k, s in enumerate(slices):
            joined[s] = np.load(_shard_file(folder, k, s), mmap_mode="r")
        joined.flush()
        del joined
    except FileNotFoundError:  # a concurrent job joined the same shards first and removed them
        tmp.unlink(missing_ok=True)
        if not out.is_file():
            raise
        return {"encoded": len(todo), "reused": len(slices) - len(todo),
                "dim": int(np.load(out, mmap_mode="r").shape[1])}
    tmp.replace(out)
    for k, s in enumerate(slices):
        _shard_file(folder, k, s).unlink(missing_ok=True)
    (folder / "info.json").write_text(json.dumps({"n": len(texts), "dim": dim, "shard_size": size,
                                                  "model": str(opts["model"]), "version": CACHE_VERSION,
                                                  "backend": str(opts.get("backend") or "torch"),
                                                  "dtype": str(opts.get("dtype", "float32"))}))
    return {"encoded": len(todo), "reused": len(slices) - len(todo), "dim": dim}
