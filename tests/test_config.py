"""Bad configuration, as users type it: exit 2, one line naming the key, no output file.

Every selector's and trainer's numeric key gets a wrong type, an out-of-range value and (per
node) an unknown key. The entry points run in this process (`codeselect.cli.run_hydra` with the
real tasks and the real conf/), so the ~100 cases take seconds; tests/test_select_cli.py runs the
scripts themselves.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


def _task(stage: str):
    def task(cfg, run_dir):
        if stage == "select":
            from codeselect.selection import run_selection as run
        elif stage == "train":
            from codeselect.train.run import run_training as run
        elif stage == "evaluate":
            from codeselect.evaluation.run import run_evaluation as run
        else:
            from codeselect.pipeline import run_pipeline as run
        return run(cfg, run_dir)

    return task


def run_entry(stage: str, args: list[str], tmp_path: Path, monkeypatch, capsys) -> tuple[int, str]:
    """Run an entry point in-process: (exit code, stderr)."""
    from codeselect.cli import model_argv, run_hydra

    run_dir = tmp_path / "run"
    argv = model_argv([*args, f"hydra.run.dir={run_dir}", "logger=none"], CONF)
    monkeypatch.setattr(sys, "argv", [f"{stage}.py", *argv])
    code = 0
    try:
        run_hydra(_task(stage), config_name=stage, conf_dir=CONF,
                  stage=None if stage == "pipeline" else stage)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, key: str, tmp_path: Path, *words: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert f"'{key}'" in lines[0], lines[0]
    for w in words:
        assert w in lines[0], lines[0]
    outputs = [p.name for p in (tmp_path / "run").glob("*") if p.is_file() and not p.name.endswith(".log")]
    assert outputs == [], outputs
    assert not (tmp_path / "run" / "checkpoint").exists()


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pool") / "pool.jsonl"
    path.write_text("".join(json.dumps({"id": i, "instruction": f"Write function {i}",
                                        "response": f"def f{i}():\n    return {i}\n"}) + "\n"
                            for i in range(20)))
    return path


# (selector, key, a value of the wrong type, an out-of-range value)
SELECTOR_KEYS = [
    ("ours", "max_iter", "abc", -1), ("ours", "temperature", "abc", 0), ("ours", "lr", "abc", 0),
    ("ours", "balance", "abc", -0.5), ("ours", "screen_candidates", "abc", 0),
    ("ours", "chunk_size", "abc", 0), ("ours", "kk_cache_mb", "abc", -1), ("ours", "devices", "abc", 0),
    ("ours", "mapping_candidates", "abc", 0), ("ours", "mapping_chunk_size", "abc", 0),
    ("kcenter", "chunk_size", "abc", 0), ("kcenter", "candidates", "abc", 0),
    ("dq", "bins", "abc", 0), ("dq", "lam", "abc", -1), ("dq", "block", "abc", 0),
    ("deita", "threshold", "abc", 1.5), ("deita", "block_size", "abc", 0),
]
# LM-scored selectors: their numeric keys are the scorer's
SCORER_KEYS = [(sel, key, "abc", 0) for sel in ("ifd", "ppl")
               for key in ("batch_tokens", "max_batch_size", "chunk_batches", "devices", "max_length")]


@pytest.mark.parametrize("kind", ["type", "range"])
@pytest.mark.parametrize("selector, key, bad_type, bad_range", SELECTOR_KEYS)
def test_selector_numeric_keys(kind, selector, key, bad_type, bad_range, pool, tmp_path, monkeypatch, capsys):
    value = bad_type if kind == "type" else bad_range
    code, err = run_entry("select", [f"selector={selector}", f"selector.{key}={value}", "sample_num=5",
                                     f"data.path={pool}"], tmp_path, monkeypatch, capsys)
    assert_one_line_error(code, err, f"selector.{key}", tmp_path, repr(value) if kind == "type" else "")


@pytest.mark.parametrize("kind", ["type", "range"])
@pytest.mark.parametrize("selector, key, bad_type, bad_range", SCORER_KEYS)
def test_scorer_numeric_keys(kind, selector, key, bad_type, bad_range, pool, tmp_path, monkeypatch, capsys):
    value = bad_type if kind == "type" else bad_range
    code, err = run_entry("select", [f"selector={selector}", "scorer=tiny", f"scorer.{key}={value}",
                                     "sample_num=5", f"data.path={pool}"], tmp_path, monkeypatch, capsys)
    assert_one_line_error(code, err, f"scorer.{key}", tmp_path)


@pytest.mark.parametrize("selector", ["ours", "random", "kcenter", "dq", "deita", "ifd", "ppl"])
def test_selector_unknown_key(selector, pool, tmp_path, monkeypatch, capsys):
    code, err = run_entry("select", [f"selector={selector}", "+selector.not_a_key=1", "sample_num=5",
                                     f"data.path={pool}"], tmp_path, monkeypatch, capsys)
    assert_one_line_error(code, err, "selector.not_a_key", tmp_path, "unknown key")


def test_key_not_in_the_config_is_one_line(pool, tmp_path, monkeypatch, capsys):
    # without `+`, Hydra itself refuses the key (a multi-line report and exit 1 before)
    code, err = run_entry("select", ["selector=dq", "selector.lr=abc", f"data.path={pool}"],
                          tmp_path, monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "selector.lr" in err, err


# (key, a value of the wrong type, an out-of-range value)
TRAINER_KEYS = [
    ("trainer.max_epochs", "abc", -2), ("trainer.max_steps", "abc", -2),
    ("trainer.accumulate_grad_batches", "abc", 0), ("trainer.gradient_clip_val", "abc", -1.0),
    ("trainer.devices", "abc", 0), ("trainer.num_nodes", "abc", 0),
    ("trainer.log_every_n_steps", "abc", 0),
    ("optim.lr", "abc", 0), ("optim.weight_decay", "abc", -0.1), ("optim.warmup_steps", "abc", -1),
    ("batch_size", "abc", 0), ("checkpoint_every_n_steps", "abc", -1), ("data.max_length", "abc", 0),
    ("model.hidden_size", "abc", 0), ("model.lora.r", "abc", 0),
]


@pytest.mark.parametrize("kind", ["type", "range"])
@pytest.mark.parametrize("key, bad_type, bad_range", TRAINER_KEYS)
def test_trainer_numeric_keys(kind, key, bad_type, bad_range, pool, tmp_path, monkeypatch, capsys):
    value = bad_type if kind == "type" else bad_range
    code, err = run_entry("train", [f"data.path={pool}", "model=tiny", "strategy=single", f"{key}={value}"],
                          tmp_path, monkeypatch, capsys)
    assert_one_line_error(code, err, key, tmp_path)


@pytest.mark.parametrize("key, value", [
    ("data.batching", "rows"), ("data.batching", "1"), ("data.isolate", "maybe"), ("data.shuffle", "1"),
    ("loss_tokens", "global"), ("optim.master_dtype", "float64"), ("dry_run", "yes"),
])
def test_train_recipe_switches(key, value, pool, tmp_path, monkeypatch, capsys):
    code, err = run_entry("train", [f"data.path={pool}", "model=tiny", "strategy=single", f"{key}={value}"],
                          tmp_path, monkeypatch, capsys)
    assert_one_line_error(code, err, key, tmp_path)


@pytest.mark.parametrize("key", ["+trainer.not_a_trainer_arg=1", "+optim.momentum=0.9", "+model.not_a_key=1"])
def test_trainer_unknown_keys(key, pool, tmp_path, monkeypatch, capsys):
    code, err = run_entry("train", [f"data.path={pool}", "model=tiny", "strategy=single", key],
                          tmp_path, monkeypatch, capsys)
    assert_one_line_error(code, err, key[1:].split("=")[0], tmp_path, "unknown key")


def test_pipeline_names_the_stage_package(pool, tmp_path, monkeypatch, capsys):
    # a bad train value fails the job before the selection runs, named as typed
    code, err = run_entry("pipeline", ["experiment=tiny", f"data.path={pool}", "train.optim.lr=-1"],
                          tmp_path, monkeypatch, capsys)
    assert_one_line_error(code, err, "train.optim.lr", tmp_path)
    assert not (tmp_path / "run" / "select").exists()


@pytest.mark.parametrize("args, key", [
    (["generation.temperature=-1"], "generation.temperature"),
    (["generation.max_new_tokens=abc"], "generation.max_new_tokens"),
    (["generation.add_special_tokens=sometimes"], "generation.add_special_tokens"),
    (["limit=0"], "limit"),
    (["sandbox.memory_mb=0"], "sandbox.memory_mb"),
    (["+generation.beam=2"], "generation.beam"),
])
def test_evaluate_bad_values(args, key, tmp_path, monkeypatch, capsys):
    code, err = run_entry("evaluate", ["samples=x.jsonl", *args], tmp_path, monkeypatch, capsys)
    assert_one_line_error(code, err, key, tmp_path)


@pytest.mark.parametrize("stage, args, words", [
    ("select", ["selector=nope"], ["selector/nope", "Available options"]),
    ("train", ["strategy=nope"], ["strategy/nope"]),
    ("evaluate", ["benchmark=nope"], ["benchmark/nope"]),
    ("pipeline", ["experiment=nope"], ["experiment/nope"]),
    ("select", ["sample_num=[1"], []),  # an override Hydra cannot parse
])
def test_hydra_errors_are_one_line(stage, args, words, tmp_path, monkeypatch, capsys):
    code, err = run_entry(stage, args, tmp_path, monkeypatch, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(w in lines[0] for w in words), lines[0]


def test_missing_value_names_the_key(tmp_path, monkeypatch, capsys):
    code, err = run_entry("train", ["model=tiny", "strategy=single"], tmp_path, monkeypatch, capsys)
    assert_one_line_error(code, err, "data.path", tmp_path)


def test_constructor_errors_come_out_of_instantiate_as_user_errors():
    from codeselect.config.build import instantiate
    from codeselect.errors import UserError

    # the selector's own check (a UserError) comes through Hydra's InstantiationException unchanged
    with pytest.raises(UserError, match=r"^key 'selector.bins': must be a positive integer"):
        instantiate({"_target_": "codeselect.selectors.dq.DQSelector", "bins": 0}, "selector")
    with pytest.raises(UserError, match=r"^key 'selector': cannot build it: .*nope"):
        instantiate({"_target_": "codeselect.selectors.dq.DQSelector", "nope": 1}, "selector")
    with pytest.raises(UserError, match=r"^key 'selector': cannot build it"):
        instantiate({"_target_": "codeselect.selectors.not_there.X"}, "selector")


def test_a_selector_without_schema_is_checked_by_its_signature():
    from codeselect.config.schema import check_selector
    from codeselect.errors import UserError

    target = "codeselect.selectors.top_score.TopScoreSelector"  # has no schema of its own
    check_selector({"_target_": target, "name": "x", "scores_path": "s.jsonl"})
    with pytest.raises(UserError, match=r"key 'selector.k': unknown key"):
        check_selector({"_target_": target, "name": "x", "k": 1})
    with pytest.raises(UserError, match=r"key 'selector.progress': must be a valid boolean, got 'abc'"):
        check_selector({"_target_": target, "name": "x", "progress": "abc"})


def _compose(entry: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=entry, overrides=overrides, return_hydra_config=True)
    groups = list(OmegaConf.to_container(cfg.hydra.runtime.choices).keys())
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    return cfg, groups


def test_pipeline_stage_keys_are_ordinary_overrides(tmp_path):
    from codeselect.pipeline import stage_configs

    cfg, _ = _compose("pipeline", ["experiment=tiny", "selector=ifd", "scorer=tiny", "data.path=pool.jsonl",
                                   "train.trainer.max_steps=5", "evaluate.limit=2", "seed=7"])
    stages = stage_configs(cfg, tmp_path / "job")
    select, train = stages["select"], stages["train"]
    assert select.selector.name == "ifd" and select.scorer.model == "tiny"  # not the 6.7B default
    assert select.data.path == "pool.jsonl" and select.seed == train.seed == 7
    # a stage override keeps the rest of the recipe (the tiny model, its schedule)
    assert train.trainer.max_steps == 5 and train.model.name == "tiny" and train.strategy.kind == "single"
    assert train.optim.warmup_steps == 3 and train.data.fields.instruction == "instruction"
    assert stages["evaluate-humaneval"].limit == 2
    assert stages["evaluate-humaneval"].model.path == str(tmp_path / "job" / "train" / "checkpoint")


def test_a_recipe_section_sits_below_the_command_line():
    from codeselect.config.stages import stage_view

    args = ["experiment=tiny", "data.path=sel.jsonl", "trainer.max_steps=3", "optim.lr=1e-4"]
    cfg, groups = _compose("train", args)
    view = stage_view(cfg, "train", args, groups)
    assert view.trainer.max_steps == 3 and view.optim.lr == 1e-4       # the command line wins
    assert view.optim.warmup_steps == 3 and view.batch_size == 4       # the recipe beats conf/stage
    assert view.model.name == "tiny" and "evaluate" not in view and "sample_num" not in view
    cfg, groups = _compose("select", ["experiment=paper"])
    view = stage_view(cfg, "select", ["experiment=paper"], groups)
    assert view.embedding.name == "mpnet" and view.sample_num == 10000 and "model" not in view


def test_pipeline_unknown_top_level_key(pool, tmp_path, monkeypatch, capsys):
    code, err = run_entry("pipeline", ["experiment=tiny", f"data.path={pool}", "+sampel_num=3"],
                          tmp_path, monkeypatch, capsys)
    assert_one_line_error(code, err, "sampel_num", tmp_path, "unknown key")
