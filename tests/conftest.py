"""Test-wide settings: offline everything, a shared cache, fast real data from ../shared."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CACHE = REPO / ".cache" / "test"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CODESELECT_CACHE", str(CACHE))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not available")
    return SHARED


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE


@pytest.fixture(scope="session")
def real_pairs(shared: Path):
    """`real_pairs(count, response_chars)`: the first `count` records of the real 15K instruction pool
    whose response starts with a non-space, clipped (instruction 300 characters, response
    `response_chars`) so that LMs score them fast."""
    import gzip
    import itertools
    import json

    def take(count: int, response_chars: int) -> list[dict]:
        out = []
        with gzip.open(shared / "data/instruct/code-instruct-15k.jsonl.gz", "rt", encoding="utf-8") as fh:
            for line in itertools.islice(fh, 200):
                rec = json.loads(line)
                if rec["response"][:1].strip():
                    out.append({**rec, "instruction": rec["instruction"][:300],
                                "response": rec["response"][:response_chars]})
                if len(out) == count:
                    break
        return out

    return take


@pytest.fixture(scope="module")
def humaneval(shared: Path):
    """HumanEval+ from ../shared, loaded once per test module."""
    from codeselect.evaluation.benchmarks import load_benchmark

    return load_benchmark("humaneval", str(shared / "data/evalplus/HumanEvalPlus-v0.1.10.jsonl"))


@pytest.fixture(scope="module")
def mbpp(shared: Path):
    """MBPP+ from ../shared, loaded once per test module."""
    from codeselect.evaluation.benchmarks import load_benchmark

    return load_benchmark("mbpp", str(shared / "data/evalplus/MbppPlus-v0.2.0.jsonl"))
