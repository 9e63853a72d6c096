"""Shared Hydra entry point: user errors exit 2 in one line; a failing sweep job never kills the sweep."""
from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from codeselect.errors import EXIT_USER_ERROR, UserError

log = logging.getLogger("codeselect")

Task = Callable[[Any, Path], Any]  # (cfg, run_dir) -> result


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def _record_failure(run_dir: Path, exc: BaseException, kind: str) -> None:
    """Leave `failed.json` in a sweep job's dir so the report can list the failure."""
    payload = {"kind": kind, "error": str(exc), "type": type(exc).__name__}
    if kind == "crash":
        payload["traceback"] = traceback.format_exc()
    (run_dir / "failed.json").write_text(json.dumps(payload, indent=2))


def run_hydra(task: Task, *, config_name: str, conf_dir: Path) -> None:
    """Run `task(cfg, run_dir)` under Hydra with our error conventions.

    - a UserError prints `error: <one line>` on stderr and exits 2 (a single run), or is recorded
      as `failed.json` in the job dir and the sweep goes on (multirun);
    - a bad command line (unknown group, bad override) exits 2 as well;
    - any other exception in a multirun job is logged and recorded; the sweep goes on.
    """
    import hydra
    from hydra.core.hydra_config import HydraConfig

    started = False

    @hydra.main(version_base="1.3", config_path=str(conf_dir.resolve()), config_name=config_name)
    def _main(cfg: Any) -> Any:
        nonlocal started
        started = True
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        multirun = _in_multirun()
        try:
            return task(cfg, run_dir)
        except UserError as exc:
            if multirun:
                log.error("job failed: %s", exc)
                _record_failure(run_dir, exc, "user_error")
                return None
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)
        except Exception as exc:
            if not multirun:
                raise
            log.exception("job crashed: %s", exc)
            _record_failure(run_dir, exc, "crash")
            return None

    try:
        _main()
    except SystemExit as exc:
        if exc.code == 1 and not started:  # Hydra rejected the command line or the config
            sys.exit(EXIT_USER_ERROR)
        raise
