"""The full pipeline for one grid point: select -> train -> evaluate, in one job dir.

Each stage is composed from its own config (`conf/select.yaml`, `conf/train.yaml`,
`conf/evaluate.yaml`) with Hydra's compose API, plus the pipeline's shared keys (selector,
sample_num, seed, cache_dir, logger) and per-stage override lists (`select`, `train`,
`evaluate`). The cache dir is shared by every job, so a sweep embeds and scores the pool once.
Layout of a job dir: `select/` (selection + manifest), `train/` (checkpoint + train.json),
`eval/<benchmark>/` (summary.json), `eval/generations/` (resumable samples).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from codeselect.data import write_json

log = logging.getLogger("codeselect.pipeline")


def _choice(group: str, default: str) -> str:
    """The option picked for a config group in this run (e.g. logger -> wandb)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return str(HydraConfig.get().runtime.choices.get(group, default))
    except ValueError:  # not under Hydra
        return default


def stage_config(name: str, shared: list[str], extra: list[str]) -> Any:
    """Compose `conf/<name>.yaml` with the shared overrides, then the stage's own."""
    from hydra import compose

    return compose(config_name=name, overrides=[*shared, *extra])


def run_pipeline(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """Run select, train and evaluate for one (selector, sample_num); return the job summary."""
    from codeselect.evaluation.run import run_evaluation
    from codeselect.selection import run_selection
    from codeselect.train.run import run_training

    from omegaconf import open_dict

    run_dir = Path(run_dir)
    shared = [f"seed={cfg.seed}", f"cache_dir={cfg.cache_dir}", f"logger={_choice('logger', 'none')}"]

    sel_cfg = stage_config("select", shared, [f"selector={_choice('selector', 'ours')}",
                                              f"sample_num={cfg.sample_num}", *list(cfg.select)])
    with open_dict(sel_cfg):  # the pipeline's selector node, with its command-line changes
        sel_cfg.selector = cfg.selector
    manifest = run_selection(sel_cfg, run_dir / "select")
    selection = run_dir / "select" / manifest["output_file"]

    train_cfg = stage_config("train", shared, [f"data.path={selection}", *list(cfg.train)])
    trained = run_training(train_cfg, run_dir / "train")
    checkpoint = Path(trained.get("checkpoint") or run_dir / "train" / "checkpoint")

    results: dict[str, Any] = {}
    for bench in list(cfg.benchmarks):
        ev_cfg = stage_config("evaluate", shared, [f"benchmark={bench}", "model=hf",
                                                   f"model.path={checkpoint}",
                                                   f"root={run_dir / 'eval' / 'generations'}",
                                                   *list(cfg.evaluate)])
        summary = run_evaluation(ev_cfg, run_dir / "eval" / str(bench))
        results[str(bench)] = summary.get("pass@1")
    job = {"selector": manifest["selector"], "sample_num": manifest["sample_num"],
           "selection": str(selection), "checkpoint": str(checkpoint),
           "train_final_loss": trained.get("final_loss"), "pass@1": results}
    write_json(run_dir / "pipeline.json", job)
    log.info("pipeline done: %s", job)
    return job
