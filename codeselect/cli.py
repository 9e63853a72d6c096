"""Shared Hydra entry point: user errors exit 2 in one line; a sweep runs every job, then reports.

- Hydra's own errors (unknown group option, bad override syntax, a key not in the config, a
  missing value) and every UserError, raised by the schemas (codeselect.config.schema) or deeper,
  print `error: <one line>` on stderr and exit 2 before anything is written;
- in a multirun a failing job leaves `failed.json` in its dir and the sweep goes on; when all jobs
  have run, the entry point lists the failed ones and exits 2 (user errors only) or 1;
- the stage's view of the config (its recipe section merged in, codeselect.config.stages) is what
  the task gets, and it is written to the job's `.hydra/<stage>.yaml`.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from codeselect.config.failures import JobFailure, SweepFailed
from codeselect.errors import EXIT_USER_ERROR, UserError

log = logging.getLogger("codeselect")

Task = Callable[[Any, Path], Any]  # (cfg, run_dir) -> result
EXIT_CRASH = 1


def model_argv(argv: Sequence[str], conf_dir: Path) -> list[str]:
    """`model=<path or hub id>` -> `model=hf model.path=<...>` (DESIGN.md's `model=<name|path>`): an
    option of the `model` group (`model=tiny`, `model=deepseek-coder-6.7b`) is kept as is."""
    out = []
    for arg in argv:
        value = arg[len("model="):] if arg.startswith("model=") else None
        if value and "," not in value and not (conf_dir / "model" / f"{value}.yaml").is_file():
            out += ["model=hf", f"model.path={value}"]
        else:
            out.append(arg)
    return out


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def _record_failure(run_dir: Path, exc: BaseException, kind: str) -> JobFailure:
    """Leave `failed.json` in a sweep job's dir so the report can list the failure."""
    payload = {"kind": kind, "error": str(exc), "type": type(exc).__name__}
    if kind == "crash":
        payload["traceback"] = traceback.format_exc()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "failed.json").write_text(json.dumps(payload, indent=2))
    return JobFailure(job=run_dir.name, kind=kind, error=str(exc).splitlines()[0] if str(exc) else kind)


def hydra_dir() -> Path | None:
    """The running job's `.hydra/` folder (None outside Hydra or with hydra.output_subdir=null)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except ValueError:
        return None
    if hc.output_subdir is None:
        return None
    return Path(hc.runtime.output_dir) / str(hc.output_subdir)


def save_stage_config(values: Any, name: str) -> None:
    """Write a resolved stage config next to Hydra's own `config.yaml`."""
    from omegaconf import OmegaConf

    folder = hydra_dir()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(values), folder / f"{name}.yaml")


def one_line(exc: BaseException) -> str:
    """A Hydra / OmegaConf error as one line (their messages span several)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        lines += [str(cause).strip().splitlines()[0]]
    drop = ("To append to your config use", "Set the environment variable", "full_key:",
            "object_type=", "reference_type=")
    kept = [ln for ln in lines if not ln.startswith(drop)]
    text = " ".join(dict.fromkeys(kept)).split(" Config search path")[0]
    return text or type(exc).__name__


def prepare(cfg: Any, stage: str | None) -> Any:
    """The config a task runs with: the stage's view, validated, saved under `.hydra/`."""
    if stage is None:
        return cfg
    from codeselect.config.schema import validate_stage
    from codeselect.config.stages import current_overrides, stage_view

    view = stage_view(cfg, stage, *current_overrides())
    save_stage_config(validate_stage(view, stage), stage)
    return view


def run_hydra(task: Task, *, config_name: str, conf_dir: Path, stage: str | None = None) -> None:
    """Run `task(cfg, run_dir)` under Hydra with our error conventions (module docstring)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    started = False

    @hydra.main(version_base="1.3", config_path=str(conf_dir.resolve()), config_name=config_name)
    def _main(cfg: Any) -> Any:
        nonlocal started
        started = True
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        multirun = _in_multirun()
        if multirun:
            (run_dir / "failed.json").unlink(missing_ok=True)  # left by an earlier run of this job
        try:
            return task(prepare(cfg, stage), run_dir)
        except UserError as exc:
            if multirun:
                log.error("job failed: %s", exc)
                return _record_failure(run_dir, exc, "user_error")
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)
        except Exception as exc:
            if not multirun:
                raise
            log.exception("job crashed: %s", exc)
            return _record_failure(run_dir, exc, "crash")

    root = str(conf_dir.resolve().parent)  # hydra_plugins/ (our sweeper) sits beside conf/
    if root not in sys.path:
        sys.path.append(root)
    old = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing multi-line reports
    try:
        _main()
    except SweepFailed as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        crashed = any(f.kind == "crash" for f in exc.failures)
        sys.exit(EXIT_CRASH if crashed else EXIT_USER_ERROR)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except Exception as exc:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if started or not isinstance(exc, (HydraException, OmegaConfBaseException, ValueError)):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    finally:
        if old is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = old
