"""One loader for Hugging Face causal LMs and tokenizers, and one dtype / device resolution.

Used by training (codeselect.train.models), LM scoring (codeselect.scoring.loading) and HF
generation (codeselect.evaluation.generate). A model that cannot be loaded (missing folder, no
network, bad GGUF) is a UserError naming the config key that pointed at it.
"""
from __future__ import annotations

from typing import Any

from codeselect.errors import UserError

DTYPES = ("float32", "bfloat16", "float16")


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; anything else as given."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def torch_dtype(name: str | None, device: str | None = None, key: str = "dtype") -> Any:
    """'bfloat16' -> torch.bfloat16. 'auto'/None: bfloat16 on a GPU and float32 on a CPU when a
    `device` is given, else None (keep the checkpoint's own dtype)."""
    import torch

    if name in (None, "auto"):
        if device is None:
            return None
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if name not in DTYPES:
        raise UserError(f"must be one of auto, {', '.join(DTYPES)}; got {name!r}", key=key)
    return getattr(torch, name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_tokenizer(source: str, *, key: str = "model", pad_fallback: bool = True, **kwargs: Any) -> Any:
    """`AutoTokenizer.from_pretrained(source)` with a pad token (EOS, else UNK) set when missing."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the tokenizer from {source!r} ({_first_line(exc)})", key=key) from None
    if pad_fallback and tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def load_causal_lm(source: str, *, dtype: Any = None, key: str = "model", **kwargs: Any) -> Any:
    """`AutoModelForCausalLM.from_pretrained(source, dtype=...)` (None: the checkpoint's dtype)."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype if dtype is not None else "auto",
                                                    **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load model {source!r} ({_first_line(exc)})", key=key) from None
