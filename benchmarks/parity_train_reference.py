"""The reference side of benchmarks/parity_train.py, run by the reference's own Python.

    <ref-python> benchmarks/parity_train_reference.py <command> --reference <published code> [args...]

Needs transformers 4.47.1, accelerate 1.2.1, evalplus 0.3.1 and peft 0.14.0 (the published pins) and
the published code checkout (`sft/`, `eval/`). Commands:

- `finetune -- <sft/finetune.py arguments>`: runs the published `sft/finetune.py` `main()`;
- `codegen -- <eval/codegen.py arguments>`: runs the published `eval/codegen.py` `main()`;
- `batches`: the published dataset + pack collator on consecutive micro-batches -> JSON;
- `order`: the HF Trainer's own training dataloader (sampler, accelerate) -> sample order per epoch;
- `prompts`: the published generation prompt and its token ids per task -> JSON;
- `logits`: logits of a probe text, to check a model folder reads the same here and in ours.

Every change to the published code's behaviour is a run-time patch printed as `patch: ...`; only
what a CPU-only machine without vLLM requires, plus one bug fix without which the published HF
generation path cannot run at all with its own transformers pin (said where it is applied).
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path


def patch(msg: str) -> None:
    print(f"patch: {msg}", flush=True)


def stub_vllm() -> None:
    """eval/utils.py imports vLLM at the top; its CUDA build (0.6.6) cannot be installed here and the
    HF path never uses it."""
    mod = types.ModuleType("vllm")

    class _Unavailable:
        def __init__(self, *a, **k):
            raise RuntimeError("vLLM is not available in the reference environment (CPU parity run)")

    mod.LLM = mod.SamplingParams = _Unavailable
    sys.modules["vllm"] = mod
    patch("module `vllm` stubbed (eval/utils.py imports it; vLLM 0.6.6 needs CUDA; the HF backend never calls it)")


def sequential_sampler() -> None:
    """The Trainer's RandomSampler -> SequentialSampler (same order on both sides: the file order)."""
    import torch
    from transformers import Trainer

    def _get_train_sampler(self):
        return torch.utils.data.SequentialSampler(self.train_dataset)

    Trainer._get_train_sampler = _get_train_sampler
    patch("Trainer._get_train_sampler -> SequentialSampler (data in file order, as the parity run asks)")


def no_gpu_memory_callback(sft_utils) -> None:
    """sft/utils.py's MemoryUsageCallback calls torch.cuda.* at train begin/end."""
    from transformers import TrainerCallback

    class NoGPUMemory(TrainerCallback):
        def __init__(self, *a, **k):
            pass

    sft_utils.MemoryUsageCallback = NoGPUMemory
    patch("MemoryUsageCallback -> no-op (it calls torch.cuda.set_device / memory stats; no GPU here)")


def hf_generate_gets_tokenizer(eval_utils) -> None:
    """transformers 4.47.1 refuses `stop_strings` without `tokenizer=`: the published HF backend's
    `generate()` call raises ValueError on any machine. Passing the tokenizer makes it run; the
    output is still cut at the first stop string afterwards, exactly as published."""
    import transformers

    orig = transformers.GenerationMixin.generate

    def generate(self, *args, **kwargs):
        if kwargs.get("stop_strings") and "tokenizer" not in kwargs:
            kwargs["tokenizer"] = _TOKENIZER[0]
        return orig(self, *args, **kwargs)

    transformers.GenerationMixin.generate = generate
    init = eval_utils.HuggingFaceDecoder.__init__

    def __init__(self, *a, **k):
        init(self, *a, **k)
        _TOKENIZER[0] = self.tokenizer

    eval_utils.HuggingFaceDecoder.__init__ = __init__
    patch("HF backend: generate() gets tokenizer= (transformers 4.47.1 raises ValueError for "
          "stop_strings without it: the published HF path cannot run otherwise; outputs are still "
          "cut at the first stop string as published)")


_TOKENIZER: list = [None]


def cmd_finetune(ref: Path, argv: list[str], sequential: bool) -> None:
    sys.path.insert(0, str(ref / "sft"))
    import utils as sft_utils  # the published sft/utils.py

    no_gpu_memory_callback(sft_utils)
    if sequential:
        sequential_sampler()
    import finetune  # the published sft/finetune.py

    finetune.MemoryUsageCallback = sft_utils.MemoryUsageCallback
    sys.argv = [str(ref / "sft" / "finetune.py"), *argv]
    finetune.main()


def cmd_codegen(ref: Path, argv: list[str]) -> None:
    sys.path.insert(0, str(ref / "eval"))
    stub_vllm()
    import utils as eval_utils  # the published eval/utils.py

    hf_generate_gets_tokenizer(eval_utils)
    import codegen  # the published eval/codegen.py

    sys.argv = [str(ref / "eval" / "codegen.py"), *argv]
    codegen.main()


