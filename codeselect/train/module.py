"""The SFT LightningModule: a causal LM, AdamW, cosine schedule with warm-up, per-step loss and tokens/s."""
from __future__ import annotations

import logging
import time
from typing import Any

import lightning.pytorch as pl
import torch

log = logging.getLogger(__name__)


class SFTModule(pl.LightningModule):
    """Fine-tunes `model` (an `AutoModelForCausalLM`, optionally peft-wrapped) on SFT batches.

    The loss is the model's mean cross-entropy over the response tokens of a micro-batch; the cache
    is always off (`use_cache=False`), which is what keeps packed samples isolated.
    """

    def __init__(self, model: torch.nn.Module, *, lr: float = 5e-5, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 warmup_steps: int = 100, scheduler: str = "cosine") -> None:
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.betas, self.eps = float(lr), float(weight_decay), tuple(betas), eps
        self.warmup_steps, self.scheduler_name = int(warmup_steps), scheduler
        self.micro: list[tuple[torch.Tensor, torch.Tensor, int]] = []  # (loss, real tokens, slots)

    def forward(self, **batch: torch.Tensor) -> Any:  # noqa: D102
        return self.model(**batch, use_cache=False)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:  # noqa: D102
        n_real = batch.pop("n_real")
        loss = self(**batch).loss
        self.micro.append((loss.detach(), n_real.detach(), batch["input_ids"].numel()))
        self.log("loss", loss.detach(), prog_bar=True, logger=False, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self) -> Any:  # noqa: D102
        from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

        params = [p for p in self.parameters() if p.requires_grad]
        fused = bool(params) and params[0].is_cuda
        opt = torch.optim.AdamW(params, lr=self.lr, betas=self.betas, eps=self.eps,
                                weight_decay=self.weight_decay, **({"fused": True} if fused else {}))
        total = int(self.trainer.estimated_stepping_batches)
        if self.warmup_steps >= total:
            log.warning("warm-up (%d steps) >= training steps (%d): the learning rate never peaks",
                        self.warmup_steps, total)
        if self.scheduler_name == "cosine":
            sched = get_cosine_schedule_with_warmup(opt, self.warmup_steps, total)
        elif self.scheduler_name == "constant":
            sched = get_constant_schedule_with_warmup(opt, self.warmup_steps)
        else:
            from codeselect.errors import UserError

            raise UserError(f"must be cosine or constant, got {self.scheduler_name!r}", key="optim.scheduler")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class StepLogger(pl.Callback):
    """After every optimizer step: mean loss, tokens/s (all ranks), learning rate -> the trainer's
    loggers (Lightning's WandbLogger / CSVLogger, see codeselect.tracking.lightning_logger).

    Also keeps the per-step losses and totals that train.json reports.
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
            torch.tensor(float(len(micro)), dtype=torch.float64, device=dev),
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
            lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else 0.0
            metrics = {"train/loss": loss, "train/tokens_per_s": tokens / dt if dt > 0 else 0.0,
                       "train/lr": lr, "train/tokens": self.tokens,
                       "train/non_pad_fraction": tokens / slots if slots else 0.0}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
