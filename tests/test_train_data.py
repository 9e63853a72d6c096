"""SFT data: response-only loss, truncation, best-fit packing, and packed samples that stay isolated
(or not, as the published packing)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from codeselect.errors import UserError
from codeselect.prompts import SYSTEM_PROMPT, prompt_text
from codeselect.train.batching import Planner
from codeselect.train.data import IGNORE, Collator, SFTDataModule, apply_paper_template, encode, pack_best_fit


def real_records(shared: Path, n: int) -> list[dict]:
    out = []
    with gzip.open(shared / "data" / "instruct" / "code-instruct-15k.jsonl.gz", "rt") as fh:
        for line in fh:
            out.append(json.loads(line))
            if len(out) == n:
                break
    return out


@pytest.fixture(scope="module")
def records(shared: Path) -> list[dict]:
    return real_records(shared, 40)


@pytest.fixture(scope="module")
def tiny(records: list[dict], cache_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codeselect.train.models import tiny_checkpoint

    path = tiny_checkpoint([prompt_text(r["instruction"]) + r["response"] for r in records], cache_dir,
                           {"max_position_embeddings": 2048})
    tok = apply_paper_template(AutoTokenizer.from_pretrained(path))
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()
    return model, tok


def test_prompt_tokens_carry_no_loss_and_response_plus_eos_do(tiny) -> None:
    _, tok = tiny
    rec = {"id": 1, "instruction": "Add two numbers.", "response": "def add(a, b):\n    return a + b\n"}
    enc = encode(tok, [rec], max_length=512)
    ids, labels = enc.input_ids[0], enc.labels[0]
    n_prompt = sum(1 for x in labels if x == IGNORE)
    # The masked part decodes to exactly the paper's prompt; the trained part to response + EOS.
    assert tok.decode(ids[:n_prompt]) == tok.bos_token + prompt_text(rec["instruction"])
    assert tok.decode(labels[n_prompt:]) == rec["response"] + tok.eos_token
    assert labels[n_prompt:] == ids[n_prompt:] and labels[-1] == tok.eos_token_id
    assert SYSTEM_PROMPT in tok.decode(ids[:n_prompt])


def test_truncation_keeps_max_length_and_drops_samples_without_response(tiny) -> None:
    _, tok = tiny
    long = {"id": 1, "instruction": "Write code.", "response": "x = 1\n" * 400}
    huge_prompt = {"id": 2, "instruction": "word " * 600, "response": "ok"}
    enc = encode(tok, [long, huge_prompt], max_length=64)
    assert len(enc.input_ids) == 1 and len(enc.input_ids[0]) == 64
    assert enc.truncated == 2 and enc.dropped == 1
    # The published recipe keeps such a sample (it still takes a place in its micro-batch).
    kept = encode(tok, [long, huge_prompt], max_length=64, keep_empty=True)
    assert len(kept.input_ids) == 2 and kept.empty == 1 and kept.label_counts()[1] == 0
    with pytest.raises(UserError, match="data.max_length"):
        encode(tok, [huge_prompt], max_length=64)


def test_best_fit_packing_fills_rows_and_keeps_every_sample() -> None:
    lengths = [7, 3, 5, 5, 2, 8, 1, 9, 4, 6]
    rows = pack_best_fit(lengths, capacity=10)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 10 for r in rows)
    assert len(rows) == 5  # 50 tokens in rows of 10: perfect fill
    assert pack_best_fit(lengths, 10) == rows  # deterministic


def test_packed_batch_loss_equals_token_weighted_per_sample_loss(tiny) -> None:
    model, tok = tiny
    recs = [{"id": i, "instruction": f"Write function number {i} that returns {i * i}.",
             "response": f"def f{i}(x):\n    return x * {i} + {i * i}\n"} for i in range(6)]
    enc = encode(tok, recs, max_length=256)
    rows = pack_best_fit([len(x) for x in enc.input_ids], 300)
    assert any(len(r) > 1 for r in rows)
    batch = Collator(enc, tok.pad_token_id, isolate=True)(rows)
    batch.pop("n_real")
    total, count = 0.0, 0
    with torch.no_grad():
        packed = model(**batch, use_cache=False).loss.item()
        for ids, labels in zip(enc.input_ids, enc.labels):
            lab = torch.tensor([labels])
            n = int((lab[:, 1:] != IGNORE).sum())
            total += model(input_ids=torch.tensor([ids]), labels=lab).loss.item() * n
            count += n
        one_by_one = total / count
        assert packed == pytest.approx(one_by_one, rel=1e-5)
        # The published packing (one causal sequence per row) lets samples see each other.
        naive = Collator(enc, tok.pad_token_id, isolate=False)(rows)
        naive.pop("n_real")
        assert "position_ids" not in naive and int(naive["attention_mask"].sum()) == sum(map(len, enc.input_ids))
        assert abs(model(**naive, use_cache=False).loss.item() - one_by_one) > 1e-3
        # transformers isolates packed rows only with the cache off.
        assert abs(model(**batch, use_cache=True).loss.item() - one_by_one) > 1e-3


def test_pad_batches_mask_padding_and_match_per_sample_loss(tiny) -> None:
    model, tok = tiny
    recs = [{"id": i, "instruction": "Say hi" + "!" * i, "response": "print('hi')" * (i + 1)}
            for i in range(4)]
    enc = encode(tok, recs, max_length=256)
    batch = Collator(enc, tok.pad_token_id, isolate=False)([[i] for i in range(4)])
    assert int(batch["n_real"]) == sum(len(x) for x in enc.input_ids) == int(batch["attention_mask"].sum())
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()


def non_pad(enc, planner: Planner) -> float:
    epoch = planner.epoch(0, 0)
    return sum(epoch.tokens) / sum(epoch.slots)


def test_packing_raises_the_non_padding_fraction_on_real_data(tiny, records) -> None:
    _, tok = tiny
    enc = encode(tok, records, max_length=512, keep_empty=True)
    lengths, labels = [len(x) for x in enc.input_ids], enc.label_counts()
    common = dict(max_length=512, batch_size=8, accum=1, world_size=1, seed=0, shuffle=True)
    pad = non_pad(enc, Planner(lengths, labels, batching="samples", mode="pad", **common))
    pack = non_pad(enc, Planner(lengths, labels, batching="samples", mode="pack", **common))
    best = non_pad(enc, Planner(lengths, labels, batching="best_fit", mode="pack",
                                item_rows=pack_best_fit(lengths, 512), **common))
    assert pack > pad + 0.1 and best > 0.85 and best > pad + 0.2, (pad, pack, best)


def test_data_module_is_deterministic_and_rejects_a_bad_mode(tiny, records) -> None:
    _, tok = tiny
    first = [b["input_ids"] for b in SFTDataModule(records, tok, max_length=256, batch_size=4,
                                                   seed=3).train_dataloader()]
    again = [b["input_ids"] for b in SFTDataModule(records, tok, max_length=256, batch_size=4,
                                                   seed=3).train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, again)) and len(first) == len(again)
    with pytest.raises(UserError, match="data.mode"):
        SFTDataModule(records, tok, max_length=256, mode="stream")
