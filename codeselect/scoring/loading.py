"""Load a scorer's tokenizer and model (HF path, hub name, GGUF file, or the tiny model built from the pool)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from codeselect.errors import UserError
from codeselect.scoring.config import ScorerConfig


def tiny_model_dir(records: Sequence[dict[str, Any]], cache_dir: Path, pool_hash: str,
                   cfg: ScorerConfig) -> Path:
    """Build (once, cached) the tiny random Llama whose tokenizer is trained on this pool's texts."""
    from codeselect.tiny_lm import build_tiny_lm

    texts = [t for rec in records for t in (rec["instruction"], rec["response"])]
    return build_tiny_lm(texts, cache_dir / "models" / f"tiny-{pool_hash}", **cfg.tiny)


def model_source(cfg: ScorerConfig, tiny_dir: Path | None) -> str:
    """What to pass to `from_pretrained`: the tiny model's folder, a local path, or the hub name."""
    if cfg.is_tiny:
        if tiny_dir is None:
            raise ValueError("the tiny scorer needs its built folder")
        return str(tiny_dir)
    path = Path(cfg.model).expanduser()
    return str(path) if path.exists() else cfg.model


def _hub_kwargs(cfg: ScorerConfig) -> dict[str, Any]:
    kw: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.revision:
        kw["revision"] = cfg.revision
    if cfg.gguf_file:
        kw["gguf_file"] = cfg.gguf_file
    return kw


def load_tokenizer(cfg: ScorerConfig, source: str) -> Any:
    """The scorer's tokenizer; a load failure (missing path, no network) is a UserError."""
    from codeselect.hf import load_tokenizer as load

    return load(source, key="scorer.model", **_hub_kwargs(cfg))


def resolve_max_length(cfg: ScorerConfig, source: str) -> int:
    """`scorer.max_length`, or the model config's `max_position_embeddings` (the reference's rule)."""
    if cfg.max_length is not None:
        return int(cfg.max_length)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source, **_hub_kwargs(cfg))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the scorer config from {source!r} "
                        f"({str(exc).splitlines()[0]})", key="scorer.model") from None
    value = getattr(config, "max_position_embeddings", None)
    if not value:
        raise UserError("the model config has no max_position_embeddings: set scorer.max_length",
                        key="scorer.max_length")
    return int(value)


def load_model(cfg: ScorerConfig, source: str, device: str) -> Any:
    """The scorer model in eval mode, in fp32 on CPU / bf16 on GPU (or `cfg.dtype`)."""
    from codeselect.hf import load_causal_lm

    return load_causal_lm(source, dtype=cfg.torch_dtype(device), key="scorer.model",
                          **_hub_kwargs(cfg)).eval()
