"""Experiment tracking: W&B (offline unless the user is logged in), a CSV fallback, or nothing.

Config (`conf/logger/*.yaml`): `kind` (wandb | csv | none), `project`, `group`, `tags`, `mode`.
W&B is imported lazily and never blocks on the network: without an API key it runs offline.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)


def flatten(d: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Flatten nested dicts into dotted keys, so dashboards can plot against any config value."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


def wandb_logged_in() -> bool:
    """True when an API key is available (env var or netrc) without asking the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        rc = netrc.netrc()
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1].split("/")[0]
        return rc.authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class Tracker:
    """No-op tracker; the base of the real ones."""

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:  # noqa: D102
        pass

    def summary(self, values: Mapping[str, Any]) -> None:  # noqa: D102
        pass

    def log_image(self, name: str, path: str | Path) -> None:  # noqa: D102
        pass

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:  # noqa: D102
        pass

    def finish(self) -> None:  # noqa: D102
        pass


class CSVTracker(Tracker):
    """Writes `metrics.csv` (one row per log call) and `summary.json` under `<run_dir>/logs/`."""

    def __init__(self, run_dir: str | Path, config: Mapping[str, Any]) -> None:
        self.dir = Path(run_dir) / "logs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self._summary: dict[str, Any] = {}
        (self.dir / "config.json").write_text(json.dumps(dict(config), indent=2, default=str))

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        self.rows.append({"step": step, **flatten(metrics)})

    def summary(self, values: Mapping[str, Any]) -> None:
        self._summary.update(flatten(values))

    def finish(self) -> None:
        if self.rows:
            keys = sorted({k for r in self.rows for k in r})
            with open(self.dir / "metrics.csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=keys)
                writer.writeheader()
                writer.writerows(self.rows)
        (self.dir / "summary.json").write_text(json.dumps(self._summary, indent=2, default=str))


class WandbTracker(Tracker):
    """A W&B run; offline (files under the run dir) unless logged in or WANDB_MODE says otherwise."""

    def __init__(self, run_dir: str | Path, config: Mapping[str, Any], *, project: str,
                 job_type: str, name: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, mode: str | None = None) -> None:
        import wandb  # lazy: slow import

        mode = mode or os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        self.wandb = wandb
        self.run = wandb.init(project=project, job_type=job_type, name=name, group=group,
                              tags=tags or None, config=flatten(config), dir=str(run_dir),
                              mode=mode, reinit="finish_previous",
                              settings=wandb.Settings(silent=True, console="off"))
        log.info("W&B run %s (%s) in %s", self.run.id, mode, run_dir)

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        self.run.log(dict(flatten(metrics, sep="/")), step=step)

    def summary(self, values: Mapping[str, Any]) -> None:
        for key, value in flatten(values, sep="/").items():
            self.run.summary[key] = value

    def log_image(self, name: str, path: str | Path) -> None:
        self.run.log({name: self.wandb.Image(str(path))})

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.run.log({name: self.wandb.Table(columns=columns, data=rows)})

    def finish(self) -> None:
        self.run.finish()


def sweep_group() -> str | None:
    """Inside a Hydra multirun job: a group name shared by every job of the sweep (from its dir)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        parts = Path(str(hc.sweep.dir)).parts
        return "-".join(parts[-2:]) if len(parts) >= 2 else parts[-1]
    except Exception:  # not under Hydra
        return None


def start_tracker(logger_cfg: Mapping[str, Any] | None, run_dir: str | Path,
                  config: Mapping[str, Any], job_type: str, name: str | None = None,
                  tags: list[str] | None = None) -> Tracker:
    """Build the tracker chosen by `logger.kind`; never raises for a missing network."""
    cfg = dict(logger_cfg or {})
    kind = cfg.get("kind", "none")
    if kind == "none":
        return Tracker()
    if kind == "csv":
        return CSVTracker(run_dir, config)
    if kind == "wandb":
        all_tags = [str(t) for t in list(cfg.get("tags") or []) + list(tags or [])]
        try:
            return WandbTracker(run_dir, config, project=cfg.get("project", "codeselect"),
                                job_type=job_type, name=name,
                                group=cfg.get("group") or sweep_group(),
                                tags=all_tags, mode=cfg.get("mode"))
        except Exception as exc:  # tracking must never kill a run
            log.warning("W&B unavailable (%s); falling back to CSV logs", exc)
            return CSVTracker(run_dir, config)
    raise ValueError(f"unknown logger.kind {kind!r} (wandb | csv | none)")
