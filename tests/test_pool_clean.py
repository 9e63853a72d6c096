"""Decontamination against HumanEval+/MBPP+ and deduplication: a naive n-gram oracle on real rows,
planted benchmark rows removed and reported by select.py, near-duplicates found; selections written
in the pool's own format."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from codeselect.pool import open_pool
from codeselect.pool.decontaminate import NgramIndex, build_index, find_contamination
from codeselect.pool.dedup import find_duplicates

EVALPLUS = "data/evalplus"


@pytest.fixture(scope="module")
def bench(shared: Path) -> dict[str, str]:
    """conf/data/file.yaml's decontamination options with the benchmark files from ../shared."""
    from omegaconf import OmegaConf

    opts = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/data/file.yaml").decontamination)
    return {**opts, "humaneval": str(shared / EVALPLUS / "HumanEvalPlus-v0.1.10.jsonl"),
            "mbpp": str(shared / EVALPLUS / "MbppPlus-v0.2.0.jsonl")}


def dedup_opts(**changes):
    from omegaconf import OmegaConf

    opts = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/data/file.yaml").deduplication)
    return {**opts, **changes}


@pytest.fixture(scope="module")
def tasks(bench: dict[str, str]) -> dict[str, dict]:
    out = {}
    for path in (bench["humaneval"], bench["mbpp"]):
        for line in open(path, encoding="utf-8"):
            t = json.loads(line)
            out[t["task_id"]] = t
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _naive_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = _words(text)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)
            if any(not (t.isdigit() or len(t) == 1) for t in w[i:i + n])}


@pytest.fixture(scope="module")
def naive_index(tasks: dict[str, dict]) -> dict[tuple[str, ...], set[str]]:
    """The spec written out with Python sets: every 13-word window of prompt, prompt + solution
    (HumanEval) or solution (MBPP), and repr of each test input -> the tasks it occurs in."""
    grams: dict[tuple[str, ...], set[str]] = {}
    for tid, t in tasks.items():
        texts = [t["prompt"], t["prompt"] + t["canonical_solution"] if tid.startswith("HumanEval")
                 else t["canonical_solution"]]
        texts += [repr(x) for x in list(t["base_input"]) + list(t["plus_input"])]
        for text in texts:
            for g in _naive_ngrams(text, 13):
                grams.setdefault(g, set()).add(tid)
    return grams


def test_real_rows_match_a_naive_set_oracle(shared: Path, bench: dict[str, str], naive_index) -> None:
    pool = open_pool(shared / "data/instruct/code-instruct-15k.jsonl.gz").subset(np.arange(6000, 9000))
    index, _ = build_index(bench)
    ours = {r["id"]: set(r["tasks"]) for r in find_contamination(pool, index)}
    expected = {}
    for rec in pool.records:
        hit: set[str] = set()
        for field in ("instruction", "response"):
            for g in _naive_ngrams(rec[field], 13):
                hit |= naive_index.get(g, set())
        if hit:
            expected[str(rec["id"])] = hit
    assert ours == expected and len(expected) >= 10


def test_n_consecutive_words_flag_and_n_minus_1_do_not() -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron"
    index = NgramIndex.build([("humaneval", "HumanEval/X", text)], n=13)
    w = text.split()
    copied = "Please: " + " ".join(w[1:14]).upper().replace(" ", ",\n  ") + " thanks"
    near = " ".join(w[1:13]) + " rho " + " ".join(w[13:])
    assert index.scan([copied, near, "unrelated text"]) == [{"HumanEval/X": 1}, {}, {}]


def test_numbers_only_windows_are_not_evidence() -> None:
    index = NgramIndex.build([("mbpp", "Mbpp/1", repr([list(range(20)), "x"]))], n=13)
    assert index.scan([" ".join(str(i) for i in range(20))]) == [{}]


# ---- through select.py: planted rows, duplicates, the manifest -----------------------------------

