"""Pools in their own formats and fields: the real files in ../shared/data/instruct/, Parquet,
datasets folders, CSV and chat rows; bad files in each format are one-line user errors (exit 2);
selections are written back in the pool's format with every key unchanged."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from codeselect.errors import UserError
from codeselect.pool import Fields, load_pool, open_pool

INSTRUCT = "data/instruct"


def _raw_json(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def _alpaca(ins: str, inp: str | None) -> str:
    """Alpaca's prompt puts a non-empty input under its own heading after the instruction."""
    return f"{ins}\n\n### Input:\n{inp}" if inp and inp.strip() else ins


def test_codealpaca_instruction_input_output(shared: Path) -> None:
    path = shared / INSTRUCT / "codealpaca/code_alpaca_2k.json"
    raw = _raw_json(path)
    pool = open_pool(path, {"instruction": "instruction", "input": "input", "response": "output"})
    assert len(pool) == len(raw) == 2017 and pool.synthetic_ids and pool.source.kind == "json"
    recs = list(pool.records)
    assert [r["id"] for r in recs[:3]] == ["0", "1", "2"]
    for i in (0, 1, 2, 500, 2016):
        assert recs[i]["instruction"] == _alpaca(raw[i]["instruction"], raw[i].get("input"))
        assert recs[i]["response"] == raw[i]["output"]
    with_input = sum(1 for r in raw if r.get("input", "").strip())
    assert sum("### Input:" in r["instruction"] for r in recs) == with_input > 900


def test_evol_instruct_instruction_output(shared: Path) -> None:
    path = shared / INSTRUCT / "evol-teacher/evol-codealpaca-2k-2.json"
    raw = _raw_json(path)
    pool = open_pool(path, {"response": "output"})
    assert len(pool) == len(raw)
    assert pool.records[7] == {"id": "7", "instruction": raw[7]["instruction"], "response": raw[7]["output"]}


def test_gpteacher_instruction_input_response(shared: Path) -> None:
    path = shared / INSTRUCT / "gpteacher/codegen-instruct.json"
    raw = _raw_json(path)
    pool = open_pool(path, Fields(input="input"))
    assert len(pool) == 4535
    assert pool.records[0]["instruction"] == raw[0]["instruction"] + "\n\n### Input:\n" + raw[0]["input"]
    assert pool.records[0]["response"] == raw[0]["response"]


def test_conala_intent_snippet_and_a_null_field(shared: Path) -> None:
    path = shared / INSTRUCT / "conala/conala-train.json"
    raw = _raw_json(path)
    pool = open_pool(path, {"id": "no_such_key", "instruction": "intent", "response": "snippet"})
    assert len(pool) == len(raw) and pool.records[3]["response"] == raw[3]["snippet"]
    first_null = next(i for i, r in enumerate(raw) if r["rewritten_intent"] is None)
    with pytest.raises(UserError) as exc:
        open_pool(path, {"instruction": "rewritten_intent", "response": "snippet"})
    assert str(exc.value) == (f"{path} (row {first_null}), key 'rewritten_intent': "
                              "must be a string, got NoneType")


def test_conala_question_ids_repeat_so_they_are_not_unique_ids(shared: Path) -> None:
    path = shared / INSTRUCT / "conala/conala-test.json"
    with pytest.raises(UserError, match=r"duplicate id .*key 'question_id'|key 'question_id'.*duplicate id"):
        open_pool(path, {"id": "question_id", "instruction": "intent", "response": "snippet"})


def test_leetcode_jsonl_gz_with_task_ids(shared: Path) -> None:
    path = shared / INSTRUCT / "leetcodedataset/LeetCodeDataset-v0.2.0-test.jsonl.gz"
    raw = [json.loads(ln) for ln in gzip.open(path, "rt", encoding="utf-8") if ln.strip()]
    pool = open_pool(path, {"id": "task_id", "instruction": "query", "response": "response"})
    assert len(pool) == len(raw) and not pool.synthetic_ids
    assert pool.records[5] == {"id": raw[5]["task_id"], "instruction": raw[5]["query"],
                               "response": raw[5]["response"]}
    rows = load_pool(path, {"id": "task_id", "instruction": "query"})
    assert rows[5]["meta"] == raw[5]["meta"] and rows[5]["instruction"] == raw[5]["query"]


def test_the_merged_15k_pool_keeps_int_ids(shared: Path) -> None:
    pool = open_pool(shared / INSTRUCT / "code-instruct-15k.jsonl.gz")
    assert len(pool) == 15419 and pool.int_ids and pool.records[10]["id"] == 10


# ---- Arrow formats: Parquet, datasets folders, CSV ---------------------------------------------

@pytest.fixture
def gpteacher_rows(shared: Path) -> list[dict]:
    return _raw_json(shared / INSTRUCT / "gpteacher/codegen-instruct.json")[:60]


def test_parquet_with_magicoder_style_fields(gpteacher_rows: list[dict], tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"problem": r["instruction"], "solution": r["response"], "lang": "x"} for r in gpteacher_rows]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "oss.parquet")
    pool = open_pool(tmp_path / "oss.parquet", {"instruction": "problem", "response": "solution"})
    assert pool.source.kind == "parquet" and len(pool) == 60
    assert pool.records[59] == {"id": "59", "instruction": rows[59]["problem"], "response": rows[59]["solution"]}


