"""The published recipe's batching arithmetic: HF Trainer step counts and learning rates, accelerate's
data order and sharding, the pack collator's rows, the window-token loss.

Oracles: numbers worked out by hand from transformers 4.47.1's `Trainer._inner_training_loop` (written
out case by case below), accelerate's own sampler and shard classes, the cosine-with-warm-up formula,
and cross-entropy computed here from a model's logits.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from codeselect.train.batching import (Planner, epoch_order, epoch_windows, pack_sorted_greedy, shard,
                                       step_budget, warmup_peak)


# ----------------------------------------------------------------------------- the Trainer's arithmetic
# Each case: samples, per-device batch, accumulation, devices, epochs, max_steps ->
#   micro-batches per device per epoch, window sizes, which windows step, schedule length, epochs
#   entered, optimizer steps actually taken. Worked out from transformers 4.47.1:
#   len_dataloader = ceil(ceil(n / B) / W) (accelerate tops every device up to full micro-batches);
#   per epoch `len // A + 1` windows of A micro-batches, the last one of `n % A or A` (at most what is
#   left); step after micro-batch s when (s + 1) % A == 0 or s + 1 == len; schedule length
#   max_steps = ceil(epochs * max(len // A, 1)), or the given max_steps with epochs = ceil(max_steps / that).
CASES = [
    # 300 samples: 19 micro-batches; windows 4,4,4,4,3 (300 % 4 == 0 -> last window up to 4, 3 left,
    # s + 1 == 19 steps); 19 // 4 = 4 per epoch -> schedule of 8: epoch 1 takes 5 steps, epoch 2 three.
    (300, 16, 4, 1, 2, -1, 19, (4, 4, 4, 4, 3), (True,) * 5, 8, 2, 8),
    # The paper: 10K samples on 8 GPUs: 625 micro-batches of 16 -> 79 per GPU (632, topped up);
    # 79 // 4 = 19 -> 57 steps in 3 epochs, 20 windows per epoch (last one 3 micro-batches).
    (10_000, 16, 4, 8, 3, -1, 79, (4,) * 19 + (3,), (True,) * 20, 57, 3, 57),
    # 301 samples: 301 % 4 == 1 -> the last window takes ONE of the 3 micro-batches left, which is
    # not the epoch's last: no step (its gradient is carried), 2 micro-batches skipped.
    (301, 16, 4, 1, 2, -1, 19, (4, 4, 4, 4, 1), (True,) * 4 + (False,), 8, 2, 8),
    # 40 samples, batch 4, accumulation 3: 10 micro-batches, 40 % 3 == 1 -> last window 1 micro-batch,
    # the epoch's last (s + 1 == 10): it steps. 4 steps per epoch, but the schedule counts 10 // 3 = 3
    # per epoch: 6 in 2 epochs, so epoch 2 stops after 2 steps.
    (40, 4, 3, 1, 2, -1, 10, (3, 3, 3, 1), (True,) * 4, 6, 2, 6),
    # Fewer micro-batches than the accumulation: 2 micro-batches, 2 // 4 = 0 -> at least 1 per epoch.
    (20, 16, 4, 1, 3, -1, 2, (2,), (True,), 3, 3, 3),
    # max_steps wins over epochs: 4 per epoch -> 10 steps need 3 epochs.
    (300, 16, 4, 1, 1, 10, 19, (4, 4, 4, 4, 3), (True,) * 5, 10, 3, 10),
    # 2 devices, 50 samples, batch 8: 7 micro-batches of 8 -> 4 per device (8, topped up from the start).
    (50, 8, 2, 2, 1, -1, 4, (2, 2), (True, True), 2, 1, 2),
]


@pytest.mark.parametrize("n,bs,acc,world,epochs,max_steps,micro,sizes,steps,budget,n_epochs,run", CASES)
def test_trainer_step_arithmetic(n, bs, acc, world, epochs, max_steps, micro, sizes, steps, budget,
                                 n_epochs, run) -> None:
    per_device = len(shard(list(range(n)), bs, world, 0))
    w = epoch_windows(per_device, acc, n)
    b = step_budget(w, acc, epochs, max_steps)
    assert (per_device, w.sizes, w.steps) == (micro, sizes, steps)
    assert (b.max_steps, b.epochs, b.steps_run) == (budget, n_epochs, run)


def cosine_with_warmup(step: int, lr: float, warmup: int, total: int) -> float:
    """The learning rate optimizer step `step` (from 0) uses: linear warm-up from 0, then half a cosine."""
    if step < warmup:
        return lr * step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return lr * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


@pytest.mark.parametrize("n,bs,acc,world,epochs,warmup", [(300, 16, 4, 1, 2, 10), (10_000, 16, 4, 8, 3, 100),
                                                         (40, 4, 3, 1, 2, 2), (2_000, 4, 2, 2, 1, 5)])
def test_learning_rate_of_every_step(n, bs, acc, world, epochs, warmup) -> None:
    from codeselect.train.module import SFTModule

    lr = 5e-5
    w = epoch_windows(len(shard(list(range(n)), bs, world, 0)), acc, n)
    b = step_budget(w, acc, epochs, -1)
    module = SFTModule(torch.nn.Linear(2, 2), lr=lr, warmup_steps=warmup, total_steps=b.max_steps)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    used = []
    for _ in range(b.steps_run):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [cosine_with_warmup(k, lr, warmup, b.max_steps) for k in range(b.steps_run)]
    assert used == pytest.approx(expected, rel=1e-12, abs=1e-18)
    assert warmup_peak(lr, warmup, b.steps_run) == pytest.approx(max(expected), rel=1e-12)


# ----------------------------------------------------------------------------- accelerate's order and shards
@pytest.mark.parametrize("n,epoch", [(300, 0), (300, 1), (17, 2)])
def test_shuffled_order_is_accelerates_seedable_sampler(n, epoch) -> None:
    from accelerate.data_loader import SeedableRandomSampler

    sampler = SeedableRandomSampler(range(n), data_seed=42)
    sampler.set_epoch(epoch)
    assert epoch_order(n, 42, epoch, shuffle=True) == list(sampler)
    assert epoch_order(n, 42, epoch, shuffle=False) == list(range(n))


@pytest.mark.parametrize("n,bs,world", [(50, 8, 2), (10_000, 16, 8), (45, 16, 4), (7, 4, 3), (64, 16, 4), (1, 4, 2)])
def test_sharding_matches_accelerates_even_batches(n, bs, world) -> None:
    from accelerate.data_loader import BatchSamplerShard

    order = list(range(100, 100 + n))
    inner = torch.utils.data.BatchSampler(order, batch_size=bs, drop_last=False)
    for rank in range(world):
        theirs = list(BatchSamplerShard(inner, num_processes=world, process_index=rank, even_batches=True))
        assert shard(order, bs, world, rank) == theirs


# ----------------------------------------------------------------------------- the pack collator's rows
def test_micro_batch_packing_follows_the_collator_not_the_whole_selection() -> None:
    from codeselect.train.data import pack_best_fit

    lengths = [5, 9, 2, 7, 3, 6]
    # The published collator on micro-batch [0, 1, 2] (lengths 5, 9, 2), max length 10: sorted by
    # length -> 2 (#2), 5 (#0), 9 (#1); 2 + 5 = 7 fits, + 9 overflows -> rows [#2, #0], [#1].
    # Micro-batch [3, 4, 5] (7, 3, 6): sorted 3 (#4), 6 (#5), 7 (#3): 3 + 6 = 9, + 7 overflows.
    plan = Planner(lengths, [1] * 6, batching="samples", mode="pack", max_length=10, batch_size=3,
                   accum=1, world_size=1, seed=0, shuffle=False)
    assert [mb.rows for mb in plan.epoch(0, 0).micro] == [[[2, 0], [1]], [[4, 5], [3]]]
    assert pack_sorted_greedy([5, 9, 2], 10) == [[2, 0], [1]]
    # Whole-selection best fit (data.batching=best_fit) groups them otherwise: 9 | 7 + 3 | 6 + 2 | 5.
    assert sorted(map(sorted, pack_best_fit(lengths, 10))) == [[0], [1], [2, 5], [3, 4]]
    # pad: one sample per row, in the sampler's order.
    pad = Planner(lengths, [1] * 6, batching="samples", mode="pad", max_length=10, batch_size=3,
                  accum=1, world_size=1, seed=0, shuffle=False)
    assert [mb.rows for mb in pad.epoch(0, 0).micro] == [[[0], [1], [2]], [[3], [4], [5]]]


def test_loss_denominators_count_the_windows_label_tokens() -> None:
    # 6 samples with 1..6 label tokens, 2 per micro-batch, accumulation 2 -> windows {0,1,2,3}, {4,5}.
    labels = [1, 2, 3, 4, 5, 6]
    plan = Planner([8] * 6, labels, batching="samples", mode="pack", max_length=32, batch_size=2,
                   accum=2, world_size=1, seed=0, shuffle=False)
    micro = plan.epoch(0, 0).micro
    assert [(mb.norm, mb.step) for mb in micro] == [(10.0, False), (10.0, True), (11.0, True)]
    # Two devices: device 0 gets micro-batches 0 and 2 of the stream, device 1 gets 1 and 3 (6 samples,
    # batch 2 -> 3 micro-batches, topped up with samples 0, 1). One window of 2 per device.
    per_rank = [Planner([8] * 6, labels, batching="samples", mode="pack", max_length=32, batch_size=2,
                        accum=2, world_size=2, seed=0, shuffle=False, norm=norm).epoch(0, 0).micro
                for norm in ("per_rank", "all_ranks")]
    assert [mb.rows for mb in per_rank[0]] == [[[0, 1]], [[4, 5]]]
    assert [mb.norm for mb in per_rank[0]] == [1 + 2 + 5 + 6] * 2            # device 0's own tokens
    assert [mb.norm for mb in per_rank[1]] == [(1 + 2 + 3 + 4 + 5 + 6 + 1 + 2) / 2] * 2  # all / world


# ----------------------------------------------------------------------------- the window-token loss
REPO = Path(__file__).resolve().parents[1]


def train(run_dir: Path, *overrides: str) -> dict:
    """train.py's job in this process: CPU, one device, batch 2, no checkpoints, no logger."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from codeselect.train.run import run_training

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "strategy=single", "batch_size=2", "trainer.accumulate_grad_batches=1", "data.max_length=256",
            "checkpoint_every_n_steps=0", "trainer.enable_progress_bar=false", "logger=none", *overrides])
    return run_training(cfg, run_dir)


