"""Configuration: stage views of the one config tree, typed schemas with range checks, the sweeper."""
from __future__ import annotations

from pathlib import Path
from typing import Any

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def conf_defaults(name: str, key: str | None = None) -> dict[str, Any]:
    """The values of `conf/<name>.yaml` (or its node `key`), for library callers outside Hydra:
    e.g. `conf_defaults("data/file", "decontamination")`. Defaults live in conf/ only."""
    from omegaconf import OmegaConf

    node = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    return OmegaConf.to_container(node[key] if key else node, resolve=False)  # type: ignore[return-value]
