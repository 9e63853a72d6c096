"""benchmarks/gpu_check.py without a GPU: its commands compose, its plan runs, its verdicts read train.json."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plan_runs_on_a_cpu_and_shows_the_papers_recipe(shared, tmp_path) -> None:
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--plan",
                          "--workdir", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "WANDB_MODE": "offline"}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "train.py experiment=paper" in text and "strategy" not in text.split("\n")[0]  # fsdp from the recipe
    assert "evaluate.py experiment=paper" in text and "backend.device=cuda" in text
    # 1,600 samples, 16 per micro-batch, one device: 100 micro-batches, 25 steps per epoch; 20 asked.
    assert "training plan: 1,600 samples" in text and "16 samples per device per micro-batch" in text
    assert "100 micro-batches per device per epoch" in text and "20 optimizer steps" in text
    assert "warm-up (100 steps) never completes" in text


def test_verdicts(gpu_check) -> None:
    good = {"param_dtypes": ["float32"], "optimizer_state_dtypes": ["float32"], "steps": 20,
            "plan": {"optimizer_steps": 20, "batch_size": 16, "accumulate": 4}, "losses": [2.0, 1.5],
            "precision": "bf16-mixed", "tokens": 10, "tokens_per_s": 5.0, "cuda_peak_memory_gib": 3.2}
    evaluation = {"n_tasks": 378, "pass@1": {"base": 0.1, "plus": 0.08}, "timings": {"generate_s": 30}}
    assert all(ok for _, ok, _ in gpu_check.checks(good, evaluation))
    bf16_master = dict(good, param_dtypes=["bfloat16"], optimizer_state_dtypes=["bfloat16"])
    failed = [what for what, ok, _ in gpu_check.checks(bf16_master, evaluation) if not ok]
    assert failed == ["fp32 master weights under bf16-mixed FSDP", "fp32 AdamW state"]
    report = gpu_check.render(good, evaluation, {"train": 60.0, "evaluate": 90.0}, "NVIDIA H200")
    assert "| fp32 AdamW state | ok | float32 |" in report and "3.2 GiB" in report


def test_without_a_gpu_the_check_says_so(tmp_path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--workdir",
                          str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "no CUDA GPU" in out.stderr