def test_datasets_folder_and_chat_messages(gpteacher_rows: list[dict], tmp_path: Path) -> None:
    import datasets

    chats = [{"messages": [{"role": "system", "content": "be brief"},
                           {"role": "user", "content": r["instruction"]},
                           {"role": "assistant", "content": r["response"]},
                           {"role": "user", "content": "and in Rust?"},
                           {"role": "assistant", "content": "fn main() {}"}], "uid": f"u{i}"}
             for i, r in enumerate(gpteacher_rows)]
    datasets.Dataset.from_list(chats).save_to_disk(str(tmp_path / "chat"))
    pool = open_pool(tmp_path / "chat", {"id": "uid", "messages": "messages"})
    assert pool.source.kind == "datasets" and len(pool) == 60
    assert pool.records[3] == {"id": "u3", "instruction": gpteacher_rows[3]["instruction"],
                               "response": gpteacher_rows[3]["response"]}


def test_messages_in_jsonl_and_their_errors(tmp_path: Path) -> None:
    good = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    p = tmp_path / "chat.jsonl"
    p.write_text(json.dumps(good) + "\n" + json.dumps({"messages": [{"role": "user", "content": "Q2"}]}) + "\n")
    with pytest.raises(UserError) as exc:
        open_pool(p, {"messages": "messages"})
    assert str(exc.value) == f"{p}:2, key 'messages': no 'assistant' turn after the first 'user' turn"
    p.write_text(json.dumps(good) + "\n")
    assert open_pool(p, {"messages": "messages"}).records[0] == {"id": "0", "instruction": "Q", "response": "A"}


def test_csv_through_datasets(tmp_path: Path) -> None:
    p = tmp_path / "pool.csv"
    p.write_text('instruction,response\n"Add two numbers","def add(a, b):\n    return a + b"\nReverse,"s[::-1]"\n')
    pool = open_pool(p)
    assert len(pool) == 2 and pool.records[0]["response"] == "def add(a, b):\n    return a + b"


# ---- bad files: one line naming file, line/row and key -----------------------------------------

def _bad_parquet(tmp: Path) -> Path:
    p = tmp / "bad.parquet"
    p.write_bytes(b"PAR1 this is not really parquet")
    return p


def _parquet_missing_column(tmp: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp / "cols.parquet"
    pq.write_table(pa.table({"instruction": ["a"], "answer": ["b"]}), p)
    return p


def _parquet_null(tmp: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp / "null.parquet"
    pq.write_table(pa.table({"instruction": ["a", "b", "c"], "response": ["x", None, "z"]}), p)
    return p


def _datasets_bad_split(tmp: Path) -> Path:
    import datasets

    datasets.DatasetDict({"test": datasets.Dataset.from_list([{"instruction": "a", "response": "b"}])}) \
        .save_to_disk(str(tmp / "dd"))
    return tmp / "dd"


def _datasets_broken(tmp: Path) -> Path:
    (tmp / "broken").mkdir()
    (tmp / "broken" / "state.json").write_text("{not json")
    return tmp / "broken"


def _json_wrong_type(tmp: Path) -> Path:
    p = tmp / "pool.json"
    p.write_text(json.dumps([{"instruction": "a", "response": "b"}, {"instruction": 3, "response": "c"}]))
    return p


def _jsonl_malformed(tmp: Path) -> Path:
    p = tmp / "pool.jsonl"
    p.write_text('{"instruction": "a", "response": "b"}\n{"instruction": "a", "respo\n')
    return p


def _jsonl_gz_missing_key(tmp: Path) -> Path:
    p = tmp / "pool.jsonl.gz"
    with gzip.open(p, "wt") as fh:
        fh.write('{"instruction": "a", "response": "b"}\n{"instruction": "c"}\n')
    return p


def _csv_missing_column(tmp: Path) -> Path:
    p = tmp / "pool.csv"
    p.write_text("question,answer\nq,a\n")
    return p


BAD = [
    (_json_wrong_type, r"pool\.json \(row 1\), key 'instruction': must be a string, got int"),
    (_jsonl_malformed, r"pool\.jsonl:2: malformed JSON"),
    (_jsonl_gz_missing_key, r"pool\.jsonl\.gz:2, key 'response': missing required key"),
    (_bad_parquet, r"bad\.parquet: not a readable Parquet file"),
    (_parquet_missing_column, r"cols\.parquet, key 'response': no such column \(columns: instruction, answer\)"),
    (_parquet_null, r"null\.parquet \(row 1\), key 'response': must be a string, got null"),
    (_datasets_bad_split, r"dd, key 'data\.split': no split 'train' \(splits: test\)"),
    (_datasets_broken, r"broken: datasets cannot load it"),
    (_csv_missing_column, r"pool\.csv, key 'instruction': no such column"),
]


@pytest.mark.parametrize("make,message", BAD, ids=[b[0].__name__.strip("_") for b in BAD])
def test_bad_file_is_one_line_user_error(make, message: str, tmp_path: Path) -> None:
    path = make(tmp_path)
    with pytest.raises(UserError, match=message) as exc:
        open_pool(path)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("make", [_json_wrong_type, _jsonl_gz_missing_key, _parquet_null, _datasets_bad_split,
                                  _csv_missing_column], ids=lambda f: f.__name__.strip("_"))
def test_select_py_exits_2_with_one_line_for_bad_files(make, tmp_path: Path) -> None:
    from test_select_cli import run_select

    path = make(tmp_path)
    out = run_select(f"data.path={path}", "selector=random", "sample_num=1", "embedding=precomputed",
                     f"embedding.path={tmp_path / 'none.npy'}", f"hydra.run.dir={tmp_path / 'run'}",
                     "logger=none", "plot=false", timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), out.stderr
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("*-sn1*"))


def test_hub_id_offline_is_one_line_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match=r"^no-such-user-xyz/no-such-set: datasets cannot load it") as exc:
        open_pool("no-such-user-xyz/no-such-set")
    assert "\n" not in str(exc.value)
