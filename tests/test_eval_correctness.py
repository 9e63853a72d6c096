"""Scoring: published results reproduce, sanitize matches evalplus's output, bad input exits 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from codeselect.errors import UserError
from codeselect.evaluation.benchmarks import HUMAN_EVAL_FALLBACK, load_benchmark
from codeselect.evaluation.reproduce import check_file, discover
from codeselect.evaluation.correctness import (load_samples, pass_at_k, sanitize_samples, score,
                                           summarize)


@pytest.fixture(scope="module")
def published(shared):
    return shared / "reference/evalplus_results"


def _cli(repo, tmp_path, *args):
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, str(repo / "evaluate.py"), *args,
                           f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)


def test_rescoring_published_subset_matches(published, mbpp, cache_dir):
    pub = discover(published, ["mbpp"], ["ours"], ["10K"])[0]
    check = check_file(pub, mbpp, cache_dir=cache_dir, limit=20)
    assert check.n_tasks == 20
    assert len(check.base_diff) <= 1 and len(check.plus_diff) <= 1, check
    assert check.sanitize_diff == []
    assert abs(check.ours["base"] - check.published["base"]) <= 1 / 20 + 1e-9


def test_sanitize_reproduces_published_sanitized_files(published, mbpp, shared):
    humaneval = load_benchmark("humaneval", str(shared / "data/evalplus/HumanEvalPlus-v0.1.10.jsonl"))
    for bench in (mbpp, humaneval):
        pub = discover(published, [bench.name], ["random"], ["5K"])[0]
        raw = load_samples(pub.raw, bench)[:40]
        expected = {s["task_id"]: s["solution"] for s in load_samples(pub.sanitized, bench)}
        ours = sanitize_samples(raw, bench)
        assert any(r["solution"] != o["solution"] for r, o in zip(raw, ours))  # it did something
        assert [o["solution"] for o in ours] == [expected[o["task_id"]] for o in ours]


@pytest.mark.parametrize("content, where", [
    ('{"task_id": "Mbpp/2", "solution": "x"}\n{"task_id": "Mbpp/3", "solution": \n', ":2"),
    ('{"task_id": "Mbpp/2"}\n', "key 'solution'"),
    ('{"solution": "def f(): pass"}\n', "key 'task_id'"),
    ('{"task_id": "Mbpp/99999", "solution": "x"}\n', "unknown task id"),
    ('[1, 2]\n', "expected a JSON object"),
    ("", "no samples"),
])
def test_bad_samples_raise_user_error(tmp_path, mbpp, content, where):
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(UserError, match=where.replace("'", ".")) as info:
        load_samples(f, mbpp)
    assert str(f) in str(info.value)


def test_bad_samples_file_exits_2_with_one_line(repo, shared, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "Mbpp/2", "solution": "def f(): pass"}\n{"task_id": "Mbpp/2" oops\n')
    res = _cli(repo, tmp_path, "benchmark=mbpp",
               f"benchmark.path={shared / 'data/evalplus/MbppPlus-v0.2.0.jsonl'}",
               f"samples={bad}", "logger=none")
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"{bad}:2" in lines[0]
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "run" / "summary.json").exists()


def test_cli_scores_raw_samples_and_writes_summary(repo, shared, published, tmp_path):
    raw = sorted((published / "mbpp" / "ours").glob("*sn5K*_temp0.0.jsonl"))[0]
    samples = tmp_path / "gen.jsonl"
    samples.write_text("".join(raw.read_text().splitlines(keepends=True)[:4]))
    res = _cli(repo, tmp_path, "benchmark=mbpp",
               f"benchmark.path={shared / 'data/evalplus/MbppPlus-v0.2.0.jsonl'}",
               f"samples={samples}", "logger=csv")
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    results = json.loads((run / "gen-sanitized_eval_results.json").read_text())
    assert set(results) == {"date", "hash", "eval"} and len(results["eval"]) == 4
    assert (run / "gen-sanitized.jsonl").is_file()
    assert summary["benchmark"] == "mbpp" and summary["n_tasks"] == 4
    rows = [r[0] for r in results["eval"].values()]
    assert summary["pass@1"]["base"] == sum(r["base_status"] == "pass" for r in rows) / 4
    assert summary["pass@1"]["plus"] == sum(r["base_status"] == r["plus_status"] == "pass"
                                            for r in rows) / 4
    assert "pass@k" not in summary  # one sample per task
    assert (run / "logs" / "summary.json").is_file()  # the tracker got the summary


def test_pass_at_k_with_several_samples():
    ev = {"T/0": [{"base_status": s, "plus_status": p} for s, p in
                  [("pass", "pass"), ("pass", "fail"), ("fail", "fail"), ("fail", None)][:3]],
          "T/1": [{"base_status": "fail", "plus_status": "fail"}] * 3}
    ks = pass_at_k({"eval": ev}, (1, 2))
    assert ks["pass@1"] == {"base": pytest.approx((2 / 3 + 0) / 2), "plus": pytest.approx(1 / 6)}
    assert ks["pass@2"]["base"] == pytest.approx((1 - 0 / 3) / 2)  # T/0 certain with 2 draws


def test_offline_human_eval_fallback_is_base_only_and_labelled(cache_dir):
    bench = load_benchmark("humaneval", None, download=False)
    assert bench.base_only and bench.source == HUMAN_EVAL_FALLBACK and len(bench.problems) == 164
    p = bench.problems["HumanEval/53"]
    samples = [{"task_id": "HumanEval/53", "solution": p["prompt"] + p["canonical_solution"]},
               {"task_id": "HumanEval/0", "solution": bench.problems["HumanEval/0"]["prompt"]
                + "    return False\n"}]
    res = score(samples, bench, cache_dir=cache_dir)
    summary = summarize(res, bench)
    assert summary["pass@1"] == {"base": 0.5, "plus": None}
    assert summary["base_tests_only"] is True and summary["dataset_source"] == HUMAN_EVAL_FALLBACK


def test_cli_pass_at_1_is_the_fraction_of_correct_solutions(repo, shared, mbpp, tmp_path):
    """Known-correct code passes and known-wrong code fails, end to end through the CLI, the
    sandboxed sanitizer and the grader: an evaluator that fails (or passes) everything fails this."""
    ids = list(mbpp.problems)[:4]
    canonical = {t: mbpp.problems[t]["prompt"] + mbpp.problems[t]["canonical_solution"] for t in ids}
    wrong_entry = mbpp.problems[ids[3]]["entry_point"]
    rows = [{"task_id": t, "solution": canonical[t]} for t in ids[:3]]
    rows.append({"task_id": ids[3], "solution": f"def {wrong_entry}(*args):\n    return None\n"})
    samples = tmp_path / "known.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = _cli(repo, tmp_path, "benchmark=mbpp",
               f"benchmark.path={shared / 'data/evalplus/MbppPlus-v0.2.0.jsonl'}",
               f"samples={samples}", "logger=none")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["n_tasks"] == 4 and summary["pass@1"] == {"base": 0.75, "plus": 0.75}
    results = json.loads((tmp_path / "run" / "known-sanitized_eval_results.json").read_text())
    assert [results["eval"][t][0]["base_status"] for t in ids] == ["pass", "pass", "pass", "fail"]
