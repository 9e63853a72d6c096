"""Every option of every config group composes under every entry point that has the group, passes
its stage's schema, and what can be built on a CPU is built (selectors, scorers, strategies,
loggers, SLURM presets that pass Lightning's own check)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
ENTRIES = ("select", "train", "evaluate", "pipeline")
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("stage", "hydra"))


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose(entry: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name=entry, overrides=overrides, return_hydra_config=True)


def defaults_groups(entry: str) -> set[str]:
    """The groups an entry point's defaults list names (null ones included)."""
    from omegaconf import OmegaConf

    defaults = OmegaConf.load(CONF / f"{entry}.yaml").defaults
    names = set()
    for item in defaults:
        if isinstance(item, str):
            names.add(item.split("@")[0].split("/")[0])
        else:
            names.update(str(k).split("@")[0].split("/")[0] for k in item)
    return names


def overrides_for(entry: str, group: str, option: str) -> list[str] | None:
    """What to put on the command line to pick `group=option` (None: the entry has no such group)."""
    extra = {"train": ["data.path=sel.jsonl"]}.get(entry, [])
    if group == "sweep":
        return [f"+sweep={option}", *extra]
    if group == "scorer":  # pulled in by the LM-scored selectors
        if entry not in ("select", "pipeline"):
            return None
        return ["selector=deita" if option == "deita" else "selector=ifd", f"scorer={option}", *extra]
    if group == "benchmark" and entry == "pipeline":
        return [f"benchmarks=[{option}]"]
    if group not in defaults_groups(entry) | {"experiment", "debug"}:
        return None
    more = {("data", "file"): ["data.path=pool.jsonl"], ("data", "selection"): ["data.path=sel.jsonl"],
            ("model", "hf"): ["model.path=some/model"], ("embedding", "precomputed"): ["embedding.path=x.pt"]}
    if group == "data" and entry in ("train",) and option != "selection":
        return None  # train.py reads a selection; the pool options belong to select and the pipeline
    if group == "data" and entry in ("select", "pipeline") and option == "selection":
        return None
    return [f"{group}={option}", *more.get((group, option), []), *extra]


CASES = [(e, g, o) for e in ENTRIES for g in GROUPS for o in options(g)
         if overrides_for(e, g, o) is not None]


def test_the_matrix_covers_every_option_somewhere() -> None:
    covered = {(g, o) for _e, g, o in CASES}
    assert covered == {(g, o) for g in GROUPS for o in options(g)}
    assert {e for e, _g, _o in CASES} == set(ENTRIES)


@pytest.mark.parametrize("entry, group, option", CASES)
def test_every_option_composes_validates_and_builds(entry, group, option, tmp_path) -> None:
    from omegaconf import OmegaConf

    from codeselect.config.build import instantiate
    from codeselect.config.schema import validate_stage
    from codeselect.config.stages import stage_view

    overrides = overrides_for(entry, group, option)
    cfg = compose(entry, overrides)
    choices = list(OmegaConf.to_container(cfg.hydra.runtime.choices).keys())
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    if entry == "pipeline":
        from codeselect.pipeline import stage_configs

        stages = stage_configs(cfg, tmp_path / "job")  # every stage validated
    else:
        view = stage_view(cfg, entry, overrides, choices)
        validate_stage(view, entry)
        stages = {entry: view}
    for name, stage_cfg in stages.items():
        if name == "select":
            selector = instantiate(stage_cfg.selector, "selector")
            assert selector.name == stage_cfg.selector.name
            if "scorer" in stage_cfg:
                from codeselect.scoring.config import split_scorers

                assert all(s.model for s in split_scorers(stage_cfg.scorer))
        if name == "train":
            from codeselect.train.strategies import build_strategy

            strat = OmegaConf.to_container(stage_cfg.strategy, resolve=True)
            if strat["kind"] in ("single", "ddp"):
                assert build_strategy(strat) is not None
            if stage_cfg.logger.kind != "wandb":
                from codeselect.tracking import close_logger, lightning_logger

                logger = lightning_logger(OmegaConf.to_container(stage_cfg.logger), tmp_path, {},
                                          "t", {"stage": "train"})
                close_logger(logger, failed=False)
        if name.startswith("evaluate") and stage_cfg.benchmark.name == "humaneval" and not stage_cfg.benchmark.path:
            from codeselect.evaluation.benchmarks import load_benchmark

            b = stage_cfg.benchmark
            assert load_benchmark("humaneval", None, download=False, fallback=bool(b.fallback)).problems


@pytest.mark.parametrize("entry, preset, devices_key, devices, nodes", [
    ("train", "slurm_train", "trainer.devices", 8, 2),
    ("pipeline", "slurm_pipeline", "train.trainer.devices", 4, 1),
    ("select", "slurm_select", None, 1, 1),
    ("evaluate", "slurm_select", None, 1, 1),
])
def test_slurm_presets_pass_lightnings_check(entry, preset, devices_key, devices, nodes, monkeypatch) -> None:
    """The sbatch geometry a preset asks for is what Lightning's SLURMEnvironment accepts."""
    from lightning.fabric.plugins.environments import SLURMEnvironment
    from omegaconf import OmegaConf

    extra = [f"{devices_key}={devices}", f"{devices_key.rsplit('.', 1)[0]}.num_nodes={nodes}"] if devices_key else []
    if entry == "train":
        extra.append("data.path=sel.jsonl")
    cfg = compose(entry, [f"hydra/launcher={preset}", *extra])
    tasks = OmegaConf.select(cfg, "hydra.launcher.tasks_per_node")
    n_nodes = OmegaConf.select(cfg, "hydra.launcher.nodes")
    assert (tasks, n_nodes) == (devices, nodes)
    for key, value in {"SLURM_NTASKS_PER_NODE": tasks, "SLURM_NNODES": n_nodes,
                       "SLURM_NTASKS": tasks * n_nodes, "SLURM_JOB_NAME": "codeselect"}.items():
        monkeypatch.setenv(key, str(value))
    SLURMEnvironment().validate_settings(num_devices=devices, num_nodes=nodes)
    # the stock launcher (one task per node) would not pass with several devices
    if devices > 1:
        monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "1")
        with pytest.raises(ValueError, match="tasks per node"):
            SLURMEnvironment().validate_settings(num_devices=devices, num_nodes=nodes)
