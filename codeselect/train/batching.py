"""Which samples go into which micro-batch, and when the optimizer steps: the published recipe's arithmetic.

The paper's models were trained with the Hugging Face `Trainer` (transformers 4.47.1, accelerate 1.2.1)
and a collator that packs each micro-batch. Reproducing its step count, learning-rate schedule and data
order needs that arithmetic, written here as pure functions (independent of Lightning, testable):

- order: a seeded permutation of the dataset per epoch, `torch.randperm(n)` from a generator seeded
  with `seed + epoch` (accelerate's seedable sampler), or the file order;
- sharding: `batch_size` items per device per micro-batch, micro-batch `i` of the stream going to
  rank `i % world_size`; with several ranks, the stream is topped up with items from its start until
  every rank has the same number of full micro-batches (accelerate's `even_batches`);
- packing a micro-batch: its samples sorted by length (stable) and concatenated greedily into rows of
  at most `max_length` tokens, a new row whenever the next sample would overflow;
- accumulation windows: transformers 4.47.1 `Trainer._inner_training_loop`. Per epoch it takes
  `len(dataloader) // accum + 1` windows of `accum` micro-batches, the last one of
  `num_examples % accum` (or `accum`) micro-batches, and steps after micro-batch `s` when
  `(s + 1) % accum == 0` or `s + 1 == len(dataloader)`. The optimizer-step budget (the cosine
  schedule's length) is `ceil(epochs * max(len(dataloader) // accum, 1))`, training stops there. When
  `num_examples % accum` is smaller than the micro-batches left for the last window, only that many
  are trained, their gradient is carried into the next epoch's first step, the rest are skipped:
  the Trainer does this, so do we (and say so before training).

Written here rather than taken from the libraries because our trainer is Lightning's, which has its
own sampler sharding (DistributedSampler) and accumulation rules; the functions below are checked
against transformers and accelerate themselves in `benchmarks/parity_train.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

BATCHINGS = ("samples", "best_fit")


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """Item indices in the order one epoch draws them."""
    if not shuffle:
        return list(range(n))
    gen = torch.Generator()
    gen.manual_seed(seed + epoch)
    return torch.randperm(n, generator=gen).tolist()


def shard(order: Sequence[int], batch_size: int, world_size: int, rank: int) -> list[list[int]]:
    """This rank's micro-batches (item indices) from one epoch's order.

    One rank: consecutive chunks of `batch_size`, the last one possibly short. Several ranks: the
    stream is extended with items from its beginning (cycled) until it fills a whole number of
    rounds of `world_size` full micro-batches; rank r takes micro-batches r, r + W, r + 2W, ...
    """
    n = len(order)
    if n == 0:
        return []
    if world_size == 1:
        return [list(order[i:i + batch_size]) for i in range(0, n, batch_size)]
    chunks = math.ceil(n / batch_size)
    rounds = math.ceil(chunks / world_size)
    head = list(order[:min(n, world_size * batch_size)])  # what the top-up cycles through
    extra = rounds * world_size * batch_size - n
    stream = list(order) + [head[i % len(head)] for i in range(extra)]
    return [stream[(k * world_size + rank) * batch_size:(k * world_size + rank + 1) * batch_size]
            for k in range(rounds)]


def pack_sorted_greedy(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Rows (positions into `lengths`) of one micro-batch: samples sorted by length, ascending and
    stable, appended to the current row until the next one would exceed `max_length`."""
    rows: list[list[int]] = [[]]
    used = 0
    for i in sorted(range(len(lengths)), key=lambda j: lengths[j]):
        if used + lengths[i] > max_length and rows[-1]:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += lengths[i]
    return rows if rows[-1] else rows[:-1]


@dataclass(frozen=True)
class Windows:
    """One epoch's accumulation windows over a rank's `micro_batches`: sizes in order, and whether each
    ends with an optimizer step (the last one may not: its gradient is carried over)."""

    micro_batches: int
    sizes: tuple[int, ...]
    steps: tuple[bool, ...]

    @property
    def used(self) -> int:
        return sum(self.sizes)

    @property
    def skipped(self) -> int:
        return self.micro_batches - self.used

    @property
    def optimizer_steps(self) -> int:
        return sum(self.steps)

    @property
    def carried(self) -> int:
        """Micro-batches whose gradient is carried into the next epoch's first step."""
        return sum(size for size, step in zip(self.sizes, self.steps) if not step)


def epoch_windows(micro_batches: int, accum: int, num_examples: int) -> Windows:
    """The Trainer's windows for one epoch of `micro_batches` on a rank (`num_examples` = dataset size)."""
    remainder = num_examples % accum or accum
    total_updates = micro_batches // accum + 1
    sizes, steps, start = [], [], 0
    for u in range(total_updates):
        take = min(accum if u != total_updates - 1 else remainder, micro_batches - start)
        if take <= 0:
            break
        end = start + take  # micro-batches start .. end-1; the Trainer steps after s when:
        step = any((s + 1) % accum == 0 or s + 1 == micro_batches for s in range(start, end))
        sizes.append(take)
        steps.append(step)
        start = end
    return Windows(micro_batches, tuple(sizes), tuple(steps))