def reference_tokenizer(model: str):
    """The tokenizer exactly as sft/finetune.py main() prepares it."""
    from transformers import AutoTokenizer
    from utils import CHAT_TEMPLATE

    tok = AutoTokenizer.from_pretrained(model, use_fast=True, padding_side="right")
    if "Qwen2Tokenizer" in tok.__class__.__name__:
        tok.bos_token = "<|im_start|>"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.chat_template = CHAT_TEMPLATE
    return tok


def cmd_batches(ref: Path, model: str, data: str, batch_size: int, max_length: int, out: Path) -> None:
    sys.path.insert(0, str(ref / "sft"))
    import finetune
    from utils import DataCollatorWithDynamicPack

    tok = reference_tokenizer(model)
    dataset = finetune.create_dataset(tok, data)
    collator = DataCollatorWithDynamicPack(tokenizer=tok, padding=True, max_length=max_length)
    batches = []
    for start in range(0, len(dataset), batch_size):
        feats = [dict(dataset[i]) for i in range(start, min(start + batch_size, len(dataset)))]
        b = collator(feats)
        batches.append({k: b[k].tolist() for k in ("input_ids", "labels", "attention_mask")})
    out.write_text(json.dumps({"samples": len(dataset), "batches": batches}))


def cmd_order(n: int, batch_size: int, epochs: int, seed: int, out: Path, workdir: Path) -> None:
    """The Trainer's own training dataloader over n indices: which sample each epoch draws, in order."""
    import torch
    from transformers import Trainer, TrainingArguments

    class Indices(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return {"i": i}

    args = TrainingArguments(output_dir=str(workdir), per_device_train_batch_size=batch_size, seed=seed,
                             use_cpu=True, report_to=[], remove_unused_columns=False)
    trainer = Trainer(model=torch.nn.Linear(1, 1), args=args, train_dataset=Indices(),
                      data_collator=lambda feats: [f["i"] for f in feats])
    dl = trainer.get_train_dataloader()
    orders = []
    for epoch in range(epochs):
        dl.set_epoch(epoch)
        orders.append([i for batch in dl for i in batch])
    sampler = getattr(getattr(dl, "batch_sampler", None), "sampler", None)
    out.write_text(json.dumps({"orders": orders, "sampler": type(sampler).__name__}))


def cmd_prompts(ref: Path, model: str, tasks: Path, out: Path) -> None:
    """The prompt eval/codegen.py + eval/utils.py build for each task, and the ids the HF backend feeds."""
    sys.path.insert(0, str(ref / "eval"))
    stub_vllm()
    from transformers import AutoTokenizer
    from utils import INST_PREFIX, RESP_PREFIX, make_raw_chat_prompt

    tok = AutoTokenizer.from_pretrained(model, use_fast=True)
    rows = []
    for line in tasks.read_text().splitlines():
        task = json.loads(line)
        task_prompt = task["prompt"].strip() + "\n"                      # codegen.py
        direct = tok.chat_template is None                                # is_direct_completion()
        prompt = task_prompt if direct else make_raw_chat_prompt(task_prompt, INST_PREFIX, RESP_PREFIX, tok)
        rows.append({"task_id": task["task_id"], "prompt": prompt, "ids": tok(prompt)["input_ids"]})
    out.write_text(json.dumps(rows))


def cmd_logits(model: str, text: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model, use_fast=True)
    m = AutoModelForCausalLM.from_pretrained(model, torch_dtype=torch.float32, attn_implementation="eager")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = m(torch.tensor([ids])).logits[0, -1].tolist()
    out.write_text(json.dumps({"ids": ids, "logits": logits}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["finetune", "codegen", "batches", "order", "prompts", "logits"])
    ap.add_argument("--reference", type=Path, required=True)
    ap.add_argument("--model")
    ap.add_argument("--data")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--text", default="")
    ap.add_argument("--shuffle", action="store_true", help="finetune: keep the Trainer's random sampler")
    ap.add_argument("--out", type=Path)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    a, rest = ap.parse_args(argv[:cut]), argv[cut + 1:]
    if a.command == "finetune":
        cmd_finetune(a.reference, rest, sequential=not a.shuffle)
    elif a.command == "codegen":
        cmd_codegen(a.reference, rest)
    elif a.command == "batches":
        cmd_batches(a.reference, a.model, a.data, a.batch_size, a.max_length, a.out)
    elif a.command == "order":
        cmd_order(a.n, a.batch_size, a.epochs, a.seed, a.out, a.out.parent / "order-trainer")
    elif a.command == "prompts":
        cmd_prompts(a.reference, a.model, Path(a.data), a.out)
    else:
        cmd_logits(a.model, a.text, a.out)


if __name__ == "__main__":
    main()
