"""The data layer: loading, validation errors (file, line, key), atomic writes, naming."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from codeselect.data import load_pool, pool_hash, selection_filename, size_tag, write_jsonl
from codeselect.errors import UserError


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_keeps_extra_keys_and_order(tmp_path: Path) -> None:
    recs = [{"id": i, "instruction": f"do {i}", "response": f"r{i}", "language": "py", "meta": {"x": i}}
            for i in range(5)]
    p = write_jsonl(tmp_path / "pool.jsonl", recs)
    assert load_pool(p) == recs


def test_json_array_and_gzip(tmp_path: Path) -> None:
    recs = [{"id": "a", "instruction": "x", "response": "y"}, {"id": "b", "instruction": "z", "response": "w"}]
    (tmp_path / "pool.json").write_text(json.dumps(recs))
    assert load_pool(tmp_path / "pool.json") == recs
    with gzip.open(tmp_path / "pool.jsonl.gz", "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in recs))
    assert load_pool(tmp_path / "pool.jsonl.gz") == recs


def test_real_pool_loads(shared: Path) -> None:
    recs = load_pool(shared / "data/instruct/code-instruct-15k.jsonl.gz")
    assert len(recs) == 15419 and {"id", "instruction", "response", "source"} <= set(recs[0])


@pytest.mark.parametrize("lines, expected", [
    (['{"id": 1, "instruction": "a", "response": "b"}', '{"id": 2, "instruction": "a"'],
     r"pool.jsonl:2: malformed JSON"),
    (['{"id": 1, "instruction": "a", "response": "b"}', '{"id": 2, "response": "b"}'],
     r"pool.jsonl:2, key 'instruction': missing required key"),
    (['{"id": 1, "instruction": "a", "response": "b"}', '{"id": 1, "instruction": "c", "response": "d"}'],
     r"pool.jsonl:2, key 'id': duplicate id '1'"),
    (['{"id": 1.5, "instruction": "a", "response": "b"}'], r"pool.jsonl:1, key 'id': must be an int or a string"),
    (['{"id": 1, "instruction": 3, "response": "b"}'], r"pool.jsonl:1, key 'instruction': must be a string"),
    (['[1, 2]'], r"pool.jsonl:1: expected a JSON object"),
    ([''], r"pool.jsonl: the pool is empty"),
])
def test_bad_input_names_file_line_key(tmp_path: Path, lines: list[str], expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        load_pool(_jsonl(tmp_path / "pool.jsonl", lines))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="pool file not found"):
        load_pool(tmp_path / "nope.jsonl")


def test_duplicate_ids_across_types_collide(tmp_path: Path) -> None:
    # ids are written to the manifest as strings, so 1 and "1" are the same sample
    p = _jsonl(tmp_path / "pool.jsonl", ['{"id": 1, "instruction": "a", "response": "b"}',
                                          '{"id": "1", "instruction": "c", "response": "d"}'])
    with pytest.raises(UserError, match="duplicate id"):
        load_pool(p)


def test_naming() -> None:
    assert size_tag(10000) == "10K" and size_tag(1500) == "1500"
    assert selection_filename("data/train/Mixed-Python-92k.jsonl", 10000) == "Mixed-Python-92k-sn10K.jsonl"
    assert selection_filename("x/pool.jsonl.gz", 250) == "pool-sn250.jsonl"


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    class Boom:  # not JSON serialisable
        pass

    with pytest.raises(TypeError):
        write_jsonl(tmp_path / "out.jsonl", [{"id": 1}, {"id": Boom()}])
    assert list(tmp_path.iterdir()) == []


def test_pool_hash_tracks_content() -> None:
    a = [{"id": 1, "instruction": "x", "response": "y"}]
    b = [{"id": 1, "instruction": "x", "response": "z"}]
    assert pool_hash(a) == pool_hash([dict(a[0], extra=1)]) != pool_hash(b)