@pytest.fixture(scope="module")
def window_run(shared: Path, tmp_path_factory: pytest.TempPathFactory):
    """One optimizer step over a window of 2 micro-batches whose label-token counts differ a lot, with a
    tiny model trained a little first (so that short and long responses have different token losses)."""
    import gzip

    recs = []
    with gzip.open(shared / "data" / "instruct" / "code-instruct-15k.jsonl.gz", "rt") as fh:
        for line in fh:
            recs.append(json.loads(line))
            if len(recs) == 40:
                break
    tmp = tmp_path_factory.mktemp("window")
    (tmp / "forty.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    warm = train(tmp / "warm", "model=tiny", f"data.path={tmp / 'forty.jsonl'}", "trainer.max_steps=20",
                 "optim.lr=3e-3", "optim.warmup_steps=3")
    four = [{"id": r["id"], "instruction": r["instruction"][:200],
             "response": r["response"][:30 if i < 2 else 400]} for i, r in enumerate(recs[:4])]
    (tmp / "four.jsonl").write_text("".join(json.dumps(r) + "\n" for r in four))
    summary = train(tmp / "window", "model=hf", f"model.path={tmp / 'warm' / 'checkpoint'}",
                    "model.dtype=float32", f"data.path={tmp / 'four.jsonl'}", "trainer.accumulate_grad_batches=2",
                    "trainer.max_epochs=1", "data.shuffle=false", "data.max_length=1024", "optim.lr=1e-3",
                    "optim.warmup_steps=0", "trainer.gradient_clip_val=0")
    assert warm["final_loss"] < warm["initial_loss"]
    return four, summary


