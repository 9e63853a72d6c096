"""Experiment tracking: W&B (offline unless the user is logged in), a CSV fallback, or nothing.

Config (`conf/logger/*.yaml`): `kind` (wandb | csv | none), `project`, `group`, `tags`, `mode`.
W&B is imported lazily and never blocks on the network: without an API key it runs offline.

Every run of every stage carries the same identity in its config and tags (`run_context`):
`stage`, `selector.name`, `sample_num` and `job_id` (the pipeline job, or the run dir), and runs
of one sweep share a W&B group (the sweep dir). Configs go to W&B nested (`selector: {name: ...}`,
addressed as `selector.name` by W&B's filters, grouping and panels); metric keys use `/`.
Select and evaluate log through `Tracker`s (context managers: finished on the way out, crash or
not); training logs through Lightning's own WandbLogger / CSVLogger (`lightning_logger`), and
`attach(logger)` gives that run the same Tracker interface. What each stage logs (keys, artifacts)
is `codeselect.lineage`'s business.
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


def wandb_mode(mode: str | None) -> str:
    """`logger.mode`, else WANDB_MODE, else online when logged in, offline otherwise."""
    return mode or os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")


# ----------------------------------------------------------------------------- run identity
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_context(cfg: Any, stage: str, run_dir: str | Path) -> dict[str, Any]:
    """`stage`, `selector`, `sample_num`, `job_id` of a run. A pipeline job sets them
    (`cfg.tracking`); a standalone train run reads them from its selection's `selection.json`,
    an evaluate run from its checkpoint's `train.json`; else selector and sample_num are None."""
    given = dict(cfg.get("tracking") or {}) if hasattr(cfg, "get") else {}
    ctx: dict[str, Any] = {"stage": stage, "selector": None, "sample_num": None,
                           "job_id": "/".join(Path(run_dir).resolve().parts[-2:])}
    if stage == "select":
        ctx.update(selector=str(cfg.selector.name), sample_num=int(cfg.sample_num))
    elif stage == "train" and cfg.data.path:
        found = _read_json(Path(str(cfg.data.path)).expanduser().parent / "selection.json")
        ctx.update({k: found[k] for k in ("selector", "sample_num") if k in found})
    elif stage == "evaluate" and cfg.model.get("path") not in (None, "???"):
        found = _read_json(Path(str(cfg.model.path)).expanduser().parent / "train.json").get("tracking", {})
        ctx.update({k: found[k] for k in ("selector", "sample_num", "job_id") if found.get(k) is not None})
    ctx.update({k: v for k, v in given.items() if v is not None})
    ctx.update(stage=stage, pipeline=bool(given))
    return ctx


def context_tags(ctx: Mapping[str, Any]) -> list[str]:
    """Tags of a run: its stage, selector, `sn<k>` and `job:<job id>` (W&B keeps 64 characters)."""
    tags = [str(ctx["stage"])]
    if ctx.get("selector"):
        tags.append(str(ctx["selector"]))
    if ctx.get("sample_num") is not None:
        tags.append(f"sn{ctx['sample_num']}")
    if ctx.get("job_id"):
        tags.append(f"job:{str(ctx['job_id'])[-60:]}")
    return tags


def with_context(config: Mapping[str, Any], ctx: Mapping[str, Any]) -> dict[str, Any]:
    """The run's config plus its identity under the keys every stage shares (`selector.name`,
    `sample_num`, `stage`, `job_id`)."""
    out = dict(config)
    selector = dict(out.get("selector") or {}) if isinstance(out.get("selector"), Mapping) else {}
    selector.setdefault("name", ctx.get("selector"))
    out.update(selector=selector, sample_num=ctx.get("sample_num"), stage=ctx["stage"],
               job_id=ctx.get("job_id"))
    out.pop("tracking", None)
    return out


def group_of_sweep_dir(sweep_dir: str | Path) -> str:
    """The W&B group of a sweep: its dir's last two parts (`multirun/select/<time>` -> `select-<time>`)."""
    parts = Path(str(sweep_dir)).parts
    return "-".join(parts[-2:]) if len(parts) >= 2 else parts[-1]