@dataclass(frozen=True)
class StepBudget:
    """How long training runs: the schedule's length and the epochs the loop may enter."""

    max_steps: int       # optimizer steps before training stops = the LR schedule's length
    epochs: int          # epochs the loop enters at most
    steps_run: int       # optimizer steps actually taken (fewer if the epochs end first)


def step_budget(windows: Windows, accum: int, epochs: int, max_steps: int) -> StepBudget:
    """The Trainer's `max_steps` (from `len(dataloader) // accum`, at least 1 per epoch) and epochs."""
    per_epoch = max(windows.micro_batches // accum, 1)
    if max_steps > 0:
        n_epochs = max_steps // per_epoch + int(max_steps % per_epoch > 0)
        budget = max_steps
    else:
        budget = math.ceil(epochs * per_epoch)
        n_epochs = math.ceil(epochs)
    return StepBudget(budget, n_epochs, min(budget, n_epochs * windows.optimizer_steps))


@dataclass
class MicroBatch:
    """What one training call gets: rows of sample indices, the loss denominator, whether to step."""

    rows: list[list[int]]
    norm: float                  # the summed token loss of this micro-batch is divided by this
    step: bool                   # optimizer step after this micro-batch
    epoch: int = 0
    index: int = 0               # position in the epoch


@dataclass
class EpochPlan:
    """One epoch on one rank, and the whole world's token counts for reporting."""

    micro: list[MicroBatch]
    rows: int = 0                # rows over all ranks this epoch
    slots: list[int] = field(default_factory=list)   # padded tokens (rows x longest row) per micro-batch, all ranks
    tokens: list[int] = field(default_factory=list)  # real tokens per micro-batch, all ranks


class Planner:
    """Builds each epoch's micro-batches for a rank from item lengths and label counts.

    `items` are what the sampler orders: samples (`batching=samples`, packed per micro-batch) or
    pre-packed rows (`best_fit`; `item_rows` gives the samples of each). `norm`: `per_rank` divides a
    micro-batch's summed token loss by the label tokens of its window on this rank (transformers
    4.47.1, which then averages gradients over ranks); `all_ranks` by the window's label tokens over
    all ranks divided by the world size, so that the averaged gradient is the token mean of the whole
    window (one big batch).
    """

    def __init__(self, lengths: Sequence[int], labels: Sequence[int], *, batching: str, mode: str,
                 max_length: int, batch_size: int, accum: int, world_size: int, seed: int,
                 shuffle: bool, norm: str = "all_ranks",
                 item_rows: Sequence[Sequence[int]] | None = None) -> None:
        if batching not in BATCHINGS:
            raise ValueError(f"batching must be one of {BATCHINGS}, got {batching!r}")
        if norm not in ("all_ranks", "per_rank"):
            raise ValueError(f"norm must be all_ranks or per_rank, got {norm!r}")
        self.lengths, self.labels = list(lengths), list(labels)
        self.batching, self.mode, self.max_length = batching, mode, int(max_length)
        self.batch_size, self.accum, self.world_size = int(batch_size), int(accum), int(world_size)
        self.seed, self.shuffle, self.norm = int(seed), bool(shuffle), norm
        self.item_rows = [list(r) for r in item_rows] if item_rows is not None else None
        self.num_items = len(self.item_rows) if self.item_rows is not None else len(self.lengths)
        per_rank = len(shard(list(range(self.num_items)), self.batch_size, self.world_size, 0))
        self.windows = epoch_windows(per_rank, self.accum, self.num_items)

    def rows_of(self, items: Sequence[int]) -> list[list[int]]:
        """Rows of sample indices for one micro-batch's items."""
        if self.item_rows is not None:
            return [self.item_rows[i] for i in items]
        if self.mode == "pad":
            return [[i] for i in items]
        rows = pack_sorted_greedy([self.lengths[i] for i in items], self.max_length)
        return [[items[j] for j in row] for row in rows]

    def epoch(self, epoch: int, rank: int) -> EpochPlan:
        """The micro-batches `rank` trains on in `epoch`, with their loss denominators and step flags."""
        order = epoch_order(self.num_items, self.seed, epoch, self.shuffle)
        ranks = [shard(order, self.batch_size, self.world_size, r) for r in range(self.world_size)]
        plan = EpochPlan([])
        start = 0
        for size, step in zip(self.windows.sizes, self.windows.steps):
            per_rank_rows = [[self.rows_of(items) for items in batches[start:start + size]]
                             for batches in ranks]
            counts = [sum(self.labels[i] for mb in rows for row in mb for i in row)
                      for rows in per_rank_rows]
            norm = (counts[rank] if self.norm == "per_rank"
                    else sum(counts) / self.world_size)
            for k, rows in enumerate(per_rank_rows[rank]):
                plan.micro.append(MicroBatch(rows, max(float(norm), 1.0), step and k == size - 1,
                                             epoch, start + k))
            for rows in per_rank_rows:
                for mb in rows:
                    widths = [sum(self.lengths[i] for i in row) for row in mb]
                    plan.rows += len(mb)
                    plan.slots.append(len(mb) * max(widths))
                    plan.tokens.append(sum(widths))
            start += size
        return plan


def warmup_peak(lr: float, warmup_steps: int, steps_run: int) -> float:
    """The highest learning rate a linear warm-up from 0 reaches within `steps_run` optimizer steps
    (step k, counted from 0, uses lr * k / warmup_steps while k < warmup_steps)."""
    if warmup_steps <= 0 or steps_run > warmup_steps:
        return lr
    return lr * max(steps_run - 1, 0) / warmup_steps


def describe(planner: Planner, *, epochs: int, max_steps: int, warmup_steps: int, lr: float,
             samples: int) -> dict:
    """What a run will do, before it starts (all ranks together; token counts from the first epoch)."""
    budget = step_budget(planner.windows, planner.accum, epochs, max_steps)
    first = planner.epoch(0, 0)
    w = planner.windows
    per_device = [s for s in first.slots]
    return {
        "samples": samples, "batching": planner.batching, "world_size": planner.world_size,
        "batch_size": planner.batch_size, "accumulate": planner.accum,
        "items": planner.num_items,
        "rows_per_epoch": first.rows,
        "micro_batches_per_epoch": w.micro_batches,            # per device
        "micro_batches_trained_per_epoch": w.used,
        "micro_batches_skipped_per_epoch": w.skipped,
        "micro_batches_carried_per_epoch": w.carried,
        "optimizer_steps_per_epoch": w.optimizer_steps,
        "schedule_steps": budget.max_steps, "epochs": budget.epochs,
        "optimizer_steps": budget.steps_run,
        "warmup_steps": warmup_steps,
        "warmup_completes": warmup_steps < budget.steps_run,
        "peak_lr": warmup_peak(lr, warmup_steps, budget.steps_run),
        "tokens_per_micro_batch_max": max(per_device) if per_device else 0,   # padded, one device
        "tokens_per_micro_batch_mean": round(sum(per_device) / max(len(per_device), 1), 1),
        "real_tokens_per_micro_batch_mean": round(sum(first.tokens) / max(len(first.tokens), 1), 1),
    }


def report_lines(d: dict) -> tuple[list[str], list[str]]:
    """The plan as a few human lines, with warnings where the recipe does something surprising."""
    unit = "samples" if d["batching"] == "samples" else "rows"
    lines = [f"training plan: {d['samples']:,} samples -> {d['rows_per_epoch']:,} rows per epoch "
             f"({d['batching']}: {d['batch_size']} {unit} per device per micro-batch, "
             f"{d['world_size']} device(s), accumulation {d['accumulate']})",
             f"  {d['micro_batches_per_epoch']:,} micro-batches per device per epoch, "
             f"{d['optimizer_steps_per_epoch']:,} optimizer steps per epoch; {d['optimizer_steps']:,} "
             f"optimizer steps in {d['epochs']} epoch(s) (LR schedule over {d['schedule_steps']:,}), "
             f"{d['warmup_steps']:,} warm-up steps",
             f"  tokens per micro-batch per device: {d['tokens_per_micro_batch_mean']:,.0f} mean, "
             f"{d['tokens_per_micro_batch_max']:,} max (padded); "
             f"{d['real_tokens_per_micro_batch_mean']:,.0f} real on average"]
    warnings = []
    if not d["warmup_completes"]:
        warnings.append(f"warm-up ({d['warmup_steps']} steps) never completes in "
                        f"{d['optimizer_steps']} optimizer steps: the learning rate peaks at "
                        f"{d['peak_lr']:.3g}")
    if d["micro_batches_skipped_per_epoch"] or d["micro_batches_carried_per_epoch"]:
        warnings.append(f"as the HF Trainer does, {d['micro_batches_carried_per_epoch']} micro-batch(es) "
                        f"per epoch are carried into the next epoch's first step and "
                        f"{d['micro_batches_skipped_per_epoch']} are not trained (dataset size % "
                        f"accumulation is smaller than the last window)")
    return lines, warnings


class EpochCounter:
    """The epoch a planned sampler draws; Lightning calls `set_epoch` on `dataloader.batch_sampler.sampler`."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)


class PlannedBatchSampler(torch.utils.data.Sampler):
    """Yields `[MicroBatch]` per micro-batch for one rank, for the epoch its `sampler` was set to."""

    def __init__(self, planner: Planner, rank: int) -> None:
        self.planner, self.rank, self.sampler = planner, int(rank), EpochCounter()

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return self.planner.windows.used

    def __iter__(self) -> Iterator[list[MicroBatch]]:
        for mb in self.planner.epoch(self.sampler.epoch, self.rank).micro:
            yield [mb]
