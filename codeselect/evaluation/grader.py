"""The trusted grader: evalplus's comparison rules, applied in the host to decoded plain values.

The sandbox only reports what the function returned (`wire`); this module, which alone holds the
expected outputs, decides. Rules, per input in order, as evalplus 0.3.1's `unsafe_execute` does
(its helpers are imported from evalplus itself):
- exact match `out == exp`;
- MBPP special oracles: `are_equivalent` (Mbpp/164) passes any answer, `sum_div` (Mbpp/295) also
  accepts 0, `surface_Area` (Mbpp/581) and `digit_distance_nums` (Mbpp/558) also accept their
  own oracles' values, the set-equality tasks compare `set(out) == set(exp)`, the not-None tasks
  compare a bool answer with `==` and any other with `exp == (out is not None)`;
- HumanEval `find_zero` (HumanEval/32): `|poly(xs, out)| <= atol`, with the trusted copy of xs;
  evalplus 0.3.1 skips its progress counter on that branch, so the check ends with fewer counted
  inputs than it has and is `fail` even when every answer is a zero: kept (every published
  result has HumanEval/32 failed), see `EVALPLUS_FIND_ZERO_NEVER_PASSES`;
- otherwise a float expectation (or list/tuple of floats) gets atol 1e-6 when the task has none
  (and, as in evalplus, keeps it for the task's later inputs); without an exact match and with a
  tolerance, same type, same length and `np.allclose(out, exp, rtol=1e-7, atol)`.
The first failing input ends the check (evalplus's fast check). A run that ended early: an
exception, a load error, a per-input time overrun or an oversized answer is `fail`; a run killed
at its total deadline or that died without answering is `timeout` (evalplus's statuses).
"""
from __future__ import annotations

from typing import Any

from codeselect.evaluation.wire import Opaque, WireError, decode

FAIL_ENDS = ("exception", "load_error", "overrun", "too_large", "protocol")
EVALPLUS_FIND_ZERO_NEVER_PASSES = True  # evalplus 0.3.1's result for HumanEval/32, reproduced


class _NotNone:
    """The worker's answer for not-None tasks when the output was not a bool."""

    def __init__(self, value: bool) -> None:
        self.value = value


def parse_answer(line: str) -> Any:
    """One relayed answer line -> a plain value (Opaque when malformed)."""
    if line.startswith("N "):
        return _NotNone(line[2:] == "1")
    try:
        return decode(line[2:])
    except WireError:
        return Opaque("malformed")


def _matches(dataset: str, entry_point: str, out: Any, exp: Any, inp: list, atol: float
             ) -> tuple[bool, float]:
    """(passed, atol for later inputs) for one answer."""
    import numpy as np
    from evalplus.eval import is_floats
    from evalplus.eval._special_oracle import (MBPP_OUTPUT_NOT_NONE_TASKS,
                                               MBPP_OUTPUT_SET_EQ_TASKS, _digit_distance_nums,
                                               _poly, _surface_Area)

    if isinstance(out, _NotNone):
        if dataset == "mbpp" and entry_point in MBPP_OUTPUT_NOT_NONE_TASKS:
            return bool(exp == out.value), atol
        return False, atol
    exact = out == exp
    if dataset == "mbpp":
        if entry_point == "are_equivalent":
            exact = True
        elif entry_point == "sum_div":
            exact = exact or out == 0
        elif entry_point == "surface_Area":
            exact = exact or abs(out - _surface_Area(*inp)) <= atol
        elif entry_point == "digit_distance_nums":
            exact = exact or out == _digit_distance_nums(*inp)
        elif entry_point in MBPP_OUTPUT_SET_EQ_TASKS:
            exact = set(out) == set(exp)
        elif entry_point in MBPP_OUTPUT_NOT_NONE_TASKS:
            exact = out == exp if isinstance(out, bool) else exp == (out is not None)
    if dataset == "humaneval" and entry_point == "find_zero":
        return bool(abs(_poly(*inp, out)) <= atol), atol
    if atol == 0 and is_floats(exp):
        atol = 1e-6
    if not exact and atol != 0:
        if type(out) != type(exp):
            return False, atol
        if isinstance(exp, (list, tuple)) and len(out) != len(exp):
            return False, atol
        return bool(np.allclose(out, exp, rtol=1e-07, atol=atol)), atol
    return bool(exact), atol


class RunGrader:
    """Grades one run answer by answer, as they arrive (nothing but the current answer is kept):
    `answer` says whether the run should go on, `result` gives evalplus's (status, details)."""

    def __init__(self, dataset: str, entry_point: str, inputs: list, expected: list,
                 atol: float) -> None:
        self.dataset, self.entry_point = dataset, entry_point
        self.inputs, self.expected, self.atol = inputs, expected, atol
        self.find_zero = dataset == "humaneval" and entry_point == "find_zero"
        self.details: list[bool] = []
        self.seen = 0
        self.failed = False

    def answer(self, line: str | bytes) -> bool:
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        i = self.seen
        if self.failed or i >= len(self.inputs):
            self.failed = True
            return False
        self.seen += 1
        try:
            ok, self.atol = _matches(self.dataset, self.entry_point, parse_answer(line),
                                     self.expected[i], self.inputs[i], self.atol)
        except Exception:  # e.g. set() of an unhashable answer, allclose of a string
            ok = False
        if not (ok and self.find_zero and EVALPLUS_FIND_ZERO_NEVER_PASSES):
            self.details.append(ok)  # evalplus does not count a passing find_zero input
        self.failed = not ok
        return ok

    def result(self, end: str) -> tuple[str, list[bool]]:
        """(status, details) once the run ended with `end` (the supervisor's summary)."""
        details = self.details
        if self.failed:
            return "fail", details
        if end == "done" and self.seen == len(self.inputs):
            return ("fail" if self.find_zero and EVALPLUS_FIND_ZERO_NEVER_PASSES else "pass"), details
        if end == "load_error":
            return "fail", details
        if end in FAIL_ENDS or end in ("done", "stopped"):
            return "fail", details + [False]
        return "timeout", details


def grade_run(dataset: str, entry_point: str, inputs: list, expected: list, atol: float,
              run: dict[str, Any]) -> tuple[str, list[bool]]:
    """evalplus's (status, per-input details) for a finished run with its `outputs` kept."""
    g = RunGrader(dataset, entry_point, inputs, expected, atol)
    for line in run["outputs"]:
        if not g.answer(line):
            break
    return g.result(run["end"])
