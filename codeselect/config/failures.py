"""What a failed sweep job returns, and the error a sweep with failed jobs ends with (no Hydra
imports here: the entry point catches these before Hydra scans its plugins)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class JobFailure:
    """What a failed sweep job returns to the sweeper (codeselect.config.sweeper)."""

    job: str
    kind: str   # user_error | crash
    error: str


class SweepFailed(Exception):
    """Some jobs of a multirun failed (raised once all of them ran)."""

    def __init__(self, failures: list[JobFailure]) -> None:
        self.failures = failures
        names = "; ".join(f"{f.job} ({f.error})" for f in failures)
        super().__init__(f"{len(failures)} sweep job(s) failed: {names}")
