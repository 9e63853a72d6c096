"""The SFT LightningModule: a causal LM, AdamW, cosine schedule with warm-up, per-step loss and tokens/s.

The optimizer is driven by hand (Lightning's manual optimization) because the published recipe's
accumulation windows are not Lightning's: each micro-batch arrives with its loss denominator (`norm`,
the label tokens of its accumulation window) and whether the optimizer steps after it (`step`), as
planned by codeselect.train.batching. The loss of a micro-batch is its summed token cross-entropy
divided by `norm`, so a window's gradient is the token mean over the whole window (transformers
4.47.1's `num_items_in_batch`), not a mean of per-micro-batch means.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import lightning.pytorch as pl
import torch

log = logging.getLogger(__name__)


class SFTModule(pl.LightningModule):
    """Fine-tunes `model` (an `AutoModelForCausalLM`, optionally peft-wrapped) on planned micro-batches.

    The cache is always off (`use_cache=False`), which is what keeps isolated packed samples apart.
    `total_steps` is the learning-rate schedule's length; `clip` the gradient norm bound (0 = none).
    """

    def __init__(self, model: torch.nn.Module, *, lr: float = 5e-5, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 warmup_steps: int = 100, scheduler: str = "cosine", total_steps: int = 1,
                 clip: float | None = 1.0) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        self.lr, self.weight_decay, self.betas, self.eps = float(lr), float(weight_decay), tuple(betas), eps
        self.warmup_steps, self.scheduler_name = int(warmup_steps), scheduler
        self.total_steps, self.clip = int(total_steps), float(clip or 0.0)
        self.micro: list[tuple[torch.Tensor, torch.Tensor, int]] = []  # (loss, real tokens, slots)
        self.step_lrs: list[float] = []      # the learning rate each optimizer step used
        self.grad_norms: list[float] = []    # the gradient norm before clipping, per step

    def forward(self, **batch: torch.Tensor) -> Any:  # noqa: D102
        return self.model(**batch, use_cache=False)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:  # noqa: D102
        n_real = batch.pop("n_real")
        norm = float(batch.pop("norm"))
        step = bool(batch.pop("step"))
        loss = self(**batch, num_items_in_batch=norm).loss
        with self._accumulating(not step):
            self.manual_backward(loss)
        self.micro.append((loss.detach(), n_real.detach(), batch["input_ids"].numel()))
        if step:
            self._optimizer_step()
        self.log("loss", loss.detach(), prog_bar=True, logger=False, on_step=True, on_epoch=False)
        return loss.detach()

    @contextlib.contextmanager
    def _accumulating(self, accumulate: bool) -> Any:
        """Gradients of a micro-batch that does not end its window: no all-reduce (DDP), no ZeRO
        boundary (DeepSpeed)."""
        strategy = self.trainer.strategy
        engine = getattr(strategy, "deepspeed_engine", None) if _is_deepspeed(strategy) else None
        if engine is not None:
            engine.set_gradient_accumulation_boundary(not accumulate)
        if accumulate and hasattr(strategy, "block_backward_sync"):
            with strategy.block_backward_sync():
                yield
        else:
            yield

    def _optimizer_step(self) -> None:
        opt = self.optimizers()
        sched = self.lr_schedulers()
        raw = opt.optimizer if hasattr(opt, "optimizer") else opt
        self.step_lrs.append(float(raw.param_groups[0]["lr"]))
        deepspeed = _is_deepspeed(self.trainer.strategy)
        norm = float("nan") if deepspeed else self._clip_gradients()
        opt.step()
        if deepspeed:  # DeepSpeed clips inside its step (config `gradient_clipping`) and keeps the norm
            measured = self.trainer.strategy.deepspeed_engine.get_global_grad_norm()
            norm = float(measured) if measured is not None else float("nan")
        self.grad_norms.append(norm)
        opt.zero_grad(set_to_none=True)
        sched.step()

    def _clip_gradients(self) -> float:
        """Clip to `clip` (FSDP: the root module's norm over all shards); return the norm before clipping."""
        strategy = self.trainer.strategy
        params = [p for p in self.parameters() if p.requires_grad]
        max_norm = self.clip if self.clip > 0 else float("inf")
        if _is_fsdp(strategy):
            norm = strategy.model.clip_grad_norm_(max_norm)
        else:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return float(norm)

    def configure_optimizers(self) -> Any:  # noqa: D102
        from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

        params = [p for p in self.parameters() if p.requires_grad]
        fused = bool(params) and params[0].is_cuda
        opt = torch.optim.AdamW(params, lr=self.lr, betas=self.betas, eps=self.eps,
                                weight_decay=self.weight_decay, **({"fused": True} if fused else {}))
        if self.scheduler_name == "cosine":
            sched = get_cosine_schedule_with_warmup(opt, self.warmup_steps, self.total_steps)
        elif self.scheduler_name == "constant":
            sched = get_constant_schedule_with_warmup(opt, self.warmup_steps)
        else:
            from codeselect.errors import UserError

            raise UserError(f"must be cosine or constant, got {self.scheduler_name!r}", key="optim.scheduler")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _is_fsdp(strategy: Any) -> bool:
    from lightning.pytorch.strategies import FSDPStrategy

    return isinstance(strategy, FSDPStrategy)


def _is_deepspeed(strategy: Any) -> bool:
    from lightning.pytorch.strategies import DeepSpeedStrategy

    return isinstance(strategy, DeepSpeedStrategy)


def optimizer_dtypes(optimizer: Any) -> dict[str, list[str]]:
    """The dtypes of the parameters the (innermost) optimizer updates and of its state tensors:
    fp32 master weights and fp32 AdamW moments under bf16 mixed precision."""
    inner = optimizer
    while hasattr(inner, "optimizer") and inner.optimizer is not inner:  # DeepSpeed / Lightning wrappers
        inner = inner.optimizer
    params = {str(p.dtype).replace("torch.", "") for g in inner.param_groups for p in g["params"]}
    state = {str(v.dtype).replace("torch.", "") for s in inner.state.values() for k, v in s.items()
             if torch.is_tensor(v) and k != "step"}
    return {"param_dtypes": sorted(params), "optimizer_state_dtypes": sorted(state)}


class StepLogger(pl.Callback):
    """After every optimizer step: the window's loss, tokens/s (all ranks), learning rate -> the
    trainer's loggers (Lightning's WandbLogger / CSVLogger, see codeselect.tracking.lightning_logger).

    The step's loss is the sum of its micro-batches' losses (each already divided by the window's
    label tokens), averaged over ranks, as the HF Trainer logs it. Also keeps the per-step losses and
    totals that train.json reports.
    """

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.tokens = 0
        self.slots = 0
        self.train_s = 0.0
        self._t0: float | None = None
        self._last_step: int | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: SFTModule, batch: Any,
                             batch_idx: int) -> None:  # noqa: D102
        if self._t0 is None:
            self._t0 = time.perf_counter()
        if self._last_step is None:
            self._last_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: SFTModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # noqa: D102
        if trainer.global_step == self._last_step:  # still accumulating
            return
        self._last_step = trainer.global_step
        micro, pl_module.micro = pl_module.micro, []
        dev = pl_module.device
        local = torch.stack([
            torch.stack([m[0].double() for m in micro]).sum().to(dev),
            torch.tensor(1.0, dtype=torch.float64, device=dev),
            torch.stack([m[1].double() for m in micro]).sum().to(dev),
            torch.tensor(float(sum(m[2] for m in micro)), dtype=torch.float64, device=dev)])
        total = trainer.strategy.reduce(local, reduce_op="sum")
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        now = time.perf_counter()
        dt = now - (self._t0 or now)
        self._t0 = now
        self.train_s += dt
        loss = float(total[0] / max(float(total[1]), 1.0))
        tokens, slots = int(total[2]), int(total[3])
        self.losses.append(loss)
        self.tokens += tokens
        self.slots += slots
        if trainer.is_global_zero and trainer.loggers:
            lr = pl_module.step_lrs[-1] if pl_module.step_lrs else 0.0
            metrics = {"train/loss": loss, "train/tokens_per_s": tokens / dt if dt > 0 else 0.0,
                       "train/lr": lr, "train/tokens": self.tokens,
                       "train/grad_norm": pl_module.grad_norms[-1] if pl_module.grad_norms else 0.0,
                       "train/non_pad_fraction": tokens / slots if slots else 0.0}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
