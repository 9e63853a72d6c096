"""Training and generation parity: the published `sft/finetune.py` and `eval/codegen.py` beside ours.

    python benchmarks/parity_train.py --reference /path/to/efficode-finetune --reference-python /work/envs/ref/bin/python

Get the two arguments: the published code is github.com/Kyle-Lyu/efficode-finetune (`git clone` it, or
point at a bare git dir); its environment is its own pins on torch 2.13.0's CPU build, in ONE pip command:

    python3 -m venv /work/envs/ref
    /work/envs/ref/bin/pip install torch==2.13.0 transformers==4.47.1 accelerate==1.2.1 evalplus==0.3.1 peft==0.14.0

What it runs, each side in its own environment (the reference through
benchmarks/parity_train_reference.py, which prints every run-time patch it applies):

1. micro-batches: the published dataset + pack collator vs ours (`data.batching=samples`,
   `data.isolate=false`) on consecutive micro-batches of the first `--samples` real pairs of
   code-instruct-15k: input ids, labels and attention masks identical?
2. data order: the HF Trainer's own shuffled dataloader vs ours (`data.shuffle=true`), 2 epochs;
3. training, file order: `sft/finetune.py` (HF Trainer, CPU, fp32, its sampler made sequential) vs
   `train.py experiment=paper` (+ the same CPU settings) on a tiny random Llama: pack, max length 512,
   batch 16, accumulation 4, 2 epochs, warm-up 10: optimizer steps, LR, loss and gradient norm per step;
4. training, shuffled: the same with both samplers shuffled (seed 42);
5. controls: ours with isolated packing (our default) and with whole-selection best-fit batching,
   which the reference does not have: the comparison must see those differences;
6. generation: `eval/codegen.py --backend hf --greedy` vs `evaluate.py backend=hf` with the published
   generation settings on the first `--tasks` MBPP+ tasks with SmolLM2-135M-Instruct (bf16, eager
   attention, one prompt at a time): prompt token ids and greedy solutions identical? Plus the prompt
   ids for a tokenizer that adds BOS in front of a template that starts with BOS (DeepSeek-Coder's case).

The model folders ours writes (transformers 5) are handed to transformers 4.47.1 as a copy in its
format (`rope_theta` at the top level, the tokenizer class its version knows, the chat template inside
tokenizer_config.json); the logits of both readings are compared first. Writes
benchmarks/results/parity_train.md and the raw numbers next to it (parity_train.json).
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RUNNER = REPO / "benchmarks" / "parity_train_reference.py"
REF_FILES = ["sft/__init__.py", "sft/finetune.py", "sft/utils.py", "sft/scripts/sft_fsdp.sh",
             "eval/codegen.py", "eval/utils.py"]
PROBE = "def add(a, b):\n    return a + b\n"


def reference_code(reference: Path, into: Path) -> Path:
    """The published `sft/` and `eval/` folders: from a checkout, or read out of a bare git dir."""
    if (reference / "sft" / "finetune.py").is_file():
        return reference
    for name in REF_FILES:
        text = subprocess.run(["git", f"--git-dir={reference}", "show", f"HEAD:{name}"],
                              check=True, capture_output=True, text=True).stdout
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        (into / name).write_text(text)
    return into


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path = REPO) -> float:
    """Run a command (output to `log`); return its wall time; raise with the log's tail on failure."""
    t = time.perf_counter()
    with open(log, "w") as fh:
        out = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                             env={**os.environ, "WANDB_MODE": "offline", "CUDA_VISIBLE_DEVICES": "",
                                  "TOKENIZERS_PARALLELISM": "false", **(env or {})})
    if out.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} failed (exit {out.returncode}); "
                           f"{log}:\n" + log.read_text()[-3000:])
    return time.perf_counter() - t


def patches(log: Path) -> list[str]:
    return [line[len("patch: "):] for line in log.read_text().splitlines() if line.startswith("patch: ")]


