"""Code generation for HumanEval+/MBPP+: the paper's prompts, stop strings, vLLM and HF backends.

Protocol (SYSTEM.md section 6, evalplus's codegen): chat prompt = the user message
`{instruction_prefix}\\n```\\n{task prompt}\\n```\\n` through the model's chat template, then the
assistant prefix `{response_prefix}\\n```python\\n`; generation stops at "\\n```\\n" plus evalplus's
EOS strings; tabs become four spaces; the solution is the generated text. Direct completion (base
models without a chat template): prompt = the task prompt, extra per-dataset stop strings, the
solution is prompt + completion. Output: evalplus's samples format `{"task_id", "solution"}`, one
line per sample, in `<root>/<dataset>/<model-id>_<backend>_temp<T>.jsonl`, appended as batches
finish; a re-run skips the tasks already complete in the file (resume).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from codeselect.errors import UserError

log = logging.getLogger(__name__)

INSTRUCTION_PREFIX = ("Please provide a self-contained Python script that solves the following "
                      "problem in a markdown code block:")
RESPONSE_PREFIX = ("Below is a Python script with a self-contained function that solves the "
                   "problem and passes corresponding tests:")
CHAT_STOP = ["\n```\n"]
_SPLIT = "\x00codeselect-response\x00"


@dataclass
class GenConfig:
    """Sampling and prompt settings shared by the backends."""

    n_samples: int = 1
    temperature: float = 0.0
    top_p: float = 0.95
    max_new_tokens: int = 1024
    seed: int = 42
    prompt: str = "auto"  # auto | chat | direct
    add_special_tokens: bool = False  # True: the tokenizer adds its special tokens (BOS) to the prompt text
    instruction_prefix: str = INSTRUCTION_PREFIX
    response_prefix: str = RESPONSE_PREFIX
    extra_stop: list[str] = field(default_factory=list)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


# Folder names that say nothing about the model: the id keeps their parent's name too.
GENERIC_NAMES = frozenset({"checkpoint", "checkpoints", "model", "final", "hf", "latest"})


def model_id(model: str) -> str:
    """A readable identifier for a model path or hub name, used in generation file names.

    A hub name or a relative path follows evalplus (`./weights/x` -> `weights--x`,
    `org/name` -> `org--name`); an absolute or `~` path gives its folder name
    (`/root/.cache/codeselect/models/smollm2-135m-instruct` -> `smollm2-135m-instruct`), with the
    parent's name in front when the folder's own name is generic (`.../ours-sn1000/train/checkpoint`
    -> `train--checkpoint`; the pipeline passes its own `model_id`)."""
    if model.startswith(("/", "~")):
        parts = [p for p in Path(model).expanduser().parts if p not in ("/", "")]
        if not parts:
            return "model"
        name = parts[-1]
        return f"{parts[-2]}--{name}" if name.lower() in GENERIC_NAMES and len(parts) > 1 else name
    return model.strip("./").replace("/", "--")


def output_path(root: str | Path, dataset: str, model: str, backend: str, temperature: float,
                ident: str | None = None) -> Path:
    """`<root>/<dataset>/<model-id>_<backend>_temp<T>.jsonl` (the reference's naming)."""
    return Path(root) / dataset / f"{ident or model_id(model)}_{backend}_temp{float(temperature)}.jsonl"


def use_chat(tokenizer: Any, mode: str) -> bool:
    """Chat prompt unless `direct` is asked, or `auto` and the tokenizer has no chat template."""
    if mode not in ("auto", "chat", "direct"):
        raise UserError(f"unknown prompt mode {mode!r} (auto | chat | direct)", key="prompt")
    if mode == "auto":
        return bool(getattr(tokenizer, "chat_template", None))
    if mode == "chat" and not getattr(tokenizer, "chat_template", None):
        from codeselect.prompts import ensure_chat_template

        ensure_chat_template(tokenizer)  # the paper applies its template to base models
    return mode == "chat"


def build_prompt(task_prompt: str, tokenizer: Any, chat: bool, cfg: GenConfig) -> str:
    """The text given to the model for one task."""
    if not chat:
        return task_prompt.strip() + "\n"
    user = f"{cfg.instruction_prefix}\n```\n{task_prompt.strip()}\n```\n"
    assistant = f"{cfg.response_prefix}\n```python\n{_SPLIT}\n```\n"
    text = tokenizer.apply_chat_template([{"role": "user", "content": user},
                                          {"role": "assistant", "content": assistant}],
                                         tokenize=False)
    return text.split(_SPLIT)[0]


def stop_strings(dataset: str, chat: bool, extra: Sequence[str] = ()) -> list[str]:
    """evalplus's EOS strings plus "\\n```\\n" (chat) or its per-dataset direct-completion stops."""
    from evalplus.provider.utility import EOS, extra_eos_for_direct_completion

    more = CHAT_STOP if chat else extra_eos_for_direct_completion(dataset)
    return list(dict.fromkeys([*EOS, *more, *extra]))


def postprocess(text: str, stops: Sequence[str]) -> str:
    """Cut at the first stop string; tabs -> four spaces."""
    cut = min((text.index(s) for s in stops if s in text), default=len(text))
    return text[:cut].replace("\t", "    ")


def prompt_ids(tokenizer: Any, prompts: list[str], add_special_tokens: bool) -> list[list[int]]:
    """Token ids of the prompt texts. The chat template already holds the model's special tokens;
    `add_special_tokens=True` tokenizes as the published generation code does (the tokenizer's
    defaults), which gives a tokenizer that adds BOS a second one before the template's."""
    return tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]


