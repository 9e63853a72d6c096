"""Paired significance: exact McNemar against binomial sums written out by hand (and scipy), the
bootstrap interval against a plain resampling loop and the normal approximation, and the report."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from codeselect.significance import (bootstrap_diff_ci, compare, mcnemar_exact,
                                     outcomes_from_eval_results, pairwise)


@pytest.mark.parametrize("b, c, expected", [
    (0, 0, 1.0),                                  # no discordant task: nothing to test
    (1, 0, 1.0),                                  # 2 * 1/2
    (3, 0, 0.25),                                 # 2 * C(3,0) / 2^3
    (0, 3, 0.25),
    (6, 0, 0.03125),                              # 2 * 1 / 64
    (5, 1, 2 * (1 + 6) / 64),                     # 2 * (C(6,0) + C(6,1)) / 2^6
    (10, 2, 2 * (1 + 12 + 66) / 4096),            # 2 * (C(12,0..2)) / 2^12 = 0.0386
    (2, 10, 2 * (1 + 12 + 66) / 4096),
    (4, 4, 1.0),                                  # 2 * 163/256 > 1
    (7, 3, 2 * (1 + 10 + 45 + 120) / 1024),       # 0.34375
])
def test_mcnemar_exact_hand_computed(b, c, expected):
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_exact_matches_scipy_binomtest():
    stats = pytest.importorskip("scipy.stats")
    for b in range(0, 25, 3):
        for c in range(0, 25, 4):
            if b + c:
                ref = stats.binomtest(min(b, c), b + c, 0.5).pvalue
                assert mcnemar_exact(b, c) == pytest.approx(ref, rel=1e-9, abs=1e-15), (b, c)


def test_bootstrap_degenerate_cases():
    assert bootstrap_diff_ci([1] * 30, [0] * 30) == (1.0, 1.0)
    assert bootstrap_diff_ci([1, 0, 1, 1, 0], [1, 0, 1, 1, 0]) == (0.0, 0.0)
    assert all(math.isnan(x) for x in bootstrap_diff_ci([], []))


def _paired(n: int, a_only: int, b_only: int, both: int) -> tuple[list[int], list[int]]:
    a = [1] * a_only + [0] * b_only + [1] * both
    b = [0] * a_only + [1] * b_only + [1] * both
    return a + [0] * (n - len(a)), b + [0] * (n - len(b))


def test_bootstrap_matches_resampling_the_task_list():
    """The three-count shortcut has the distribution of resampling tasks with replacement."""
    a, b = _paired(164, 14, 6, 90)
    d = np.array(a) - np.array(b)
    rng = np.random.default_rng(123)
    diffs = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(8000)]
    ref = np.quantile(diffs, [0.025, 0.975])
    lo, hi = bootstrap_diff_ci(a, b)
    assert abs(lo - ref[0]) <= 0.0065 and abs(hi - ref[1]) <= 0.0065  # within one task of 164


def test_bootstrap_matches_normal_approximation():
    a, b = _paired(400, 60, 20, 200)         # mean diff 0.1, var 80/400 - 0.01 = 0.19
    half = 1.96 * math.sqrt(0.19 / 400)       # 0.0427
    lo, hi = bootstrap_diff_ci(a, b)
    assert lo == pytest.approx(0.1 - half, abs=0.005) and hi == pytest.approx(0.1 + half, abs=0.005)
    assert bootstrap_diff_ci(a, b) == bootstrap_diff_ci(a, b)  # seeded


def test_compare_pairs_by_task_and_counts_discordant():
    a = {"t1": True, "t2": True, "t3": False, "t4": True, "t5": False, "only-a": True}
    b = {"t1": True, "t2": False, "t3": False, "t4": False, "t5": True}
    t = compare("mbpp", "base", "A", a, "B", b)
    assert (t.n_tasks, t.a_only, t.b_only) == (5, 2, 1)
    assert (t.pass_a, t.pass_b, t.diff) == pytest.approx((0.6, 0.4, 0.2))
    assert t.p_value == pytest.approx(1.0)                      # 2 * (1 + 3) / 8, capped
    assert t.ci_low <= 0.2 <= t.ci_high


def _eval_results(path: Path, statuses: dict[str, tuple[str, str | None]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"date": "x", "hash": "y", "eval": {
        t: [{"task_id": t, "solution": "", "base_status": b, "plus_status": p}]
        for t, (b, p) in statuses.items()}}))
    return path


def test_outcomes_from_eval_results(tmp_path):
    path = _eval_results(tmp_path / "r_eval_results.json", {
        "a": ("pass", "pass"), "b": ("pass", "fail"), "c": ("fail", "pass"), "d": ("timeout", "fail")})
    out = outcomes_from_eval_results(path)
    assert out["base"] == {"a": True, "b": True, "c": False, "d": False}
    assert out["plus"] == {"a": True, "b": False, "c": False, "d": False}  # plus = base and plus
    base_only = outcomes_from_eval_results(_eval_results(tmp_path / "h_eval_results.json",
                                                         {"a": ("pass", None)}))
    assert base_only["plus"] == {} and pairwise("humaneval", {"x": base_only, "y": base_only},
                                                ("plus",)) == []


def test_report_has_significance_for_each_pair(tmp_path):
    from codeselect.report import make_report

    tasks = [f"Mbpp/{i}" for i in range(20)]
    solved = {"ours": set(tasks[:10]), "random": set(tasks[:3]), "kcenter": set(tasks[:10])}
    for selector, ok in solved.items():
        job = tmp_path / f"{selector}-sn100"
        (job / ".hydra").mkdir(parents=True)
        (job / "select").mkdir()
        (job / "select" / "selection.json").write_text(json.dumps(
            {"selector": selector, "sample_num": 100, "metrics": {}, "timings": {}}))
        res = _eval_results(job / "eval" / "mbpp" / "x-sanitized_eval_results.json",
                            {t: ("pass" if t in ok else "fail", "pass" if t in ok else "fail") for t in tasks})
        (job / "eval" / "mbpp" / "summary.json").write_text(json.dumps(
            {"benchmark": "mbpp", "pass@1": {"base": len(ok) / 20, "plus": len(ok) / 20},
             "eval_results": str(res)}))
    md = make_report(tmp_path).read_text()
    rows = list(csv.DictReader(open(tmp_path / "significance.csv")))
    assert len(rows) == 3 * 2  # 3 pairs x (base, plus)
    row = next(r for r in rows if (r["a"], r["b"], r["metric"]) == ("ours-sn100", "random-sn100", "base"))
    assert (int(row["a_only"]), int(row["b_only"]), int(row["n_tasks"])) == (7, 0, 20)
    assert float(row["p_value"]) == pytest.approx(2 / 2 ** 7)   # 0.015625
    assert float(row["diff"]) == pytest.approx(0.35)
    same = next(r for r in rows if (r["a"], r["b"]) == ("ours-sn100", "kcenter-sn100"))
    assert float(same["p_value"]) == 1.0 and float(same["ci_low"]) == float(same["ci_high"]) == 0.0
    assert "Is the difference real?" in md and "| mbpp | base | ours-sn100 | random-sn100 | 20 |" in md
    assert (tmp_path / "pass_at_1_diff.png").stat().st_size > 1000


def test_report_adds_an_evaluation_only_row_for_the_base_model(tmp_path):
    """An evaluation outside the selection jobs (the untuned model) is a row and takes part in the
    pairwise tests."""
    from codeselect.report import collect, make_report

    tasks = [f"HumanEval/{i}" for i in range(10)]
    job = tmp_path / "ours-sn50"
    (job / ".hydra").mkdir(parents=True)
    (job / "select").mkdir()
    (job / "select" / "selection.json").write_text(json.dumps({"selector": "ours", "sample_num": 50}))
    for where, ok, samples in [(job / "eval" / "humaneval", tasks[:6], "train--checkpoint_vllm_temp0.0.jsonl"),
                               (tmp_path / "base-humaneval", tasks[:2], "smollm2-135m-instruct_vllm_temp0.0.jsonl")]:
        (where / ".hydra").mkdir(parents=True)
        _eval_results(where / "x_eval_results.json",
                      {t: ("pass" if t in ok else "fail", "pass" if t in ok else "fail") for t in tasks})
        (where / "summary.json").write_text(json.dumps(
            {"benchmark": "humaneval", "pass@1": {"base": len(ok) / 10, "plus": len(ok) / 10},
             "samples": f"/gen/humaneval/{samples}"}))
    rows, _ = collect(tmp_path)
    assert [(r["selector"], r["sample_num"], r["humaneval_base"]) for r in rows] == [
        ("smollm2-135m-instruct", 0, 0.2), ("ours", 50, 0.6)]
    make_report(tmp_path)
    sig = list(csv.DictReader(open(tmp_path / "significance.csv")))
    assert {(r["a"], r["b"]) for r in sig} == {("smollm2-135m-instruct", "ours-sn50")}
    assert int(sig[0]["b_only"]) == 4 and float(sig[0]["p_value"]) == pytest.approx(2 / 16)
    assert "_summaries" not in (tmp_path / "report.csv").read_text()
