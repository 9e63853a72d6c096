"""The full pipeline for one grid point: select -> train -> evaluate, in one job dir.

One config tree (conf/pipeline.yaml): the groups at the top level (the pool `data`, embedding,
selector, scorer, model, strategy, backend, logger) and each stage's own keys as a package
(`select.`, `train.`, `evaluate.`). Each stage's config is cut from that tree
(codeselect.config.stages.pipeline_stage), validated before any stage runs (a bad
`train.optim.lr` fails before the selection), and written resolved to the job's
`.hydra/{select,train,evaluate-<benchmark>}.yaml`. The cache dir is shared by every job, so a
sweep embeds and scores the pool once. Layout of a job dir: `select/` (selection + manifest),
`train/` (checkpoint + train.json), `eval/<benchmark>/` (summary.json), `eval/generations/`.

Multi-GPU training under SLURM (hydra/launcher=slurm_pipeline) starts one task per training
device, each running this job: task 0 selects and evaluates, the others wait for its selection
(`select/selection.json`), join Lightning's training as their ranks, and stop there.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from codeselect.data import write_json
from codeselect.errors import UserError

log = logging.getLogger("codeselect.pipeline")


def job_id(run_dir: Path) -> str:
    """The pipeline job's id: its sweep dir and job dir (or run dir), e.g. `2026-12-01_10-00-00/ours-sn1000`."""
    return "/".join(Path(run_dir).resolve().parts[-2:])


def stage_configs(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """Every stage's config for this job, validated (names as in `.hydra/`)."""
    from omegaconf import OmegaConf

    from codeselect.config.schema import validate_stage
    from codeselect.config.stages import pipeline_stage

    from codeselect.config.stages import PIPELINE_ONLY, SHARED, STAGES, TOP_LEVEL

    known = {*SHARED, *STAGES, *PIPELINE_ONLY, *(k for keys in TOP_LEVEL.values() for k in keys)}
    for key in cfg:
        if key not in known and key != "hydra":
            raise UserError("unknown key", key=str(key))
    run_dir = Path(run_dir)
    context = {"job_id": job_id(run_dir), "selector": str(cfg.selector.name),
               "sample_num": cfg.sample_num}
    selection_placeholder = str(run_dir / "select" / "<selection>")
    configs = {
        "select": pipeline_stage(cfg, "select"),
        "train": pipeline_stage(cfg, "train", data={"path": selection_placeholder,
                                                    "fields": OmegaConf.to_container(cfg.data.fields),
                                                    "source": "file", "split": str(cfg.data.split)}),
    }
    benches = list(cfg.benchmarks)
    if not benches:
        raise UserError("name at least one benchmark", key="benchmarks")
    for name in benches:
        if name not in cfg.benchmark_options:
            raise UserError(f"unknown benchmark {name!r} (known: {', '.join(cfg.benchmark_options)})",
                            key="benchmarks")
        configs[f"evaluate-{name}"] = pipeline_stage(
            cfg, "evaluate", benchmark=OmegaConf.to_container(cfg.benchmark_options[name], resolve=True),
            model={"name": "checkpoint", "source": "hf", "path": str(run_dir / "train" / "checkpoint")},
            root=str(run_dir / "eval" / "generations"))
    for name, stage_cfg in configs.items():
        stage = name.split("-")[0]
        validate_stage(stage_cfg, stage, section=cfg[stage].keys())
        OmegaConf.set_struct(stage_cfg, False)
        stage_cfg.tracking = context   # W&B / CSV: every stage's run carries the job's identity
        OmegaConf.set_struct(stage_cfg, True)
    return configs


def launch_rank() -> int:
    """This process's rank among the tasks the launcher started for one job (SLURM, torchrun)."""
    return int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")))


def wait_for_manifest(path: Path, poll_s: float = 5.0) -> dict[str, Any]:
    """Task > 0: the selection task 0 writes (its manifest is written last, atomically); a failed
    selection (`failed.json` beside the job) ends the wait."""
    failed = path.parent.parent / "failed.json"
    while not path.is_file():
        if failed.is_file():
            raise UserError(f"the selection task failed: {json.loads(failed.read_text()).get('error')}")
        time.sleep(poll_s)
    return json.loads(path.read_text())


def run_pipeline(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """Run select, train and evaluate for one (selector, sample_num); return the job summary."""
    from omegaconf import OmegaConf

    from codeselect.cli import save_stage_config
    from codeselect.evaluation.run import run_evaluation
    from codeselect.selection import run_selection
    from codeselect.train.run import run_training

    run_dir = Path(run_dir)
    configs = stage_configs(cfg, run_dir)
    for name, stage_cfg in configs.items():
        save_stage_config(OmegaConf.to_container(stage_cfg, resolve=True), name)

    rank = launch_rank()
    if rank == 0:
        manifest = run_selection(configs["select"], run_dir / "select")
    else:
        manifest = wait_for_manifest(run_dir / "select" / "selection.json")
    selection = run_dir / "select" / manifest["output_file"]

    train_cfg = configs["train"]
    train_cfg.data.path = str(selection)
    save_stage_config(OmegaConf.to_container(train_cfg, resolve=True), "train")
    trained = run_training(train_cfg, run_dir / "train")
    if rank != 0:
        return {}
    checkpoint = Path(trained.get("checkpoint") or run_dir / "train" / "checkpoint")  # {} off rank 0

    results: dict[str, Any] = {}
    for bench in list(cfg.benchmarks):
        ev_cfg = configs[f"evaluate-{bench}"]
        ev_cfg.model.path = str(checkpoint)
        summary = run_evaluation(ev_cfg, run_dir / "eval" / str(bench))
        results[str(bench)] = summary["pass@1"]
    job = {"job_id": job_id(run_dir), "selector": manifest["selector"],
           "sample_num": manifest["sample_num"], "selection": str(selection),
           "checkpoint": str(checkpoint), "train_final_loss": trained.get("final_loss"), "pass@1": results}
    from codeselect.lineage import log_job  # the `job` run: one summary joining the stages

    job["summary"] = log_job(cfg, run_dir, job["job_id"])
    write_json(run_dir / "pipeline.json", job)
    log.info("pipeline done: %s", job)
    return job