class Backend(Protocol):
    """Generates `n` raw continuations for each prompt (stop strings are applied afterwards too)."""

    def generate(self, prompts: list[str], n: int, stops: list[str]) -> list[list[str]]: ...


def read_done(path: Path, n: int) -> dict[str, int]:
    """Samples per task already in `path`; drops a torn last line left by an interrupted write."""
    counts: dict[str, int] = {}
    if not path.is_file():
        return counts
    good = 0
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                rec = json.loads(raw)
                tid = rec["task_id"]
                assert isinstance(rec["solution"], str) and raw.endswith(b"\n")
            except (ValueError, KeyError, TypeError, AssertionError):
                break
            counts[tid] = counts.get(tid, 0) + 1
            good += len(raw)
    if good < path.stat().st_size:
        log.warning("%s: dropping a torn line at byte %d (interrupted run)", path, good)
        with open(path, "r+b") as fh:
            fh.truncate(good)
    return counts


def generate_samples(problems: dict[str, dict[str, Any]], dataset: str, backend: Backend,
                     tokenizer: Any, cfg: GenConfig, out: Path, *, batch_size: int = 8,
                     progress: Callable[[int, int], None] | None = None) -> Path:
    """Generate `cfg.n_samples` solutions per task into `out`, skipping tasks already complete."""
    chat = use_chat(tokenizer, cfg.prompt)
    stops = stop_strings(dataset, chat, cfg.extra_stop)
    done = read_done(out, cfg.n_samples)
    todo = [tid for tid in problems if done.get(tid, 0) < cfg.n_samples]
    if len(todo) < len(problems):
        log.info("resuming %s: %d/%d tasks already done", out, len(problems) - len(todo),
                 len(problems))
    out.parent.mkdir(parents=True, exist_ok=True)
    prompts = {tid: build_prompt(problems[tid]["prompt"], tokenizer, chat, cfg) for tid in todo}
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        need = [cfg.n_samples - done.get(t, 0) for t in batch]
        texts = backend.generate([prompts[t] for t in batch], max(need), stops)
        lines = []
        for tid, k, outs in zip(batch, need, texts):
            for text in outs[:k]:
                impl = postprocess(text, stops)
                sol = impl if chat else prompts[tid] + impl
                lines.append(json.dumps({"task_id": tid, "solution": sol}) + "\n")
        with open(out, "a", encoding="utf-8") as fh:  # whole batch, then fsync: resumable
            fh.write("".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        if progress:
            progress(min(start + batch_size, len(todo)), len(todo))
    return out


# ----------------------------------------------------------------------------- backends
class HFBackend:
    """transformers `generate`: batched (left padding), greedy or sampled, CPU or GPU."""

    def __init__(self, model: str, *, device: str = "auto", dtype: str = "auto",
                 cfg: GenConfig = GenConfig(), trust_remote_code: bool = False,
                 attn_implementation: str = "auto") -> None:
        from codeselect.hf import load_causal_lm, load_tokenizer, resolve_device, torch_dtype

        self.cfg = cfg
        self.device = resolve_device(device)
        self.tokenizer = load_tokenizer(model, key="model", pad_fallback=False,
                                        trust_remote_code=trust_remote_code)
        attn = {} if attn_implementation in ("auto", None) else {"attn_implementation": attn_implementation}
        self.model = load_causal_lm(model, dtype=torch_dtype(dtype, self.device, key="backend.dtype"),
                                    key="model", trust_remote_code=trust_remote_code,
                                    **attn).to(self.device)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def generate(self, prompts: list[str], n: int, stops: list[str]) -> list[list[str]]:
        import torch

        ids = prompt_ids(self.tokenizer, prompts, self.cfg.add_special_tokens)
        enc = self.tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(self.device)
        kwargs: dict[str, Any] = dict(max_new_tokens=self.cfg.max_new_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id,
                                      stop_strings=stops, tokenizer=self.tokenizer,
                                      num_return_sequences=n)
        if self.cfg.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            torch.manual_seed(self.cfg.seed)
            kwargs.update(do_sample=True, temperature=self.cfg.temperature, top_p=self.cfg.top_p)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        texts = self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:],
                                            skip_special_tokens=True)
        return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]


