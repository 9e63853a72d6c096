"""Export the trained model in Hugging Face format (full state dict gathered from FSDP/ZeRO shards).

The folder holds `config.json`, safetensors weights, the tokenizer (with the chat template used in
training) and a generation config: `AutoModelForCausalLM.from_pretrained(dir)` and vLLM load it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


def hf_keys(hf_model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map wrapper-prefixed keys (`_forward_module.model.`, `model.`) onto the HF model's own keys."""
    keys = set(hf_model.state_dict().keys())
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        k = key
        while k not in keys and "." in k:
            k = k.split(".", 1)[1]
        if k in keys:
            out[k] = value
    return out


def fsdp_full_state_dict(wrapped: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Gather an FSDP-wrapped module's full, unsharded state dict on CPU (a collective call)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def gather_state_dict(trainer: Any, hf_model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The full model state dict on global rank 0 (None elsewhere). Every rank must call this."""
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

    strategy = trainer.strategy
    if isinstance(strategy, DeepSpeedStrategy):
        if strategy.zero_stage_3:
            sd = strategy.deepspeed_engine._zero3_consolidated_16bit_state_dict()
        else:
            sd = hf_model.state_dict()
    elif isinstance(strategy, FSDPStrategy):
        sd = fsdp_full_state_dict(strategy.model)
    else:
        sd = hf_model.state_dict()
    if not trainer.is_global_zero:
        return None
    return hf_keys(hf_model, sd)


def save_hf(hf_model: torch.nn.Module, state_dict: dict[str, torch.Tensor], tokenizer: Any,
            out_dir: str | Path, *, dtype: torch.dtype | None = None) -> Path:
    """Write weights (cast to `dtype`), config, tokenizer and generation config to `out_dir`.

    A peft (LoRA) model is merged into its base first, so the folder is a plain causal LM.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = hf_model
    if hasattr(model, "merge_and_unload"):  # peft: load the gathered weights, then merge
        model.load_state_dict(state_dict, strict=False)
        model = model.merge_and_unload()
        state_dict = model.state_dict()
    sd = {k: v.detach().to("cpu", dtype=dtype if (dtype and v.is_floating_point()) else v.dtype).contiguous()
          for k, v in state_dict.items()}
    if dtype is not None:
        model.config.dtype = dtype
    model.config.use_cache = True  # inference default for whoever loads it
    model.save_pretrained(out, state_dict=sd, safe_serialization=True)
    tokenizer.save_pretrained(out)
    log.info("saved HF checkpoint to %s", out)
    return out
