"""`report --wandb` never waits on W&B: online with no answer, the spec is written all the same.
(The spec's panels against real offline runs: tests/test_sweeps.py and tests/test_tracking.py.)"""
from __future__ import annotations

import json
import time
from pathlib import Path

import yaml


def fake_select_sweep(root: Path) -> None:
    """Two select jobs of a Hydra multirun, as the files the workspace reads."""
    for selector, k in (("ours", 10), ("random", 20)):
        job = root / f"{selector}-sn{k}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"logger": {"project": "p", "group": None}}))
        (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
            {"hydra": {"mode": "MULTIRUN", "runtime": {"output_dir": str(job)}}}))
        (job / "selection.json").write_text(json.dumps({
            "selector": selector, "sample_num": k, "metrics": {"mmd": 0.1, "coverage_mean_max_sim": 0.5},
            "timings": {"select_s": 1.0}, "config": {"seed": 1}}))


def test_online_without_an_answer_the_spec_is_written_in_time(tmp_path: Path, monkeypatch) -> None:
    from codeselect import workspace

    _, ws = workspace._api()

    fake_select_sweep(tmp_path / "multirun" / "2026-01-01_00-00-00")
    monkeypatch.setattr("codeselect.tracking.wandb_mode", lambda mode: "online")
    monkeypatch.setenv("WANDB_ENTITY", "someone")
    monkeypatch.setattr(ws.Workspace, "save", lambda self: time.sleep(30))  # a server that never answers
    t0 = time.perf_counter()
    done = workspace.publish(tmp_path / "multirun" / "2026-01-01_00-00-00", timeout_s=1.0)
    assert time.perf_counter() - t0 < 15
    assert done["url"] is None and "no answer from W&B within 1 s" in done["message"]
    spec = json.loads(done["spec"].read_text())
    filters = spec["spec"]["section"]["runSets"][0]["filters"]["filters"]
    assert [(f["key"]["name"], f["value"]) for f in filters] == [("group", "multirun-2026-01-01_00-00-00"),
                                                                 ("jobType", "select")]
    assert spec["project"] == "p" and done["preview"].is_file()