def vllm_request(model: str, cfg: GenConfig, *, tensor_parallel_size: int = 1,
                 dtype: str = "auto", max_model_len: int | None = 2048,
                 gpu_memory_utilization: float = 0.9, enable_prefix_caching: bool = True,
                 trust_remote_code: bool = False, engine_args: dict[str, Any] | None = None,
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(vllm.LLM kwargs, vllm.SamplingParams kwargs without `stop`) for the config; `engine_args`
    adds any other vllm.LLM keyword (e.g. `enforce_eager`)."""
    engine = dict(model=model, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                  seed=cfg.seed, trust_remote_code=trust_remote_code,
                  gpu_memory_utilization=gpu_memory_utilization,
                  enable_prefix_caching=enable_prefix_caching)
    if max_model_len:
        engine["max_model_len"] = max_model_len
    engine.update(engine_args or {})
    sampling = dict(n=cfg.n_samples, max_tokens=cfg.max_new_tokens,
                    temperature=0.0 if cfg.greedy else cfg.temperature,
                    top_p=1.0 if cfg.greedy else cfg.top_p, seed=cfg.seed)
    return engine, sampling


class VLLMBackend:
    """vLLM's offline engine (GPU tensor parallel, or vLLM's CPU build), all prompts of a call in
    one batch. vLLM runs in its own environment as a worker process (`codeselect.vllm_client`)."""

    def __init__(self, model: str, *, cfg: GenConfig = GenConfig(), python: str | None = "auto",
                 device: str = "auto", cpu: dict[str, Any] | None = None,
                 **engine_options: Any) -> None:
        from transformers import AutoTokenizer

        from codeselect.vllm_client import VLLMEngine

        self.engine_cfg = cfg
        self.engine_kwargs, self.sampling_kwargs = vllm_request(model, cfg, **engine_options)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                model, trust_remote_code=engine_options.get("trust_remote_code", False))
        except OSError as exc:
            raise UserError(f"cannot load model ({str(exc).splitlines()[0]})", file=model,
                            key="model") from None
        self.engine = VLLMEngine(self.engine_kwargs, python=python, device=device, cpu=cpu)
        self.output_tokens = 0
        self.generate_s = 0.0

    def generate(self, prompts: list[str], n: int, stops: list[str]) -> list[list[str]]:
        import time

        t = time.perf_counter()
        ids = prompt_ids(self.tokenizer, prompts, self.engine_cfg.add_special_tokens)
        texts, tokens = self.engine.generate(ids, {**self.sampling_kwargs, "n": n, "stop": stops})
        self.generate_s += time.perf_counter() - t
        self.output_tokens += tokens
        return texts

    def close(self) -> None:
        self.engine.close()
