"""Lightning strategies from `conf/strategy/*.yaml`: single device, DDP, FSDP (full shard), DeepSpeed ZeRO.

Multi-GPU and multi-node runs go through Lightning's own launch: `trainer.devices`, `trainer.num_nodes`,
then `python train.py ...` (Lightning spawns one process per device), `torchrun`, or `srun` under SLURM.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from codeselect.errors import UserError

KINDS = ("single", "ddp", "fsdp", "deepspeed")
_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
           "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}


def decoder_layer_classes(model: torch.nn.Module) -> set[type[torch.nn.Module]]:
    """The transformer block classes to wrap/checkpoint (from `_no_split_modules`, e.g. LlamaDecoderLayer)."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    classes = {type(m) for m in model.modules() if type(m).__name__ in names}
    if not classes:
        raise UserError(f"cannot find the decoder layer class of {type(model).__name__} "
                        "(no _no_split_modules); use strategy=ddp or deepspeed", key="strategy")
    return classes


def _dtype(name: str | None, key: str) -> torch.dtype | None:
    if name is None:
        return None
    if str(name) not in _DTYPES:
        raise UserError(f"unknown dtype {name!r} ({', '.join(_DTYPES)})", key=key)
    return _DTYPES[str(name)]


def fsdp_mixed_precision(cfg: dict[str, Any]) -> Any:
    """An explicit torch `MixedPrecision` from `strategy.mixed_precision`, or None (then the trainer's
    `precision`, e.g. bf16-mixed, sets it)."""
    mp = cfg["mixed_precision"]
    if not mp:
        return None
    from torch.distributed.fsdp import MixedPrecision

    return MixedPrecision(param_dtype=_dtype(mp.get("param_dtype"), "strategy.mixed_precision.param_dtype"),
                          reduce_dtype=_dtype(mp.get("reduce_dtype"), "strategy.mixed_precision.reduce_dtype"),
                          buffer_dtype=_dtype(mp.get("buffer_dtype"), "strategy.mixed_precision.buffer_dtype"))


def deepspeed_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The DeepSpeed JSON config as a dict, validated by DeepSpeed's own ZeRO schema when installed.

    Batch size, gradient accumulation, clipping and bf16 are filled in by Lightning from the trainer.
    """
    ds = dict(cfg["config"])
    if "gradient_accumulation_steps" in ds:
        raise UserError("set trainer.accumulate_grad_batches instead",
                        key="strategy.config.gradient_accumulation_steps")
    zero = ds.get("zero_optimization") or {}
    if zero.get("stage") not in (0, 1, 2, 3):
        raise UserError(f"must be 0, 1, 2 or 3, got {zero.get('stage')!r}",
                        key="strategy.config.zero_optimization.stage")
    try:
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    except ImportError:  # deepspeed is an optional extra; Lightning reports it when the run starts
        return ds
    try:
        DeepSpeedZeroConfig(**zero)
    except Exception as exc:  # pydantic ValidationError: name the bad field
        first = str(exc).splitlines()
        raise UserError(" ".join(first[:3]), key="strategy.config.zero_optimization") from None
    return ds


def build_strategy(cfg: dict[str, Any], layer_classes: Iterable[type[torch.nn.Module]] = (),
                   *, activation_checkpointing: bool = True) -> Any:
    """A Lightning strategy (or the string Lightning accepts) from the `strategy` config group."""
    kind = cfg["kind"]
    if kind == "single":
        return "auto"
    if kind == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=bool(cfg["find_unused_parameters"]),
                           gradient_as_bucket_view=True)
    if kind == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        layers = set(layer_classes)
        return FSDPStrategy(
            sharding_strategy=str(cfg["sharding_strategy"]),
            auto_wrap_policy=layers,
            activation_checkpointing_policy=layers if activation_checkpointing else None,
            mixed_precision=fsdp_mixed_precision(cfg),
            cpu_offload=bool(cfg["cpu_offload"]),
            state_dict_type=str(cfg["state_dict_type"]),
            limit_all_gathers=True, use_orig_params=True, sync_module_states=False)
    if kind == "deepspeed":
        from lightning.pytorch.strategies import DeepSpeedStrategy

        return DeepSpeedStrategy(config=deepspeed_config(cfg))
    raise UserError(f"must be one of {', '.join(KINDS)}, got {kind!r}", key="strategy.kind")


def is_sharded(cfg: dict[str, Any]) -> bool:
    """True when parameters live in shards (FSDP, ZeRO-3): the export must gather them."""
    kind = cfg.get("kind")
    if kind == "fsdp":
        return True
    if kind == "deepspeed":
        return ((cfg.get("config") or {}).get("zero_optimization") or {}).get("stage") == 3
    return False
