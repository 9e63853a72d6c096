"""Hydra multirun sweeps and the report: real runs on a slice of the embedded default pool (its first
1,500 records: embedding all 10,000 takes ~4 min here, and `select.py` on the whole default pool is
the README's command, tested in tests/test_readme.py) and the tiny pipeline."""
from __future__ import annotations

import copy
import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from wandb_files import runs_in, spec_problems


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default_pool_slice(cache_dir: Path, tmp_path_factory) -> Path:
    """The first 1,500 records of the embedded default pool (built once into the test cache)."""
    from codeselect.config import conf_defaults
    from codeselect.stdlib_pool import build_stdlib_pool

    full = build_stdlib_pool(cache_dir / "pools", min_pairs=int(conf_defaults("data/stdlib")["min_pairs"]))
    out = tmp_path_factory.mktemp("pool") / "default-1500.jsonl"
    with open(full, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        dst.writelines(itertools.islice(src, 1500))
    return out


def run(script: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline")
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_selector_grid_multirun_and_report(tmp_path: Path, default_pool_slice: Path) -> None:
    sweep = tmp_path / "sweep"
    # 3 selectors x 2 sizes; 20000 is larger than the pool: those jobs fail, the sweep goes on
    out = run("select.py", "-m", "selector=ours,random,kcenter", "sample_num=100,20000",
              f"data.path={default_pool_slice}", "logger=csv", "plot=false", f"hydra.sweep.dir={sweep}")
    # every job ran; then the sweep exits 2 (user errors only), naming the failed jobs on one line
    assert out.returncode == 2, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 3 sweep job(s) failed: ") and "kcenter-sn20000" in last
    assert "ours-sn20000" in last and "random-sn20000" in last
    manifests = sorted(sweep.glob("*/selection.json"))
    assert [p.parent.name for p in manifests] == ["kcenter-sn100", "ours-sn100", "random-sn100"]
    for p in manifests:
        m = json.loads(p.read_text())
        assert len(m["selected_ids"]) == m["sample_num"] == len(set(m["selected_ids"]))
        assert (p.parent / m["output_file"]).is_file()
    failed = sorted(p.parent.name for p in sweep.glob("*/failed.json"))
    assert failed == ["kcenter-sn20000", "ours-sn20000", "random-sn20000"]

    rep = subprocess.run([sys.executable, "-m", "codeselect.report", str(sweep)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    rows = list(csv.DictReader(open(sweep / "report.csv")))
    assert [(r["selector"], r["sample_num"]) for r in rows] == [("ours", "100"), ("random", "100"),
                                                               ("kcenter", "100")]
    assert all(0 < float(r["coverage_mean_max_sim"]) <= 1 for r in rows)
    md = (sweep / "report.md").read_text()
    assert "3 failed jobs" in md and "larger than the pool" in md and "![subset_metrics.png]" in md
    png = sweep / "subset_metrics.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_report_on_an_empty_folder_is_a_user_error(tmp_path: Path) -> None:
    rep = subprocess.run([sys.executable, "-m", "codeselect.report", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert rep.returncode == 2 and rep.stderr.startswith("error: no selection.json")


def test_full_pipeline_sweep_with_the_tiny_model(tmp_path: Path, shared: Path, default_pool_slice: Path) -> None:
    sweep = tmp_path / "pipe"
    mbpp = shared / "data/evalplus/MbppPlus-v0.2.0.jsonl"
    # stage keys are ordinary overrides of the one config tree
    out = run("pipeline.py", "-m", "experiment=tiny", "selector=ours,random", "sample_num=100",
              f"data.path={default_pool_slice}", f"hydra.sweep.dir={sweep}", "seed=42",
              "train.trainer.max_steps=10", "evaluate.limit=2", "evaluate.generation.max_new_tokens=16",
              "benchmarks=[mbpp]", f"benchmark_options.mbpp.path={mbpp}", timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    for job in ("ours-sn100", "random-sn100"):
        summary = json.loads((sweep / job / "eval/mbpp/summary.json").read_text())
        assert summary["benchmark"] == "mbpp" and summary["n_tasks"] == 2
        assert summary["pass@1"]["base"] == 0.0  # a random-init tiny LM solves nothing
        train = json.loads((sweep / job / "train/train.json").read_text())
        assert train["steps"] == 10 and (sweep / job / "train/checkpoint/config.json").is_file()
        assert not (sweep / job / "failed.json").exists()
        # the resolved stage configs are in the job's .hydra/
        hydra = sweep / job / ".hydra"
        assert {"select.yaml", "train.yaml", "evaluate-mbpp.yaml"} <= {p.name for p in hydra.iterdir()}
        staged = (hydra / "train.yaml").read_text()
        assert "max_steps: 10" in staged and "model:\n  name: tiny" in staged
        assert f"path: {sweep / job / 'select'}" in staged
    env = dict(os.environ, WANDB_MODE="offline")
    rep = subprocess.run([sys.executable, "-m", "codeselect.report", str(sweep), "--wandb"], cwd=REPO,
                         capture_output=True, text=True, timeout=120, env=env)
    assert rep.returncode == 0, rep.stderr
    rows = list(csv.DictReader(open(sweep / "report.csv")))
    assert {r["selector"] for r in rows} == {"ours", "random"}
    assert all(r["mbpp_base"] == "0.0" for r in rows)
    assert (sweep / "pass_at_1.png").is_file()

    # the W&B workspace, built offline: every panel's key is in the runs its filter selects
    assert "W&B is offline" in rep.stdout and f"python -m codeselect.report {sweep} --wandb --sync" in rep.stdout
    spec = json.loads((sweep / "wandb_workspace.json").read_text())
    runs = runs_in(sweep)
    assert sorted(r["job_type"] for r in runs) == sorted(["select", "train", "evaluate", "job"] * 2)
    assert not [k for r in runs for k in r["config"] if "." in k]  # configs nested, no dotted keys
    assert spec_problems(spec, runs) == []
    panels = [p for sec in spec["spec"]["section"]["panelBankConfig"]["sections"] for p in sec["panels"]]
    kinds = {p["viewType"] for p in panels}
    assert {"Run History Line Plot", "Parallel Coordinates Plot", "Scatter Plot", "Parameter Importance"} <= kinds
    lines = {p["config"]["metrics"][0] for p in panels if p["viewType"] == "Run History Line Plot"}
    assert {"mbpp/pass@1/base", "mbpp/pass@1/plus", "subset/mmd", "time/select_s", "time/train_s",
            "train/loss"} <= lines
    # a renamed metric is caught: the panels that read it are named
    renamed_runs = copy.deepcopy(runs)
    for run_ in renamed_runs:
        for row in [run_["summary"], *run_["history"]]:
            if "subset/mmd" in row:
                row["subset/mmd_v2"] = row.pop("subset/mmd")
    renamed = spec_problems(spec, renamed_runs)
    assert renamed and all("subset/mmd" in p for p in renamed)
    assert any(p.startswith("subset vs sample_num / mmd:") for p in renamed)
    assert any(p.startswith("runs table:") for p in renamed)
    # the job run's summary joins the stages, as pipeline.json says
    for job in ("ours-sn100", "random-sn100"):
        joined = json.loads((sweep / job / "pipeline.json").read_text())["summary"]
        (job_run,) = [r for r in runs if r["job_type"] == "job" and r["config"]["selector"]["name"] == job[:-6]]
        assert {k: job_run["summary"][k] for k in joined} == joined
        assert joined["train/steps"] == 10 and joined["mbpp/pass@1/base"] == 0.0 and joined["sample_num"] == 100
    png = sweep / "wandb_workspace.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "![workspace preview](wandb_workspace.png)" in \
        (sweep / "report.md").read_text()


def test_a_sweep_over_any_key_gives_each_job_its_own_dir(tmp_path: Path) -> None:
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": i, "instruction": f"Write function {i}",
                                        "response": f"def f{i}():\n    return {i}\n"}) + "\n"
                            for i in range(30)))
    sweep = tmp_path / "sweep"
    # parallel jobs (joblib): every job runs, the failures come back to the sweep, which exits 2
    out = run("select.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "selector=random",
              "seed=1,2,3", "sample_num=10,45", f"data.path={pool}", "logger=none", "plot=false",
              "data.decontaminate=off", f"hydra.sweep.dir={sweep}")
    assert out.returncode == 2, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 3 sweep job(s) failed: random-sn45-seed1 (key 'sample_num': 45 is larger")
    jobs = sorted(p.parent.name for p in sweep.glob("*/selection.json"))
    assert jobs == ["random-sn10-seed1", "random-sn10-seed2", "random-sn10-seed3"]
    assert sorted(p.parent.name for p in sweep.glob("*/failed.json")) == [
        "random-sn45-seed1", "random-sn45-seed2", "random-sn45-seed3"]
    import random

    for seed in (1, 2, 3):  # each job's subset is its own seed's draw (SYSTEM.md: random.sample)
        m = json.loads((sweep / f"random-sn10-seed{seed}" / "selection.json").read_text())
        assert m["selected_ids"] == [str(i) for i in random.Random(seed).sample(range(30), 10)]