def sweep_group() -> str | None:
    """Inside a Hydra multirun job: a group name shared by every job of the sweep (from its dir)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        return group_of_sweep_dir(str(hc.sweep.dir))
    except Exception:  # noqa: BLE001 - not under Hydra
        return None


def group_for(logger_cfg: Mapping[str, Any], ctx: Mapping[str, Any]) -> str | None:
    """`logger.group`, else the sweep's, else (a pipeline job's stages) the job id."""
    return logger_cfg.get("group") or sweep_group() or (ctx.get("job_id") if ctx.get("pipeline") else None)


# ----------------------------------------------------------------------------- select / evaluate
class Tracker:
    """No-op tracker; the base of the real ones. A context manager: `finish()` on the way out.
    `wandb_run` is the W&B run behind it (None for CSV / none): artifacts need one."""

    wandb_run: Any = None

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:  # noqa: D102
        pass

    def summary(self, values: Mapping[str, Any]) -> None:  # noqa: D102
        pass

    def log_image(self, name: str, path: str | Path) -> None:  # noqa: D102
        pass

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:  # noqa: D102
        pass

    def log_artifact(self, artifact: Any) -> None:  # noqa: D102
        pass

    def use_artifact(self, artifact: Any) -> None:  # noqa: D102
        pass

    def finish(self, failed: bool = False) -> None:  # noqa: D102
        pass

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish(failed=exc_type is not None)


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

    def finish(self, failed: bool = False) -> None:
        if self.rows:
            keys = sorted({k for r in self.rows for k in r})
            with open(self.dir / "metrics.csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=keys)
                writer.writeheader()
                writer.writerows(self.rows)
        (self.dir / "summary.json").write_text(json.dumps(
            {**self._summary, **({"failed": True} if failed else {})}, indent=2, default=str))


class WandbTracker(Tracker):
    """A W&B run; offline (files under the run dir) unless logged in or WANDB_MODE says otherwise.
    The config goes in nested (W&B's filters and grouping read `selector.name` from it)."""

    owned = True  # finish() ends the run (False for a run Lightning owns: see `attach`)

    def __init__(self, run_dir: str | Path, config: Mapping[str, Any], *, project: str,
                 job_type: str, name: str | None = None, group: str | None = None,
                 tags: list[str] | None = None, mode: str | None = None) -> None:
        import wandb  # lazy: slow import

        mode = wandb_mode(mode)
        os.environ.setdefault("WANDB_SILENT", "true")
        self.wandb = wandb
        self.run = wandb.init(project=project, job_type=job_type, name=name, group=group,
                              tags=tags or None, config=dict(config), dir=str(run_dir),
                              mode=mode, reinit="finish_previous",
                              settings=wandb.Settings(silent=True, console="off"))
        self.wandb_run = self.run
        log.info("W&B run %s (%s) in %s", self.run.id, mode, run_dir)

    @classmethod
    def of_run(cls, run: Any) -> "WandbTracker":
        """A tracker over a run someone else started and finishes (Lightning's WandbLogger)."""
        import wandb

        tracker = cls.__new__(cls)
        tracker.wandb, tracker.run, tracker.wandb_run, tracker.owned = wandb, run, run, False
        return tracker

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        self.run.log(dict(flatten(metrics, sep="/")), step=step)

    def summary(self, values: Mapping[str, Any]) -> None:
        for key, value in flatten(values, sep="/").items():
            self.run.summary[key] = value

    def log_image(self, name: str, path: str | Path) -> None:
        self.run.log({name: self.wandb.Image(str(path))})

    def log_table(self, name: str, columns: list[str], rows: list[list[Any]]) -> None:
        self.run.log({name: self.wandb.Table(columns=columns, data=rows)})

    def log_artifact(self, artifact: Any) -> None:
        """An output of this run."""
        self.run.log_artifact(artifact)

    def use_artifact(self, artifact: Any) -> None:
        """An input of this run, given as the artifact itself (same name, type and files as the
        run that logged it: W&B finds that version by its content digest). Online this is
        `run.use_artifact`. Offline the SDK refuses `use_artifact` (it would ask the server), so
        the use is recorded the way the SDK itself records it for a new artifact: an artifact
        record marked use-after-commit, which `wandb sync` turns into the same version and the
        same use link (a version with that digest already exists: no new one is made)."""
        if not getattr(self.run, "offline", False):
            self.run.use_artifact(artifact)
        else:
            self.run._log_artifact(artifact, is_user_created=True, use_after_commit=True)

    def finish(self, failed: bool = False) -> None:
        if self.owned:
            self.run.finish(exit_code=1 if failed else 0)


def start_tracker(logger_cfg: Mapping[str, Any] | None, run_dir: str | Path,
                  config: Mapping[str, Any], job_type: str, name: str | None = None,
                  tags: list[str] | None = None, context: Mapping[str, Any] | None = None) -> Tracker:
    """Build the tracker chosen by `logger.kind` (use it as a context manager); never raises for a
    missing network. `context` (see run_context) goes into the config and the tags."""
    cfg = dict(logger_cfg or {})
    ctx = dict(context or {"stage": job_type})
    config = with_context(config, ctx)
    kind = cfg["kind"]
    if kind == "none":
        return Tracker()
    if kind == "csv":
        return CSVTracker(run_dir, config)
    all_tags = list(dict.fromkeys(str(t) for t in [*cfg["tags"], *context_tags(ctx), *(tags or [])]))
    try:
        return WandbTracker(run_dir, config, project=cfg["project"], job_type=job_type, name=name,
                            group=group_for(cfg, ctx), tags=all_tags, mode=cfg["mode"])
    except Exception as exc:  # noqa: BLE001 - tracking must never kill a run
        log.warning("W&B unavailable (%s); falling back to CSV logs", exc)
        return CSVTracker(run_dir, config)


# ----------------------------------------------------------------------------- training
def lightning_logger(logger_cfg: Mapping[str, Any], run_dir: str | Path, config: Mapping[str, Any],
                     name: str, context: Mapping[str, Any]) -> Any:
    """Lightning's own logger for `logger.kind`: WandbLogger (offline unless logged in), CSVLogger
    (`<run_dir>/logs/metrics.csv`), or False."""
    cfg = dict(logger_cfg)
    config = with_context(config, context)
    if cfg["kind"] == "none":
        return False
    if cfg["kind"] == "csv":
        from lightning.pytorch.loggers import CSVLogger

        logger = CSVLogger(save_dir=str(run_dir), name="logs", version="")
        logger.log_hyperparams(flatten(config))
        return logger
    try:
        import wandb
        from lightning.pytorch.loggers import WandbLogger

        os.environ.setdefault("WANDB_SILENT", "true")
        mode = wandb_mode(cfg["mode"])
        tags = list(dict.fromkeys(str(t) for t in [*cfg["tags"], *context_tags(context)]))
        logger = WandbLogger(project=cfg["project"], name=name, group=group_for(cfg, context),
                             tags=tags, save_dir=str(run_dir), job_type="train", config=config,
                             mode=mode, offline=mode == "offline", reinit="finish_previous",
                             settings=wandb.Settings(silent=True, console="off"))
        _ = logger.experiment  # start the run now (offline: no network)
        return logger
    except Exception as exc:  # noqa: BLE001 - tracking must never kill a run
        log.warning("W&B unavailable (%s); falling back to CSV logs", exc)
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(run_dir), name="logs", version="")


def attach(logger: Any) -> Tracker:
    """The Tracker interface over a Lightning logger's W&B run (a no-op Tracker for CSV / none)."""
    if logger and type(logger).__name__ == "WandbLogger":
        return WandbTracker.of_run(logger.experiment)
    return Tracker()


def log_summary(logger: Any, values: Mapping[str, Any]) -> None:
    """Final values of a training run: W&B run summary, or `logs/summary.json` next to the CSV."""
    if not logger:
        return
    flat = flatten(values, sep="/")
    if type(logger).__name__ == "WandbLogger":
        logger.experiment.summary.update(flat)
    else:
        folder = Path(logger.log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps(flat, indent=2, default=str))


def close_logger(logger: Any, failed: bool) -> None:
    """Flush and close a Lightning logger (called in `finally`: a crash leaves a finished run)."""
    if not logger:
        return
    try:
        logger.finalize("failed" if failed else "success")
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.finish(exit_code=1 if failed else 0)
    except Exception as exc:  # noqa: BLE001 - never mask the run's own error
        log.warning("closing the logger failed: %s", exc)
