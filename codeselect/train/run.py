"""The training job: selection JSONL -> tokenised rows -> Lightning fit -> HF checkpoint + `train.json`."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from codeselect.errors import UserError

log = logging.getLogger(__name__)


def resolve_precision(precision: Any) -> Any:
    """'auto' -> bf16-mixed on a GPU with bf16, else 32-true (CPU runs stay exact and fast)."""
    if str(precision) != "auto":
        return precision
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def resolve_resume(resume: Any, ckpt_dir: Path) -> str | None:
    """`resume`: null/false (fresh), true (`<run dir>/lightning/last.ckpt`), or a checkpoint path."""
    if resume in (None, False, "false", "null", ""):
        return None
    path = ckpt_dir / "last.ckpt" if resume is True or resume == "true" else Path(str(resume)).expanduser()
    if not path.exists():
        raise UserError(f"no checkpoint to resume from at {path} (run with the same hydra.run.dir, "
                        "or give resume=PATH)", key="resume")
    return str(path)


def run_training(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """Fine-tune as configured; write `<run_dir>/checkpoint/` and `<run_dir>/train.json`; return the summary."""
    from omegaconf import OmegaConf

    from codeselect.data import load_pool, write_json
    from codeselect.prompts import prompt_text

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    cache_dir = Path(str(cfg.cache_dir)).expanduser()
    if OmegaConf.is_missing(cfg.data, "path"):
        raise UserError("give the training data: data.path=<selection.jsonl>", key="data.path")
    if "path" in cfg.model and OmegaConf.is_missing(cfg.model, "path"):
        raise UserError("give a Hub id or a local folder: model.path=...", key="model.path")
    config = OmegaConf.to_container(cfg, resolve=True)
    data_cfg, model_cfg, strat_cfg = config["data"], config["model"], config["strategy"]
    trainer_cfg = dict(config["trainer"])
    optim = config["optim"]

    if not data_cfg["path"]:
        raise UserError("give the training data: data.path=<selection.jsonl>", key="data.path")
    records = load_pool(Path(str(data_cfg["path"])).expanduser(), data_cfg["fields"], str(data_cfg["split"]))
    ckpt_path = resolve_resume(config["resume"], run_dir / "lightning")
    if model_cfg["lora"]["enabled"] and strat_cfg["kind"] == "fsdp":
        raise UserError("LoRA with FSDP is not supported; use strategy=ddp, single or deepspeed",
                        key="model.lora.enabled")

    import lightning.pytorch as pl
    import torch

    from codeselect.train.checkpoint import gather_state_dict, save_hf
    from codeselect.train.data import SFTDataModule, apply_paper_template
    from codeselect.train.models import load_model_and_tokenizer, resolve_model_path, torch_dtype
    from codeselect.train.module import SFTModule, StepLogger
    from codeselect.train.strategies import build_strategy, decoder_layer_classes

    if strat_cfg["kind"] in ("fsdp", "deepspeed") and not torch.cuda.is_available():
        raise UserError(f"strategy={strat_cfg['kind']} needs CUDA GPUs (Lightning runs FSDP and "
                        "DeepSpeed on GPUs only); use strategy=single or strategy=ddp here", key="strategy")
    seed = int(config["seed"])
    pl.seed_everything(seed, workers=True, verbose=False)
    torch.backends.cuda.matmul.allow_tf32 = True

    texts = [prompt_text(r["instruction"]) + r["response"] for r in records]
    model_path = resolve_model_path(model_cfg, cache_dir, texts)
    model, tokenizer = load_model_and_tokenizer(model_path, model_cfg)
    apply_paper_template(tokenizer, str(data_cfg["chat_template"]))

    fsdp = strat_cfg["kind"] == "fsdp"
    grad_ckpt = bool(model_cfg["gradient_checkpointing"])
    if grad_ckpt and not fsdp:  # FSDP checkpoints activations per decoder layer itself
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = decoder_layer_classes(model) if fsdp else set()
    strategy = build_strategy(strat_cfg, layers, activation_checkpointing=grad_ckpt)

    dm = SFTDataModule(records, tokenizer, max_length=int(data_cfg["max_length"]),
                       mode=str(data_cfg["mode"]), batch_size=int(config["batch_size"]),
                       seed=seed, num_workers=int(data_cfg["num_workers"]),
                       pad_to_multiple_of=int(data_cfg["pad_to_multiple_of"]))
    module = SFTModule(model, lr=float(optim["lr"]), weight_decay=float(optim["weight_decay"]),
                       betas=tuple(optim["betas"]), warmup_steps=int(optim["warmup_steps"]),
                       scheduler=str(optim["scheduler"]))

    from codeselect.tracking import close_logger, lightning_logger, log_summary, run_context

    steps_cb = StepLogger()
    callbacks: list[Any] = [steps_cb]
    every = int(config["checkpoint_every_n_steps"])
    if every > 0:
        from lightning.pytorch.callbacks import ModelCheckpoint

        callbacks.append(ModelCheckpoint(dirpath=run_dir / "lightning", every_n_train_steps=every,
                                         save_last=True, save_top_k=0))
    if strat_cfg["kind"] == "single":
        trainer_cfg["devices"] = 1
        trainer_cfg["num_nodes"] = 1
    trainer_cfg["precision"] = resolve_precision(trainer_cfg["precision"])
    context = run_context(cfg, "train", run_dir)
    logger = lightning_logger(config["logger"], run_dir, config, f"sft-{model_cfg['name']}", context)
    failed = True
    try:
        trainer = pl.Trainer(strategy=strategy, callbacks=callbacks, logger=logger,
                             enable_checkpointing=every > 0, default_root_dir=str(run_dir), **trainer_cfg)
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        fit_s = time.perf_counter() - t0
        if every > 0:  # resume point at the very end too (a collective call under FSDP/DeepSpeed)
            trainer.save_checkpoint(run_dir / "lightning" / "last.ckpt")

        hf_model = module.model
        state_dict = gather_state_dict(trainer, hf_model)
        summary: dict[str, Any] = {}
        if trainer.is_global_zero:
            out_dir = save_hf(hf_model, state_dict, tokenizer, run_dir / "checkpoint",
                              dtype=torch_dtype(model_cfg["save_dtype"]))
            losses = steps_cb.losses
            summary = {
                "model": model_cfg["name"], "model_path": model_path, "strategy": strat_cfg["kind"],
                "steps": int(trainer.global_step), "epochs": int(trainer.current_epoch),
                "tokens": steps_cb.tokens, "time_s": round(fit_s, 3),
                "tokens_per_s": round(steps_cb.tokens / steps_cb.train_s, 1) if steps_cb.train_s else 0.0,
                "initial_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
                "non_pad_fraction": round(steps_cb.tokens / steps_cb.slots, 4) if steps_cb.slots else None,
                "losses": [round(x, 5) for x in losses],
                "data": dm.stats(), "world_size": trainer.world_size,
                "precision": str(trainer_cfg["precision"]), "resumed_from": ckpt_path,
                "checkpoint": str(out_dir), "total_s": round(time.perf_counter() - t_start, 3),
                "tracking": {k: context[k] for k in ("selector", "sample_num", "job_id")},
                "config": config,
            }
            write_json(run_dir / "train.json", summary)
            log_summary(logger, {k: v for k, v in summary.items() if k not in ("config", "losses")})
            from codeselect.lineage import log_training  # W&B: subset in, checkpoint out
            from codeselect.tracking import attach

            log_training(attach(logger), summary, config["logger"])
            print(f"trained {summary['steps']} steps, {summary['tokens']:,} tokens in {fit_s:.1f} s; "
                  f"loss {summary['initial_loss']} -> {summary['final_loss']}")
            print(f"  checkpoint: {out_dir}")
            print(f"  summary:    {run_dir / 'train.json'}")
        failed = False
    finally:
        close_logger(logger, failed)
    return summary