def legacy_copy(src: Path, dst: Path) -> list[str]:
    """A copy of a transformers-5 model folder that transformers 4.47.1 reads as the same model."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    changes = []
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).symlink_to(f.resolve()) if f.suffix == ".safetensors" else shutil.copy(f, dst / f.name)
    cfg = json.loads((dst / "config.json").read_text())
    rope = cfg.get("rope_parameters") or {}
    if "rope_theta" not in cfg and "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]
        changes.append(f"config rope_theta={rope['rope_theta']} (from rope_parameters)")
        if rope.get("rope_type", "default") != "default":
            raise SystemExit(f"{src}: rope type {rope['rope_type']} has no 4.47 equivalent here")
    if "dtype" in cfg and "torch_dtype" not in cfg:
        cfg["torch_dtype"] = cfg["dtype"]
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    tcfg = json.loads((dst / "tokenizer_config.json").read_text())
    if tcfg.get("tokenizer_class") in ("TokenizersBackend", None):
        tcfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        changes.append("tokenizer_class=PreTrainedTokenizerFast (tokenizer.json as it is)")
    jinja = dst / "chat_template.jinja"
    if jinja.is_file() and "chat_template" not in tcfg:
        tcfg["chat_template"] = jinja.read_text()
        changes.append("chat template copied into tokenizer_config.json")
    (dst / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2))
    return changes


def probe_matches(refpy: str, ref: Path, ours: Path, legacy: Path, work: Path) -> float:
    """Max |logit difference| of the probe's last position: ours (transformers 5) vs 4.47.1 on the copy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = work / f"logits-{ours.name}.json"
    run([refpy, str(RUNNER), "logits", "--reference", str(ref), "--model", str(legacy), "--text", PROBE,
         "--out", str(out)], work / f"logits-{ours.name}.log")
    theirs = json.loads(out.read_text())
    tok = AutoTokenizer.from_pretrained(ours)
    ids = tok(PROBE, add_special_tokens=False)["input_ids"]
    assert ids == theirs["ids"], "the two tokenizer readings disagree"
    m = AutoModelForCausalLM.from_pretrained(ours, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        mine = m(torch.tensor([ids])).logits[0, -1]
    return float((mine - torch.tensor(theirs["logits"])).abs().max())


# ----------------------------------------------------------------------------- training
def compare_batches(refpy: str, ref: Path, tiny: Path, legacy: Path, pool: Path, records: list[dict],
                    work: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer

    from codeselect.train.data import SFTDataModule, apply_paper_template

    out = work / "ref-batches.json"
    run([refpy, str(RUNNER), "batches", "--reference", str(ref), "--model", str(legacy), "--data", str(pool),
         "--batch-size", "16", "--max-length", "512", "--out", str(out)], work / "ref-batches.log")
    theirs = json.loads(out.read_text())["batches"]
    tok = apply_paper_template(AutoTokenizer.from_pretrained(tiny))
    tok.padding_side = "right"
    dm = SFTDataModule(records, tok, max_length=512, mode="pack", batching="samples", isolate=False,
                       shuffle=False, batch_size=16, accumulate=4)
    micro = dm.planner(1).epoch(0, 0).micro
    same = 0
    for mb, ref_b in zip(micro, theirs):
        b = dm.collator([mb])
        same += all(torch.equal(b[k], torch.tensor(ref_b[k])) for k in ("input_ids", "labels", "attention_mask"))
    return {"micro_batches_ours": len(micro), "micro_batches_reference": len(theirs), "identical": same,
            "rows_ours": sum(len(mb.rows) for mb in micro),
            "rows_reference": sum(len(b["input_ids"]) for b in theirs)}


def compare_order(refpy: str, ref: Path, n: int, work: Path) -> dict[str, Any]:
    from codeselect.train.batching import epoch_order

    out = work / "ref-order.json"
    run([refpy, str(RUNNER), "order", "--reference", str(ref), "--n", str(n), "--batch-size", "16",
         "--epochs", "2", "--seed", "42", "--out", str(out)], work / "ref-order.log")
    theirs = json.loads(out.read_text())
    ours = [epoch_order(n, 42, e, shuffle=True) for e in range(2)]
    return {"identical": ours == theirs["orders"], "sampler": theirs["sampler"]}


def reference_train(refpy: str, ref: Path, legacy: Path, pool: Path, lr: float, out: Path, shuffle: bool,
                    work: Path) -> dict[str, Any]:
    args = ["--model_name_or_path", str(legacy), "--data_path", str(pool), "--pad_mode", "pack",
            "--max_length", "512", "--output_dir", str(out), "--overwrite_output_dir", "True",
            "--gradient_checkpointing", "True", "--num_train_epochs", "2",
            "--per_device_train_batch_size", "16", "--gradient_accumulation_steps", "4",
            "--learning_rate", str(lr), "--lr_scheduler_type", "cosine", "--warmup_steps", "10",
            "--save_strategy", "no", "--logging_strategy", "steps", "--logging_steps", "1",
            "--use_flash_attn", "False", "--use_cpu", "True", "--report_to", "none"]
    log = work / f"ref-train-{'shuffled' if shuffle else 'sequential'}.log"
    secs = run([refpy, str(RUNNER), "finetune", "--reference", str(ref), *(["--shuffle"] if shuffle else []),
                "--", *args], log, env={"OMP_NUM_THREADS": "2"})
    state = json.loads((out / "trainer_state.json").read_text())
    steps = [h for h in state["log_history"] if "loss" in h and "learning_rate" in h]
    return {"steps": state["global_step"], "loss": [h["loss"] for h in steps],
            "lr": [h["learning_rate"] for h in steps], "grad_norm": [h.get("grad_norm") for h in steps],
            "patches": patches(log), "time_s": round(secs, 1), "args": args}


def ours_train(tiny: Path, pool: Path, lr: float, out: Path, work: Path, *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, str(REPO / "train.py"), "experiment=paper", f"data.path={pool}", "model=hf",
           f"model.path={tiny}", "model.dtype=float32", "model.save_dtype=float32",
           "model.attn_implementation=eager", "model.gradient_checkpointing=true", "strategy=single",
           "trainer.devices=1", "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.max_epochs=2",
           "data.max_length=512", "batch_size=16", "trainer.accumulate_grad_batches=4",
           "optim.warmup_steps=10", f"optim.lr={lr}", "logger=none", "checkpoint_every_n_steps=0",
           "trainer.enable_progress_bar=false", f"hydra.run.dir={out}", *extra]
    secs = run(cmd, work / f"ours-{out.name}.log", env={"OMP_NUM_THREADS": "2"})
    d = json.loads((out / "train.json").read_text())
    # HF logs the learning rate after each step's scheduler update: the next step's.
    return {"steps": d["steps"], "loss": d["losses"], "lr": d["lrs"][1:] + [d["next_lr"]],
            "lr_used": d["lrs"], "grad_norm": d["grad_norms"], "time_s": round(secs, 1), "args": cmd[2:],
            "plan": d["plan"], "param_dtypes": d["param_dtypes"]}


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def diff_runs(ref: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    n = min(len(ref["loss"]), len(ours["loss"]))
    lr = [rel(ours["lr"][i], ref["lr"][i]) if ref["lr"][i] else abs(ours["lr"][i]) for i in range(n)]
    loss = [rel(ours["loss"][i], ref["loss"][i]) for i in range(n)]
    gn = [rel(ours["grad_norm"][i], ref["grad_norm"][i]) for i in range(n) if ref["grad_norm"][i]]
    return {"steps_ref": ref["steps"], "steps_ours": ours["steps"], "lr_max_rel": max(lr, default=math.inf),
            "loss_max_rel": max(loss, default=math.inf), "grad_norm_max_rel": max(gn, default=math.inf),
            "same_steps": ref["steps"] == ours["steps"] and len(ref["loss"]) == len(ours["loss"]),
            "lr_ok": ref["steps"] == ours["steps"] and max(lr, default=1) <= 1e-9,
            "loss_ok": ref["steps"] == ours["steps"] and max(loss, default=1) <= 0.02}


# ----------------------------------------------------------------------------- generation
def bos_variant(src: Path, dst: Path) -> None:
    """A copy of SmolLM2 whose tokenizer adds BOS and whose template starts with BOS (the paper's
    template): DeepSeek-Coder's situation."""
    from tokenizers import Tokenizer, processors

    from codeselect.prompts import CHAT_TEMPLATE

    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)
    tok = Tokenizer.from_file(str(dst / "tokenizer.json"))
    bos = "<|im_start|>"
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    tok.save(str(dst / "tokenizer.json"))
    (dst / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    tcfg = json.loads((dst / "tokenizer_config.json").read_text())
    tcfg.pop("chat_template", None)
    (dst / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2))


def our_prompt_ids(model: Path, tasks: list[dict]) -> list[list[int]]:
    from transformers import AutoTokenizer

    from codeselect.evaluation.generate import GenConfig, build_prompt, prompt_ids, use_chat

    tok = AutoTokenizer.from_pretrained(model)
    cfg = GenConfig(add_special_tokens=True)
    chat = use_chat(tok, cfg.prompt)
    return prompt_ids(tok, [build_prompt(t["prompt"], tok, chat, cfg) for t in tasks], True)


def compare_generation(refpy: str, ref: Path, smol: Path, legacy: Path, tasks_file: Path, mbpp: Path,
                       n_tasks: int, work: Path) -> dict[str, Any]:
    tasks = [json.loads(line) for line in tasks_file.read_text().splitlines()]
    out = work / "ref-prompts.json"
    run([refpy, str(RUNNER), "prompts", "--reference", str(ref), "--model", str(legacy), "--data",
         str(tasks_file), "--out", str(out)], work / "ref-prompts.log")
    ref_ids = [r["ids"] for r in json.loads(out.read_text())]
    ours_ids = our_prompt_ids(smol, tasks)
    # The BOS case: a BOS-adding tokenizer with a template that starts with BOS.
    bos_dir, bos_legacy = work / "smollm2-bos", work / "smollm2-bos-4.47"
    bos_variant(smol, bos_dir)
    legacy_copy(bos_dir, bos_legacy)
    out_bos = work / "ref-prompts-bos.json"
    run([refpy, str(RUNNER), "prompts", "--reference", str(ref), "--model", str(bos_legacy), "--data",
         str(tasks_file), "--out", str(out_bos)], work / "ref-prompts-bos.log")
    ref_bos = [r["ids"] for r in json.loads(out_bos.read_text())]
    ours_bos = our_prompt_ids(bos_dir, tasks)
    bos_id = ours_bos[0][0]
    # Greedy generations, both sides.
    ref_root = work / "ref-generations"
    log = work / "ref-codegen.log"
    t_ref = run([refpy, str(RUNNER), "codegen", "--reference", str(ref), "--", "--dataset", "mbpp",
                 "--backend", "hf", "--model", str(legacy), "--greedy", "--samples_dir", str(ref_root)],
                log, env={"MBPP_OVERRIDE_PATH": str(tasks_file), "OMP_NUM_THREADS": "2"})
    (ref_file,) = (ref_root / "mbpp").glob("*_hf_temp0.0.jsonl")
    ref_sol = {json.loads(x)["task_id"]: json.loads(x)["solution"] for x in ref_file.read_text().splitlines()}
    our_root = work / "ours-generations"
    t_ours = run([sys.executable, str(REPO / "evaluate.py"), "model=smollm2", "benchmark=mbpp",
                  f"benchmark.path={mbpp}", f"limit={n_tasks}", "backend=hf", "backend.dtype=bfloat16",
                  "backend.attn_implementation=eager", "backend.batch_size=1", "backend.device=cpu",
                  "generation.max_new_tokens=768", "generation.add_special_tokens=true",
                  f"root={our_root}", "logger=none", f"hydra.run.dir={work / 'ours-evaluate'}"],
                 work / "ours-evaluate.log", env={"OMP_NUM_THREADS": "2"})
    (our_file,) = (our_root / "mbpp").glob("*_hf_temp0.0.jsonl")
    our_sol = {json.loads(x)["task_id"]: json.loads(x)["solution"] for x in our_file.read_text().splitlines()}
    per_task = [{"task_id": t["task_id"], "prompt_ids_equal": a == b, "prompt_tokens": len(b),
                 "solution_equal": ref_sol.get(t["task_id"]) == our_sol.get(t["task_id"]),
                 "solution_chars": len(ref_sol.get(t["task_id"], ""))}
                for t, a, b in zip(tasks, ours_ids, ref_ids)]
    return {"tasks": per_task, "patches": patches(log), "time_ref_s": round(t_ref, 1),
            "time_ours_s": round(t_ours, 1),
            "bos_prompt_ids_equal": ours_bos == ref_bos,
            "bos_double": all(ids[:2] == [bos_id, bos_id] for ids in ref_bos),
            "bos_first_ids": ref_bos[0][:3]}


# ----------------------------------------------------------------------------- report
def fmt(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isinf(x)) else f"{x:.2g}"


def report(res: dict[str, Any], args: argparse.Namespace) -> str:
    r = res
    L = ["# Training and generation parity: the published scripts vs ours", "",
         f"`python benchmarks/parity_train.py --reference <published code> --reference-python <its python>`"
         f" ({r['date']}; CPU: {r['cpu']}). Reference environment: transformers 4.47.1, accelerate 1.2.1,"
         " evalplus 0.3.1, peft 0.14.0, torch 2.13.0 (CPU); ours: the repository's `.venv`.", "",
         f"Data: the first {args.samples} pairs of code-instruct-15k. Training model: the tiny random Llama "
         "(`model=tiny`'s builder on these texts), fp32, eager attention, gradient checkpointing, "
         f"lr {args.lr:g}. Model folders are read by transformers 4.47.1 from a copy in its format "
         f"({'; '.join(r['legacy_changes'])}); probe logits ours vs 4.47.1: max |diff| "
         f"{r['probe_tiny']:.1e} (tiny), {r.get('probe_smollm2', float('nan')):.1e} (SmolLM2).", "",
         "## Batches and order", "",
         f"- Micro-batches (published `SupervisedDataset` + `DataCollatorWithDynamicPack`, 16 samples, "
         f"max length 512, file order) vs ours (`data.batching=samples data.isolate=false`): "
         f"{r['batches']['identical']}/{r['batches']['micro_batches_reference']} identical (input ids, "
         f"labels, attention masks); rows {r['batches']['rows_reference']} vs {r['batches']['rows_ours']}.",
         f"- Shuffled order (the HF Trainer's own dataloader, sampler {r['order']['sampler']}, seed 42, "
         f"2 epochs) vs ours (`data.shuffle=true`): identical = {r['order']['identical']}.", "",
         "## Training: steps, learning rate, loss", "",
         "| run | optimizer steps (ref / ours) | LR max rel. diff | loss max rel. diff | grad-norm max rel. "
         "diff | verdict |", "|---|---|---|---|---|---|"]
    for name, d in r["train_diffs"].items():
        ok = d["same_steps"] and d["lr_ok"] and d["loss_ok"]
        L.append(f"| {name} | {d['steps_ref']} / {d['steps_ours']} | {fmt(d['lr_max_rel'])} | "
                 f"{fmt(d['loss_max_rel'])} | {fmt(d['grad_norm_max_rel'])} | "
                 f"{'same (LR <= 1e-9, loss <= 2%)' if ok else 'DIFFERENT'} |")
    L += ["", "The check's bounds (LR within 1e-9 relative, loss within 2%) are loose for a tiny model trained 8 steps: "
          "the isolated-packing control stays within 2% on the loss too. What separates the recipes is the "
          "agreement itself: ours matches the reference to the 4 decimals it logs and its gradient norms "
          "to ~1e-6, where isolated packing moves the gradient norms by several percent and best-fit "
          "batching changes the number of steps."]
    seq_ref, seq_ours = r["train"]["reference sequential"], r["train"]["ours sequential"]
    L += ["", "Per step, file order (the reference logs the loss rounded to 4 decimals, and the learning "
          "rate after each step's scheduler update):", "",
          "| step | LR ref | LR ours | loss ref | loss ours | grad norm ref | grad norm ours |",
          "|---|---|---|---|---|---|---|"]
    for i in range(max(len(seq_ref["loss"]), len(seq_ours["loss"]))):
        g = lambda d, k: d[k][i] if i < len(d[k]) else None  # noqa: E731
        L.append(f"| {i + 1} | {g(seq_ref, 'lr'):.6g} | {g(seq_ours, 'lr'):.6g} | {g(seq_ref, 'loss')} | "
                 f"{g(seq_ours, 'loss'):.4f} | {g(seq_ref, 'grad_norm'):.4f} | {g(seq_ours, 'grad_norm'):.4f} |")
    L += ["", f"Plan ours printed before training: {json.dumps(seq_ours['plan'])}", "",
          "Reference run-time patches (training): " + "; ".join(seq_ref["patches"]),
          "", "Reference arguments (sft_fsdp.sh's, except: one CPU process instead of `accelerate launch` "
          "on 8 GPUs, no `--bf16/--tf32`, `--use_flash_attn False`, logging every step, the sizes above): `"
          + " ".join(seq_ref["args"]) + "`", ""]
    if "generation" in r:
        g = r["generation"]
        n = len(g["tasks"])
        L += ["## Generation: `eval/codegen.py --backend hf --greedy` vs `evaluate.py backend=hf`", "",
              f"First {n} MBPP+ tasks, SmolLM2-135M-Instruct (`model=smollm2`), bf16 on the CPU, eager "
              "attention, one prompt at a time; ours with the published generation settings "
              "(`generation.max_new_tokens=768 generation.add_special_tokens=true "
              "backend.attn_implementation=eager backend.batch_size=1 backend.dtype=bfloat16`). "
              f"Wall time: reference {g['time_ref_s']} s, ours {g['time_ours_s']} s (ours includes grading).", "",
              "| task | prompt tokens | prompt ids identical | solution chars | solution identical |",
              "|---|---|---|---|---|"]
        for t in g["tasks"]:
            L.append(f"| {t['task_id']} | {t['prompt_tokens']} | {t['prompt_ids_equal']} | "
                     f"{t['solution_chars']} | {t['solution_equal']} |")
        L += ["", f"Prompt ids with a BOS-adding tokenizer and a template that starts with BOS (SmolLM2's "
              f"tokenizer given a BOS post-processor and the paper's template): identical = "
              f"{g['bos_prompt_ids_equal']}; the published code starts every prompt with two BOS "
              f"tokens = {g['bos_double']} (first ids {g['bos_first_ids']}).", "",
              "Reference run-time patches (generation): " + "; ".join(g["patches"]), ""]
    return "\n".join(L)


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    except OSError:
        pass
    return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, type=Path, help="the published code: a checkout or a bare git dir")
    ap.add_argument("--reference-python", required=True, help="python of the reference environment")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-2, help="high enough that a tiny random model learns in 8 steps")
    ap.add_argument("--skip-generation", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "parity_train.md")
    ap.add_argument("--render", type=Path, help="only re-render the report from a saved parity_train.json")
    args = ap.parse_args()
    if args.render:
        res = json.loads(args.render.read_text())
        args.samples, args.lr = res["args"]["samples"], res["args"]["lr"]
        args.out.write_text(report(res, args) + "\n")
        return 0
    if not Path(args.reference_python).is_file():
        print(f"error: {args.reference_python}: no such interpreter (--reference-python)", file=sys.stderr)
        return 2
    cache = Path(os.environ.get("CODESELECT_CACHE", Path.home() / ".cache" / "codeselect"))
    tmp_ctx = tempfile.TemporaryDirectory() if args.workdir is None else None
    work = Path(tmp_ctx.name) if tmp_ctx else args.workdir
    work.mkdir(parents=True, exist_ok=True)
    from omegaconf import OmegaConf

    from codeselect.prompts import prompt_text
    from codeselect.train.models import smollm2_checkpoint, tiny_checkpoint

    refpy = args.reference_python
    ref = reference_code(args.reference, work / "reference")
    rows = []
    with gzip.open(SHARED / "instruct" / "code-instruct-15k.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if len(rows) == args.samples:
                break
    pool = work / "pool.jsonl"
    pool.write_text("".join(json.dumps({"id": r["id"], "instruction": r["instruction"],
                                        "response": r["response"]}) + "\n" for r in rows))
    tiny_cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "tiny.yaml"))
    tiny = tiny_checkpoint([prompt_text(r["instruction"]) + r["response"] for r in rows], cache, tiny_cfg)
    tiny_legacy = work / "tiny-4.47"
    res: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_name(),
                           "args": {"samples": args.samples, "lr": args.lr, "tasks": args.tasks}}
    res["legacy_changes"] = legacy_copy(tiny, tiny_legacy)
    res["probe_tiny"] = probe_matches(refpy, ref, tiny, tiny_legacy, work)
    print(f"tiny model {tiny}: probe logits max |diff| {res['probe_tiny']:.2e}", flush=True)
    res["batches"] = compare_batches(refpy, ref, tiny, tiny_legacy, pool, rows, work)
    print("batches:", res["batches"], flush=True)
    res["order"] = compare_order(refpy, ref, len(rows), work)
    print("order:", res["order"], flush=True)
    res["train"] = {
        "reference sequential": reference_train(refpy, ref, tiny_legacy, pool, args.lr, work / "ref-seq", False, work),
        "ours sequential": ours_train(tiny, pool, args.lr, work / "ours-seq", work, "data.shuffle=false"),
        "reference shuffled": reference_train(refpy, ref, tiny_legacy, pool, args.lr, work / "ref-shuf", True, work),
        "ours shuffled": ours_train(tiny, pool, args.lr, work / "ours-shuf", work, "data.shuffle=true"),
        "ours sequential, isolated packing (control)": ours_train(
            tiny, pool, args.lr, work / "ours-iso", work, "data.shuffle=false", "data.isolate=true"),
        "ours sequential, best-fit batching (control)": ours_train(
            tiny, pool, args.lr, work / "ours-bestfit", work, "data.shuffle=false", "data.batching=best_fit"),
    }
    t = res["train"]
    res["train_diffs"] = {
        "file order: `experiment=paper data.shuffle=false`": diff_runs(t["reference sequential"], t["ours sequential"]),
        "shuffled, seed 42: `experiment=paper`": diff_runs(t["reference shuffled"], t["ours shuffled"]),
        "control: ours with `data.isolate=true` (our default), file order": diff_runs(
            t["reference sequential"], t["ours sequential, isolated packing (control)"]),
        "control: ours with `data.batching=best_fit`, file order": diff_runs(
            t["reference sequential"], t["ours sequential, best-fit batching (control)"]),
    }
    for k, v in res["train_diffs"].items():
        print(k, v, flush=True)
    if not args.skip_generation:
        smol = smollm2_checkpoint(cache)
        smol_legacy = work / "smollm2-4.47"
        legacy_copy(smol, smol_legacy)
        res["probe_smollm2"] = probe_matches(refpy, ref, smol, smol_legacy, work)
        mbpp = SHARED / "evalplus" / "MbppPlus-v0.2.0.jsonl"
        tasks_file = work / f"mbpp-first{args.tasks}.jsonl"
        tasks_file.write_text("".join(mbpp.read_text().splitlines(keepends=True)[:args.tasks]))
        res["generation"] = compare_generation(refpy, ref, smol, smol_legacy, tasks_file, mbpp, args.tasks, work)
        print("generation:", res["generation"], flush=True)
    text = report(res, args)
    args.out.write_text(text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    print(text)
    if tmp_ctx:
        tmp_ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
