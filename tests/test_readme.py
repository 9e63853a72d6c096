"""The README's commands: every `python <entry>.py ...` line composes and passes its schemas, and the
CPU ones run as printed (the cheap ones here, `pipeline.py experiment=tiny` and the 10K selection
with `-m slow`)."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENTRIES = ("select", "train", "evaluate", "pipeline")


def readme_commands() -> list[list[str]]:
    """Every `python <entry>.py ...` line of the README's bash blocks, as argv (comments dropped)."""
    text = (REPO / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if re.match(r"python (select|train|evaluate|pipeline)\.py\b", line):
                out.append(shlex.split(line)[1:])
    return out


def run(*argv: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline")
    return subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_readme_shows_every_entry_point() -> None:
    scripts = {argv[0] for argv in readme_commands()}
    assert scripts == {f"{e}.py" for e in ENTRIES}


@pytest.mark.parametrize("argv", readme_commands(), ids=lambda a: " ".join(a)[:80])
def test_readme_command_composes_and_validates(argv: list[str], tmp_path: Path) -> None:
    """As printed (placeholders `<...>` filled in): Hydra accepts the overrides and every stage's
    schema accepts the values."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from codeselect.cli import model_argv
    from codeselect.config.schema import validate_stage
    from codeselect.config.stages import stage_view

    entry = argv[0][:-3]
    args = [re.sub(r"<[^>]+>", "x", a) for a in argv[1:] if a != "-m"]
    if "-m" in argv:  # a sweep: its first job
        args = [re.sub(r"^([^=\[]+=[^,\[]*),.*$", r"\1", a) for a in args]
    args = model_argv(args, REPO / "conf")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name=entry, overrides=args, return_hydra_config=True)
    groups = list(OmegaConf.to_container(cfg.hydra.runtime.choices).keys())
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    if entry == "pipeline":
        from codeselect.pipeline import stage_configs

        stage_configs(cfg, tmp_path / "job")
    else:
        validate_stage(stage_view(cfg, entry, args, groups), entry)


def test_select_accepts_the_paper_recipe() -> None:
    out = run("select.py", "experiment=paper", "data.path=pool.jsonl", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    assert "name: mpnet" in out.stdout and "sample_num: 10000" in out.stdout


def test_train_demo_as_printed_learns(tmp_path: Path) -> None:
    """`python train.py experiment=tiny data.path=<selection>`: 30 steps on the CPU, the loss falls
    (the paper's schedule, 100 warm-up steps at 5e-5, would leave it at ~6.9)."""
    sel = tmp_path / "stdlib-py311-sn10K.jsonl"
    import gzip

    rows = [json.loads(line) for _, line in zip(range(300), gzip.open(
        REPO.parent / "shared/data/instruct/code-instruct-15k.jsonl.gz", "rt"))] \
        if (REPO.parent / "shared/data/instruct/code-instruct-15k.jsonl.gz").is_file() else [
        {"id": i, "instruction": f"Write a function that returns {i} times x",
         "response": f"def times_{i}(x):\n    return {i} * x\n"} for i in range(300)]
    sel.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (argv,) = [a for a in readme_commands() if a[0] == "train.py" and "experiment=tiny" in a]
    args = [f"data.path={sel}" if a.startswith("data.path=") else a for a in argv[1:]]
    out = run(argv[0], *args, "logger=csv", "trainer.enable_progress_bar=false",
              f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "train.json").read_text())
    assert summary["steps"] == 30
    assert summary["final_loss"] < summary["initial_loss"] - 0.5, summary["losses"]
    # the trained folder is a model= for train.py (DESIGN.md: model=<name|path>)
    again = run("train.py", f"model={tmp_path / 'run' / 'checkpoint'}", "strategy=single",
                f"data.path={sel}", "trainer.max_steps=2", "optim.warmup_steps=0", "batch_size=2",
                "data.max_length=256", "checkpoint_every_n_steps=0", "logger=none",
                "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads((tmp_path / "again" / "train.json").read_text())
    assert second["model"] == "hf" and second["steps"] == 2
    assert second["initial_loss"] < summary["initial_loss"] - 0.5  # it starts from the trained weights


@pytest.mark.slow
def test_pipeline_tiny_as_printed(tmp_path: Path) -> None:
    """`python pipeline.py experiment=tiny`, offline, nothing but the run dir added."""
    out = run("pipeline.py", "experiment=tiny", f"hydra.run.dir={tmp_path / 'run'}", timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    job = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert set(job["pass@1"]) == {"humaneval"} and job["train_final_loss"] is not None
    summary = json.loads((tmp_path / "run" / "eval" / "humaneval" / "summary.json").read_text())
    assert summary["n_tasks"] == 3


@pytest.mark.slow
def test_select_default_as_printed(tmp_path: Path) -> None:
    """`python select.py selector=ours sample_num=10000` (what `make select` runs)."""
    out = run("select.py", "selector=ours", "sample_num=10000", f"hydra.run.dir={tmp_path / 'run'}",
              timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "selection.json").read_text())
    assert manifest["sample_num"] == 10000 == len(set(manifest["selected_ids"]))
    report = json.loads((tmp_path / "run" / "selection_report.json").read_text())  # what was picked
    assert sum(r["subset"] for r in report["composition"]["rows"]) == 10000
    assert (tmp_path / "run" / "README.md").read_text().startswith("---\n")
