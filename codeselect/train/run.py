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


def planned_world_size(trainer_cfg: dict[str, Any]) -> int:
    """Devices x nodes as configured (a dry run plans for them without starting anything)."""
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, (list, tuple)):
        n = len(devices)
    elif isinstance(devices, str) and "," in devices:
        n = len([d for d in devices.split(",") if d.strip()])
    elif str(devices) in ("auto", "-1"):
        import torch

        n = max(torch.cuda.device_count(), 1)
    else:
        n = int(devices)
    return n * int(trainer_cfg.get("num_nodes", 1))


def dm_stats(dm: Any) -> dict[str, Any]:
    """Counts for train.json."""
    enc = dm.encoded
    return {"samples": len(enc.input_ids), "truncated": enc.truncated, "dropped": enc.dropped,
            "without_response": enc.empty, "mode": dm.mode, "batching": dm.batching,
            "isolate": dm.isolate, "shuffle": dm.shuffle,
            "tokens_per_epoch": sum(len(x) for x in enc.input_ids)}


def _print_plan(plan: dict[str, Any]) -> None:
    from codeselect.train.batching import report_lines

    lines, warnings = report_lines(plan)
    for line in lines:
        print(line, flush=True)
    for w in warnings:
        log.warning(w)
        print(f"  warning: {w}", flush=True)


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

    from codeselect.train.batching import describe
    from codeselect.train.checkpoint import gather_state_dict, save_hf
    from codeselect.train.data import SFTDataModule, apply_paper_template
    from codeselect.train.models import (load_model_and_tokenizer, load_training_tokenizer,
                                         resolve_model_path, torch_dtype)
    from codeselect.train.module import SFTModule, StepLogger, optimizer_dtypes
    from codeselect.train.strategies import build_strategy, decoder_layer_classes

    dry_run = bool(config.get("dry_run", False))
    if strat_cfg["kind"] in ("fsdp", "deepspeed") and not torch.cuda.is_available() and not dry_run:
        raise UserError(f"strategy={strat_cfg['kind']} needs CUDA GPUs (Lightning runs FSDP and "
                        "DeepSpeed on GPUs only); use strategy=single or strategy=ddp here", key="strategy")
    seed = int(config["seed"])
    pl.seed_everything(seed, workers=True, verbose=False)
    torch.backends.cuda.matmul.allow_tf32 = True

    # Applied here, not by Lightning: the published recipe's accumulation windows and step budget.
    accumulate = int(trainer_cfg.pop("accumulate_grad_batches"))
    clip = trainer_cfg.pop("gradient_clip_val", None)
    epochs, max_steps = int(trainer_cfg.pop("max_epochs")), int(trainer_cfg.pop("max_steps"))
    if epochs < 0 and max_steps <= 0:
        raise UserError("give trainer.max_epochs or trainer.max_steps", key="trainer.max_epochs")

    texts = [prompt_text(r["instruction"]) + r["response"] for r in records]
    model_path = resolve_model_path(model_cfg, cache_dir, texts)
    if dry_run:
        model, tokenizer = None, load_training_tokenizer(model_path)
    else:
        model, tokenizer = load_model_and_tokenizer(model_path, model_cfg)
    apply_paper_template(tokenizer, str(data_cfg["chat_template"]))

    dm = SFTDataModule(records, tokenizer, max_length=int(data_cfg["max_length"]),
                       mode=str(data_cfg["mode"]), batching=str(data_cfg["batching"]),
                       isolate=bool(data_cfg["isolate"]), shuffle=bool(data_cfg["shuffle"]),
                       batch_size=int(config["batch_size"]), accumulate=accumulate,
                       loss_tokens=str(config["loss_tokens"]), seed=seed,
                       num_workers=int(data_cfg["num_workers"]),
                       pad_to_multiple_of=int(data_cfg["pad_to_multiple_of"]))
    if strat_cfg["kind"] == "single":
        trainer_cfg["devices"] = 1
        trainer_cfg["num_nodes"] = 1
    if dry_run:
        plan = describe(dm.planner(planned_world_size(trainer_cfg)), epochs=epochs, max_steps=max_steps,
                        warmup_steps=int(optim["warmup_steps"]), lr=float(optim["lr"]),
                        samples=len(dm.encoded.input_ids))
        _print_plan(plan)
        write_json(run_dir / "plan.json", plan)
        return {"plan": plan}

    master = optim.get("master_dtype")
    if master:  # fp32 master weights (and so fp32 AdamW state); compute follows trainer.precision
        model.to(torch_dtype(master, key="optim.master_dtype"))
    fsdp = strat_cfg["kind"] == "fsdp"
    grad_ckpt = bool(model_cfg["gradient_checkpointing"])
    if grad_ckpt and not fsdp:  # FSDP checkpoints activations per decoder layer itself
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = decoder_layer_classes(model) if fsdp else set()
    if strat_cfg["kind"] == "deepspeed":  # DeepSpeed clips itself; one micro-batch per engine step
        strat_cfg = dict(strat_cfg, config={**strat_cfg["config"], "gradient_clipping": float(clip or 0.0),
                                            "train_micro_batch_size_per_gpu": int(config["batch_size"])})
    strategy = build_strategy(strat_cfg, layers, activation_checkpointing=grad_ckpt)

    from codeselect.tracking import close_logger, lightning_logger, log_summary, run_context

    steps_cb = StepLogger()
    callbacks: list[Any] = [steps_cb]
    every = int(config["checkpoint_every_n_steps"])
    if every > 0:
        from lightning.pytorch.callbacks import ModelCheckpoint

        callbacks.append(ModelCheckpoint(dirpath=run_dir / "lightning", every_n_train_steps=every,
                                         save_last=True, save_top_k=0))
    trainer_cfg["precision"] = resolve_precision(trainer_cfg["precision"])
    context = run_context(cfg, "train", run_dir)
    logger = lightning_logger(config["logger"], run_dir, config, f"sft-{model_cfg['name']}", context)
    failed = True
    try:
        trainer = pl.Trainer(strategy=strategy, callbacks=callbacks, logger=logger,
                             enable_checkpointing=every > 0, default_root_dir=str(run_dir),
                             use_distributed_sampler=False, **trainer_cfg)
        plan = describe(dm.planner(trainer.world_size), epochs=epochs, max_steps=max_steps,
                        warmup_steps=int(optim["warmup_steps"]), lr=float(optim["lr"]),
                        samples=len(dm.encoded.input_ids))
        if plan["optimizer_steps_per_epoch"] == 0:
            raise UserError("no optimizer step in an epoch (fewer micro-batches than accumulation steps "
                            "and a window that never closes): lower trainer.accumulate_grad_batches or "
                            "batch_size", key="trainer.accumulate_grad_batches")
        # Training stops after the schedule's steps; the epoch bound only matters when the epochs
        # run out first (left unbounded otherwise, so that a resumed run finds its place by steps).
        trainer.fit_loop.epoch_loop.max_steps = plan["schedule_steps"]
        trainer.fit_loop.max_epochs = (plan["epochs"] if plan["optimizer_steps"] < plan["schedule_steps"]
                                       else -1)
        if trainer.is_global_zero:
            _print_plan(plan)
        module = SFTModule(model, lr=float(optim["lr"]), weight_decay=float(optim["weight_decay"]),
                           betas=tuple(optim["betas"]), warmup_steps=int(optim["warmup_steps"]),
                           scheduler=str(optim["scheduler"]), total_steps=plan["schedule_steps"],
                           clip=clip)
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        fit_s = time.perf_counter() - t0
        if every > 0:  # resume point at the very end too (a collective call under FSDP/DeepSpeed)
            trainer.save_checkpoint(run_dir / "lightning" / "last.ckpt")

        dtypes = optimizer_dtypes(trainer.optimizers[0]) if trainer.optimizers else {}
        next_lr = (float(module.lr_schedulers().get_last_lr()[0])
                   if module.step_lrs and trainer.lr_scheduler_configs else None)
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
                "losses": [round(x, 6) for x in losses],
                "lrs": module.step_lrs, "next_lr": next_lr,
                "grad_norms": [round(x, 6) for x in module.grad_norms],
                **dtypes, "plan": plan,
                "cuda_peak_memory_gib": (round(torch.cuda.max_memory_allocated() / 2**30, 3)
                                         if torch.cuda.is_available() else None),
                "data": dm_stats(dm), "world_size": trainer.world_size,
                "precision": str(trainer_cfg["precision"]), "resumed_from": ckpt_path,
                "checkpoint": str(out_dir), "total_s": round(time.perf_counter() - t_start, 3),
                "tracking": {k: context[k] for k in ("selector", "sample_num", "job_id")},
                "config": config,
            }
            write_json(run_dir / "train.json", summary)
            log_summary(logger, {k: v for k, v in summary.items()
                                 if k not in ("config", "losses", "lrs", "grad_norms", "plan")})
            from codeselect.lineage import log_training  # W&B: subset in, checkpoint out
            from codeselect.tracking import attach

            log_training(attach(logger), summary, config["logger"])
            print(f"trained {summary['steps']} steps, {summary['tokens']:,} tokens in {fit_s:.1f} s; "
                  f"loss {summary['initial_loss']} -> {summary['final_loss']}")
            print(f"  parameters {', '.join(dtypes.get('param_dtypes', []))}, optimizer state "
                  f"{', '.join(dtypes.get('optimizer_state_dtypes', []))}")
            print(f"  checkpoint: {out_dir}")
            print(f"  summary:    {run_dir / 'train.json'}")
        failed = False
    finally:
        close_logger(logger, failed)
    return summary
