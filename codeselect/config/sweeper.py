"""Hydra's basic sweeper with two changes a grid needs (`hydra/sweeper=codeselect`, the default).

- A job dir per job: every swept key that the subdir pattern does not already name is appended to
  the job's `hydra.sweep.subdir` (`seed=1,2,3` -> `ours-sn1000-seed1`, ...), so no job overwrites
  another, whatever is swept.
- Failures are counted: a job that fails returns a `JobFailure` (codeselect.cli); once every job has
  run, the sweep raises `SweepFailed` naming them, and the entry point exits non-zero.
Works with any launcher (basic, joblib, submitit): the overrides travel with each job and the
job returns come back to this process.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from omegaconf import OmegaConf

from codeselect.config.failures import JobFailure, SweepFailed


def _key_value(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def job_suffixes(batch: Sequence[Sequence[str]], pattern: str) -> list[str]:
    """Per job: `-<key><value>` (`-seed1`; no `=`, so the dir is a plain override value) for every key whose value differs between jobs and that `pattern`
    (the subdir pattern, unresolved) does not interpolate already."""
    values: dict[str, set[str]] = {}
    for job in batch:
        for ov in job:
            key, value = _key_value(ov)
            if not key.startswith("hydra."):
                values.setdefault(key, set()).add(value)
    named = set(re.findall(r"\$\{([^}:]+)\}", pattern))
    swept = [k for k, v in values.items() if len(v) > 1
             and not any(n == k or n.startswith(k + ".") for n in named)]
    out = []
    for job in batch:
        kv = dict(_key_value(ov) for ov in job)
        out.append("".join(f"-{k}{re.sub(r'[^A-Za-z0-9_.+-]', '_', kv[k])}" for k in swept if k in kv))
    return out


class Sweeper(BasicSweeper):
    """BasicSweeper + a unique job dir per job + a non-zero exit when jobs failed."""

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        pattern = str(OmegaConf.to_container(config.hydra.sweep, resolve=False)["subdir"])
        launch = self.launcher.launch

        def launch_unique(job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
            suffixes = job_suffixes(job_overrides, pattern)
            jobs = [[*job, f"hydra.sweep.subdir='{pattern}{sfx}'"] if sfx else list(job)
                    for job, sfx in zip(job_overrides, suffixes)]
            return launch(jobs, initial_job_idx)

        self.launcher.launch = launch_unique  # type: ignore[method-assign]

    def sweep(self, arguments: list[str]) -> Any:
        returns = super().sweep(arguments)
        failures = []
        for batch in returns:
            for ret in batch:
                value = ret._return_value if hasattr(ret, "_return_value") else None
                if isinstance(value, JobFailure):
                    failures.append(value)
                elif getattr(ret, "status", None) is not None and ret.status.name == "FAILED":
                    failures.append(JobFailure(job=str(ret.working_dir), kind="crash",
                                               error=str(ret._return_value)))
        if failures:
            raise SweepFailed(failures)
        return returns
