"""Every stage's W&B run carries selector, sample_num, stage and job id, read back from the offline
run files (WANDB_MODE=offline), and the jobs of a sweep share a group."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from wandb_files import runs_in, spec_problems

REPO = Path(__file__).resolve().parents[1]


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline")
    out = subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def artifact(run: dict, type_: str, used: bool) -> dict:
    (found,) = [a for a in run["artifacts"] if a["type"] == type_ and a["used"] == used]
    return found


def test_every_stage_carries_its_identity_lineage_and_the_joined_summary(tmp_path: Path, shared: Path) -> None:
    """select -> train -> evaluate, offline: each run's config (nested) and tags, the artifacts each
    one logs and uses (a use names the same version as the log: the same digest), and the keys that
    join the stages in the evaluate run's summary and history."""
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": i, "instruction": f"Write a function that adds {i} to x",
                                        "response": f"def add_{i}(x):\n    return x + {i}\n",
                                        "source": "alpha" if i % 4 else "beta"}) + "\n"
                            for i in range(40)))
    sweep = tmp_path / "sweep"
    run("select.py", "-m", "selector=random,kcenter", "sample_num=12", f"data.path={pool}", "plot=false",
        "data.decontaminate=off", f"hydra.sweep.dir={sweep}")
    selects = {r["config"]["selector"]["name"]: r for r in runs_in(sweep)}
    assert set(selects) == {"random", "kcenter"}
    for name, r in selects.items():
        assert r["config"]["sample_num"] == 12 and r["config"]["stage"] == "select"
        assert not any("." in k for k in r["config"])  # nested, no dotted keys
        assert r["config"]["job_id"].endswith(f"{name}-sn12")
        assert {"select", name, "sn12", f"job:{r['config']['job_id']}"} <= set(r["tags"])
        assert r["job_type"] == "select"
        manifest = json.loads((sweep / f"{name}-sn12" / "selection.json").read_text())
        assert r["summary"]["subset/mmd"] == manifest["metrics"]["mmd"]
        assert {"sample_num", "subset/mmd", "time/select_s"} <= r["history_keys"]
        pool_art = artifact(r, "pool", used=True)
        assert pool_art["entries"] == {"pool.jsonl": pool.resolve().as_uri()}
        subset = artifact(r, "dataset", used=False)
        assert {manifest["output_file"], "selection.json", "README.md", "selection_report.md",
                "samples.table.json"} <= set(subset["entries"])
        assert subset["metadata"]["pool_hash"] == manifest["pool_hash"] and subset["metadata"]["sample_num"] == 12
    assert len({r["group"] for r in selects.values()}) == 1 and selects["random"]["group"]  # one group per sweep
    # a select-only sweep's workspace shows its select runs; every panel key is in them
    rep = subprocess.run([sys.executable, "-m", "codeselect.report", str(sweep), "--wandb"], cwd=REPO,
                         env=dict(os.environ, WANDB_MODE="offline"), capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr[-3000:]
    spec = json.loads((sweep / "wandb_workspace.json").read_text())
    assert spec["spec"]["section"]["runSets"][0]["filters"]["filters"][1]["value"] == "select"
    assert spec_problems(spec, list(selects.values())) == []
    # the selection report: both sources, in the pool's (30 / 10) and the subset's own proportions
    picked = Counter(json.loads(line)["source"] for line in (sweep / "random-sn12" / "pool-sn12.jsonl").open())
    report = json.loads((sweep / "random-sn12" / "selection_report.json").read_text())
    rows = {r["value"]: r for r in report["composition"]["rows"]}
    assert {v: (r["pool"], r["subset"]) for v, r in rows.items()} == {
        "alpha": (30, picked["alpha"]), "beta": (10, picked["beta"])}
    assert rows["beta"]["pool_frac"] == 0.25 and rows["beta"]["subset_frac"] == round(picked["beta"] / 12, 6)
    # the dataset card's YAML metadata is the manifest's
    import yaml

    manifest = json.loads((sweep / "random-sn12" / "selection.json").read_text())
    card = yaml.safe_load((sweep / "random-sn12" / "README.md").read_text().split("---\n")[1])["codeselect"]
    assert card["pool"]["hash"] == manifest["pool_hash"] and card["pool"]["path"] == str(pool)
    assert card["selector"] == {"name": "random", "params": manifest["selector_info"]["params"]}
    assert (card["seed"], card["sample_num"], card["decontamination"]) == (42, 12, {"mode": "off"})

    selection = sweep / "random-sn12" / "pool-sn12.jsonl"
    train_dir = tmp_path / "train"
    run("train.py", "experiment=tiny", f"data.path={selection}", "trainer.max_steps=2",
        "trainer.enable_progress_bar=false", f"hydra.run.dir={train_dir}")
    (train,) = runs_in(train_dir)
    assert train["config"]["selector"]["name"] == "random" and train["config"]["sample_num"] == 12
    assert train["config"]["stage"] == "train" and {"train", "random", "sn12"} <= set(train["tags"])
    assert train["config"]["job_id"].endswith("train") and "train/loss" in train["history_keys"]
    assert "final_loss" in train["summary"] and train["summary"]["train/steps"] == 2
    used = artifact(train, "dataset", used=True)  # the subset the select run logged, by its digest
    assert used["digest"] == artifact(selects["random"], "dataset", used=False)["digest"]
    model = artifact(train, "model", used=False)
    assert set(model["entries"].values()) == {(train_dir / "checkpoint" / f).resolve().as_uri()
                                              for f in model["entries"]}  # references, no upload

    eval_dir = tmp_path / "eval"
    run("evaluate.py", f"model={train_dir / 'checkpoint'}", "benchmark=mbpp",
        f"benchmark.path={shared / 'data/evalplus/MbppPlus-v0.2.0.jsonl'}", "limit=1",
        "generation.max_new_tokens=8", f"root={tmp_path / 'gens'}", f"hydra.run.dir={eval_dir}")
    (ev,) = runs_in(eval_dir)
    assert ev["config"]["selector"]["name"] == "random" and ev["config"]["sample_num"] == 12
    assert ev["config"]["stage"] == "evaluate" and {"evaluate", "random", "sn12", "mbpp"} <= set(ev["tags"])
    assert ev["config"]["job_id"] == train["config"]["job_id"]  # the model's training job
    assert f"job:{train['config']['job_id']}" in ev["tags"]
    assert "pass@1/base" in ev["summary"]
    assert artifact(ev, "model", used=True)["digest"] == model["digest"]
    evaluation = artifact(ev, "evaluation", used=False)
    assert any(name.endswith("_eval_results.json") for name in evaluation["entries"])
    assert "summary.json" in evaluation["entries"]
    # the evaluate run's summary joins the stages; its history puts pass@1 against sample_num
    summary = json.loads((eval_dir / "summary.json").read_text())
    train_json = json.loads((train_dir / "train.json").read_text())
    joined = ev["summary"]
    assert joined["selector"] == "random" and joined["sample_num"] == 12 and joined["seed"] == 42
    assert joined["subset/mmd"] == selects["random"]["summary"]["subset/mmd"]
    assert joined["train/final_loss"] == train_json["final_loss"] and joined["train/steps"] == 2
    assert joined["mbpp/pass@1/base"] == summary["pass@1"]["base"]
    assert {"sample_num": 12, "mbpp/pass@1/base": summary["pass@1"]["base"]}.items() <= \
        next(row for row in ev["history"] if "mbpp/pass@1/base" in row).items()


def test_a_crashed_training_run_leaves_a_flushed_csv(tmp_path: Path, monkeypatch) -> None:
    """`finally` closes Lightning's logger: after a crash mid-training the CSV has the steps done."""
    import lightning.pytorch as pl
    import pytest
    from hydra import compose, initialize_config_dir

    from codeselect.config.stages import stage_view
    from codeselect.train.run import run_training

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"id": i, "instruction": f"Task {i}", "response": f"x = {i}\n"}) + "\n"
                            for i in range(16)))
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = stage_view(compose("train", overrides=["experiment=tiny", f"data.path={data}", "logger=csv",
                                                     "trainer.enable_progress_bar=false"]), "train")

    class Boom(pl.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step >= 3:
                raise RuntimeError("boom")

    real_trainer = pl.Trainer
    monkeypatch.setattr(pl, "Trainer", lambda *a, callbacks=(), **kw: real_trainer(
        *a, callbacks=[*callbacks, Boom()], **kw))
    with pytest.raises(RuntimeError, match="boom"):
        run_training(cfg, tmp_path / "run")
    rows = (tmp_path / "run" / "logs" / "metrics.csv").read_text().splitlines()
    assert "train/loss" in rows[0] and len(rows) == 1 + 3  # header + the 3 steps before the crash