def test_one_step_loss_is_the_token_mean_over_the_whole_window(window_run) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codeselect.prompts import CHAT_TEMPLATE, prompt_text

    recs, summary = window_run
    assert summary["steps"] == 1 and summary["plan"]["micro_batches_per_epoch"] == 2
    tok = AutoTokenizer.from_pretrained(summary["model_path"])
    tok.chat_template = CHAT_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(summary["model_path"], dtype=torch.float32)
    assert summary["data"]["truncated"] == 0
    sums, counts = [], []
    for r in recs:  # by hand: token cross-entropy of each response (+ EOS) after its prompt
        prompt = tok(tok.bos_token + prompt_text(r["instruction"]), add_special_tokens=False)["input_ids"]
        answer = tok(r["response"] + tok.eos_token, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + answer])
        logits = model(ids).logits[0, len(prompt) - 1:-1]
        sums.append(torch.nn.functional.cross_entropy(logits, ids[0, len(prompt):], reduction="sum"))
        counts.append(len(answer))
    micro = [(sums[0] + sums[1], counts[0] + counts[1]), (sums[2] + sums[3], counts[2] + counts[3])]
    assert micro[1][1] > 4 * micro[0][1]  # very different token counts
    window = (micro[0][0] + micro[1][0]) / (micro[0][1] + micro[1][1])
    mean_of_means = (micro[0][0] / micro[0][1] + micro[1][0] / micro[1][1]) / 2
    assert summary["losses"][0] == pytest.approx(float(window), rel=1e-5)
    assert abs(float(window) - float(mean_of_means)) > 1e-3 * float(window)
    window.backward()
    grad = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters() if p.grad is not None))
    assert summary["grad_norms"][0] == pytest.approx(float(grad), rel=1e-4)
