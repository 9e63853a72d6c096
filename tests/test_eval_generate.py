"""Generation: the paper's prompt, vLLM request building (engine mocked), resume, HF end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from codeselect.evaluation.generate import (INSTRUCTION_PREFIX, RESPONSE_PREFIX, GenConfig,
                                            VLLMBackend, build_prompt, generate_samples,
                                            output_path, postprocess, read_done, stop_strings)

PROBLEMS = {f"T/{i}": {"prompt": f'def f{i}(x):\n\t"""Return x + {i}."""\n'} for i in range(5)}


@pytest.fixture(scope="session")
def tiny_model(cache_dir, shared) -> Path:
    from codeselect.tiny_lm import build_tiny_lm

    path = shared / "data/evalplus/MbppPlus-v0.2.0.jsonl"
    texts = [json.loads(line)["prompt"] for line in path.read_text().splitlines()[:60]]
    return build_tiny_lm(texts, cache_dir / "tiny-eval-lm")


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def test_chat_prompt_is_the_papers(tokenizer):
    p = build_prompt('def f(x):\n    """doc"""\n', tokenizer, True, GenConfig())
    assert p == ("<s>You are a helpful programming assistant.\n### Instruction:\n"
                 f"{INSTRUCTION_PREFIX}\n```\ndef f(x):\n    \"\"\"doc\"\"\"\n```\n\n"
                 f"### Response:\n{RESPONSE_PREFIX}\n```python\n")
    assert build_prompt("def f(x):\n  pass\n\n", tokenizer, False, GenConfig()) == "def f(x):\n  pass\n"


def test_stop_strings_and_postprocess():
    chat = stop_strings("humaneval", True)
    assert "\n```\n" in chat and "</s>" in chat and "\nif __name__" in chat
    assert "\ndef " in stop_strings("humaneval", False) and "\n```\n" not in stop_strings("mbpp", False)
    assert postprocess("def f():\n\treturn 1\n```\nmore", chat) == "def f():\n    return 1"


class FakeLLM:
    calls: list = []

    def __init__(self, **kwargs):
        FakeLLM.engine = kwargs

    def generate(self, prompts, params, use_tqdm=False):
        FakeLLM.calls.append((prompts, params))
        out = types.SimpleNamespace
        return [out(outputs=[out(text=f"def g():\n\treturn {i}\n```\ntrailing") for i in range(params.n)])
                for _ in prompts]


def test_vllm_request_building_with_engine_mocked(monkeypatch, tiny_model, tmp_path):
    fake = types.ModuleType("vllm")
    fake.LLM = FakeLLM
    fake.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    FakeLLM.calls = []
    cfg = GenConfig()
    backend = VLLMBackend(str(tiny_model), cfg=cfg, tensor_parallel_size=4, dtype="bfloat16")
    assert FakeLLM.engine["model"] == str(tiny_model) and FakeLLM.engine["tensor_parallel_size"] == 4
    assert FakeLLM.engine["dtype"] == "bfloat16" and FakeLLM.engine["seed"] == 42
    out = output_path(tmp_path, "humaneval", str(tiny_model), "vllm", 0.0)
    assert out.name.endswith("_vllm_temp0.0.jsonl") and out.parent.name == "humaneval"
    generate_samples(PROBLEMS, "humaneval", backend, backend.tokenizer, cfg, out, batch_size=100)
    (prompts, params), = FakeLLM.calls  # one engine call for all tasks
    assert len(prompts) == 5 and all(p.endswith(f"{RESPONSE_PREFIX}\n```python\n") for p in prompts)
    assert "def f3(x):" in prompts[3]
    assert (params.temperature, params.top_p, params.max_tokens, params.n) == (0.0, 1.0, 1024, 1)
    assert "\n```\n" in params.stop and "<|endoftext|>" in params.stop
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == list(PROBLEMS)
    assert rows[0]["solution"] == "def g():\n    return 0"  # cut at the fence, tabs -> spaces


def test_sampling_n_samples(monkeypatch, tiny_model, tmp_path):
    fake = types.ModuleType("vllm")
    fake.LLM = FakeLLM
    fake.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    FakeLLM.calls = []
    cfg = GenConfig(n_samples=3, temperature=0.8)
    backend = VLLMBackend(str(tiny_model), cfg=cfg)
    out = tmp_path / "s.jsonl"
    generate_samples(PROBLEMS, "mbpp", backend, backend.tokenizer, cfg, out, batch_size=2)
    params = FakeLLM.calls[0][1]
    assert (params.temperature, params.top_p, params.n) == (0.8, 0.95, 3)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 15 and [r["task_id"] for r in rows].count("T/4") == 3


class CountingBackend:
    """Fake backend that fails after `fail_after` calls (an interrupted run)."""

    def __init__(self, fail_after: int | None = None):
        self.prompts: list[str] = []
        self.fail_after = fail_after

    def generate(self, prompts, n, stops):
        if self.fail_after is not None and len(self.prompts) >= self.fail_after:
            raise KeyboardInterrupt
        self.prompts += prompts
        return [["    return x\n"] * n for _ in prompts]


def test_resume_after_interrupted_generation(tokenizer, tmp_path):
    out = tmp_path / "gen.jsonl"
    cfg = GenConfig(prompt="direct")
    with pytest.raises(KeyboardInterrupt):
        generate_samples(PROBLEMS, "humaneval", CountingBackend(fail_after=2), tokenizer, cfg, out,
                         batch_size=2)
    assert read_done(out, 1) == {"T/0": 1, "T/1": 1}
    with open(out, "a") as fh:
        fh.write('{"task_id": "T/2", "solu')  # torn write from the kill
    second = CountingBackend()
    generate_samples(PROBLEMS, "humaneval", second, tokenizer, cfg, out, batch_size=2)
    assert len(second.prompts) == 3  # only T/2, T/3, T/4
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == list(PROBLEMS)
    assert rows[0]["solution"] == PROBLEMS["T/0"]["prompt"].strip() + "\n    return x\n"
    third = CountingBackend()
    generate_samples(PROBLEMS, "humaneval", third, tokenizer, cfg, out)
    assert third.prompts == []  # complete file: nothing to do


def test_hf_backend_end_to_end_on_tiny_model(repo, shared, tiny_model, tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline"}
    run = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, str(repo / "evaluate.py"), f"model={tiny_model}", "benchmark=mbpp",
         f"benchmark.path={shared / 'data/evalplus/MbppPlus-v0.2.0.jsonl'}", "limit=3",
         "generation.max_new_tokens=24", "backend.device=cpu", f"root={tmp_path / 'gen'}",
         f"hydra.run.dir={run}"], capture_output=True, text=True, env=env, cwd=tmp_path,
        timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    gen = output_path(tmp_path / "gen", "mbpp", str(tiny_model), "hf", 0.0)
    rows = [json.loads(line) for line in gen.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["Mbpp/2", "Mbpp/3", "Mbpp/4"]
    assert all(set(r) == {"task_id", "solution"} and "\t" not in r["solution"] for r in rows)
    sanitized = gen.with_name(gen.name.replace(".jsonl", "-sanitized.jsonl"))
    assert len(sanitized.read_text().splitlines()) == 3
    summary = json.loads((run / "summary.json").read_text())
    assert summary["pass@1"] == {"base": 0.0, "plus": 0.0} and summary["n_tasks"] == 3
    results = json.loads((run / sanitized.name.replace(".jsonl", "_eval_results.json")).read_text())
    assert sorted(results["eval"]) == ["Mbpp/2", "Mbpp/3", "Mbpp/4"]
    assert all(r[0]["base_status"] != "pass" for r in results["eval"].values())
    assert list(run.glob("wandb/offline-run-*"))  # the W&B run (offline)


def test_model_argument_is_a_path_or_a_model_config(repo):
    from codeselect.evaluation.run import model_argv

    conf = repo / "conf"
    assert model_argv(["model=/ckpt/x", "benchmark=mbpp"], conf) == [
        "model=hf", "model.path=/ckpt/x", "benchmark=mbpp"]
    assert model_argv(["model=deepseek-coder-6.7b"], conf) == ["model=deepseek-coder-6.7b"]