def _planted_pool(shared: Path, tasks: dict[str, dict], path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """200 real rows, 4 planted benchmark rows and 3 duplicates; (planted id -> task, dup id -> original id)."""
    import gzip

    rows = [json.loads(ln) for ln, _ in zip(gzip.open(shared / "data/instruct/code-instruct-15k.jsonl.gz", "rt"),
                                            range(200))]
    he, mb = tasks["HumanEval/0"], tasks["Mbpp/2"]
    long_mbpp = next(t for tid, t in tasks.items() if tid.startswith("Mbpp/") and len(_words(t["canonical_solution"])) > 40)
    planted = {
        "p-he-prompt": ("Complete this:\n" + he["prompt"].replace("    ", "\t"), "def f(): pass", "HumanEval/0"),
        "p-he-solution": ("Check closeness of numbers.", "```python\n" + he["prompt"] + he["canonical_solution"] + "```",
                          "HumanEval/0"),
        "p-mbpp-prompt": (mb["prompt"].upper(), "see above", "Mbpp/2"),
        # Mbpp/2's own solution has 11 words: too short to be evidence; a longer one is planted
        "p-mbpp-solution": ("Solve it.", long_mbpp["canonical_solution"], long_mbpp["task_id"]),
    }
    for pid, (ins, res, _task) in planted.items():
        rows.append({"id": pid, "instruction": ins, "response": res, "source": "planted"})
    dups = {"d-exact": rows[10], "d-near": rows[20], "d-case": rows[30]}
    rows.append(dict(dups["d-exact"], id="d-exact"))
    words = dups["d-near"]["response"].split(" ")
    words[len(words) // 2] += "!"
    rows.append(dict(dups["d-near"], id="d-near", response=" ".join(words)))
    rows.append(dict(dups["d-case"], id="d-case", instruction="  " + dups["d-case"]["instruction"].upper()))
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {k: v[2] for k, v in planted.items()}, {k: str(v["id"]) for k, v in dups.items()}


def _select(tmp: Path, pool: Path, bench: dict[str, str], *extra: str):
    from test_select_cli import run_select

    n = sum(1 for _ in open(pool))
    np.save(tmp / "emb.npy", np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32))
    run = tmp / "run"
    out = run_select(f"data.path={pool}", "selector=random", "sample_num=150", "embedding=precomputed",
                     f"embedding.path={tmp / 'emb.npy'}", f"hydra.run.dir={run}", "logger=none", "plot=false",
                     f"data.decontamination.humaneval={bench['humaneval']}",
                     f"data.decontamination.mbpp={bench['mbpp']}", *extra, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((run / "selection.json").read_text()), run, out


def test_select_removes_and_reports_planted_rows_and_duplicates(shared: Path, tasks, bench, tmp_path: Path) -> None:
    pool = tmp_path / "planted.jsonl"
    planted, dups = _planted_pool(shared, tasks, pool)
    m, run, _ = _select(tmp_path, pool, bench, "data.decontaminate=remove", "data.dedup=remove")
    decon = m["decontamination"]
    assert {r["id"]: r["task"] for r in decon["rows"]} == planted
    assert decon["removed"] == 4 and decon["benchmarks"]["humaneval"]["tasks"] == 164
    dd = {r["id"]: r for r in m["deduplication"]["rows"]}
    assert {k: v["duplicate_of"] for k, v in dd.items()} == dups
    assert dd["d-exact"]["kind"] == dd["d-case"]["kind"] == "exact" and dd["d-near"]["kind"] == "near"
    assert m["pool_rows"] == 207 and m["pool_size"] == 200
    out_rows = [json.loads(ln) for ln in (run / "planted-sn150.jsonl").read_text().splitlines()]
    removed = set(planted) | set(dups)
    assert [str(r["id"]) for r in out_rows] == m["selected_ids"] and not removed & set(m["selected_ids"])
    assert all(r["source"] for r in out_rows)  # extra keys kept


def test_report_mode_keeps_the_pool_and_warns(shared: Path, tasks, bench, tmp_path: Path) -> None:
    pool = tmp_path / "planted.jsonl"
    planted, _ = _planted_pool(shared, tasks, pool)
    m, _, out = _select(tmp_path, pool, bench)
    assert m["decontamination"]["mode"] == "report" and m["pool_size"] == 207
    assert {r["id"] for r in m["decontamination"]["rows"]} == set(planted)
    assert set(m["decontamination"]["selected_flagged"]) == set(planted) & set(m["selected_ids"])
    assert "decontamination: 4 of 207 rows share a 13-gram" in out.stdout + out.stderr
    assert m["deduplication"] == {"mode": "off"}


def test_near_duplicates_on_real_rows(shared: Path) -> None:
    pool = open_pool(shared / "data/instruct/code-instruct-15k.jsonl.gz").subset(np.arange(3000, 7000))
    found = {r["id"]: r for r in find_duplicates(pool, dedup_opts(method="minhash"))}
    # 4053 and 6103 differ only in "How would you translate" vs "Translate" (same code, same answer)
    assert found["6103"]["duplicate_of"] == "4053" and found["6103"]["kind"] == "near"
    a, b = pool.records[4053 - 3000], pool.records[6103 - 3000]
    assert a["response"] == b["response"] and a["instruction"] != b["instruction"]
    assert set(find_duplicates(pool, dedup_opts(method="exact"))) <= set(found)


# ---- the selection in the pool's own format -----------------------------------------------------

@pytest.mark.parametrize("kind", ["parquet", "datasets", "json"])
def test_selection_is_written_in_the_pools_format_and_fields(kind: str, tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from test_select_cli import run_select

    rows = [{"problem": f"Write function {i}", "solution": f"def f{i}(): return {i}", "tags": ["x", str(i)], "n": i}
            for i in range(40)]
    if kind == "parquet":
        pool = tmp_path / "oss.parquet"
        pq.write_table(pa.Table.from_pylist(rows), pool)
    elif kind == "datasets":
        pool = tmp_path / "oss"
        datasets.Dataset.from_list(rows).save_to_disk(str(pool))
    else:
        pool = tmp_path / "oss.json"
        pool.write_text(json.dumps(rows))
    np.save(tmp_path / "e.npy", np.random.default_rng(1).normal(size=(40, 4)).astype(np.float32))
    out = run_select(f"data.path={pool}", "data.fields.instruction=problem", "data.fields.response=solution",
                     "selector=random", "sample_num=7", "embedding=precomputed", f"embedding.path={tmp_path / 'e.npy'}",
                     f"hydra.run.dir={tmp_path / 'run'}", "logger=none", "plot=false", "data.decontaminate=off")
    assert out.returncode == 0, out.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "selection.json").read_text())
    picked = [rows[int(i)] for i in m["selected_ids"]]  # synthesised ids are row numbers
    target = tmp_path / "run" / m["output_file"]
    if kind == "parquet":
        assert m["output_file"] == "oss-sn7.parquet" and pq.read_table(target).to_pylist() == picked
    elif kind == "datasets":
        assert m["output_file"] == "oss-sn7" and datasets.load_from_disk(str(target)).to_list() == picked
    else:
        assert m["output_file"] == "oss-sn7.json" and json.loads(target.read_text()) == picked
    assert m["synthetic_ids"] and m["pool_format"] == kind
