"""One config tree, one view per stage.

The pipeline's tree has the groups at the top level (data = the pool, embedding, selector, scorer,
model, strategy, backend, logger, seed, cache_dir, sample_num) and each stage's own keys as a
package (`select.`, `train.`, `evaluate.`: conf/stage/*.yaml). A stage's own entry point has its
keys at the top level instead (`train.py trainer.max_steps=30`). Recipes (`experiment=`, `debug=`)
are written once, in the pipeline's layout, so the entry points read their own section:
`stage_view(cfg, "train")` merges the `train:` section into the top level, below the command line
(whose plain key overrides are applied again on top), and drops what belongs to other stages.
"""
from __future__ import annotations

from typing import Any, Iterable

STAGES = ("select", "train", "evaluate")
# Top-level nodes a stage uses besides its own section (conf/stage/<stage>.yaml).
SHARED = ("seed", "cache_dir", "logger")
TOP_LEVEL = {
    "select": ("data", "embedding", "selector", "scorer", "sample_num"),
    "train": ("data", "model", "strategy"),
    "evaluate": ("benchmark", "backend", "model"),
}
# In a pipeline job the training data is the selection and the evaluated model the checkpoint:
# the pipeline passes those, so these stages take fewer top-level nodes there.
PIPELINE_TOP_LEVEL = {"select": TOP_LEVEL["select"], "train": ("model", "strategy"), "evaluate": ("backend",)}
PIPELINE_ONLY = ("benchmarks", "benchmark_options")  # which benchmarks a pipeline job evaluates on


def _value_overrides(overrides: Iterable[str], groups: Iterable[str]) -> list[tuple[str, Any]]:
    """(key, value) of the command line's plain value overrides (not group choices, not deletions)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups = set(groups)
    out = []
    for ov in OverridesParser.create().parse_overrides(list(overrides)):
        key = ov.key_or_group
        if ov.is_delete() or key in groups or key.startswith("hydra"):
            continue
        out.append((key, ov.value()))
    return out


def stage_view(cfg: Any, stage: str, overrides: Iterable[str] = (), groups: Iterable[str] = ()) -> Any:
    """The config a stage's entry point runs with: its own section (from a recipe) merged into the
    top level, `overrides` (the command line) applied again, other stages' nodes dropped."""
    from omegaconf import OmegaConf, open_dict

    keep = set(SHARED) | set(TOP_LEVEL[stage])
    foreign = ({k for st in STAGES if st != stage for k in TOP_LEVEL[st]} | set(PIPELINE_ONLY)) - keep
    base = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in STAGES and k not in foreign])
    section = cfg.get(stage)
    if section is None:
        return base
    merged = OmegaConf.merge(base, section)
    with open_dict(merged):
        for key, value in _value_overrides(overrides, groups):
            if key.split(".")[0] not in STAGES:
                OmegaConf.update(merged, key, value, force_add=True)
    return merged


def pipeline_stage(cfg: Any, stage: str, **extra: Any) -> Any:
    """The config of one stage of a pipeline job: the shared top level, the stage's package, `extra`."""
    from omegaconf import OmegaConf

    base = OmegaConf.masked_copy(cfg, [k for k in (*SHARED, *PIPELINE_TOP_LEVEL[stage]) if k in cfg])
    merged = OmegaConf.merge(base, cfg[stage], OmegaConf.create(extra))
    OmegaConf.set_struct(merged, True)
    return merged


def current_overrides() -> tuple[list[str], list[str]]:
    """(the job's command-line overrides, the config groups chosen) under Hydra; empty outside."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        return list(hc.overrides.task), list(hc.runtime.choices.keys())
    except ValueError:
        return [], []
