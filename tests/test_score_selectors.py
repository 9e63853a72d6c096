"""The ifd, ppl and deita selectors: ranking order, DEITA's diversity filter vs brute force, scores files,
the tiny-LM path, and `select.py` end to end."""
from __future__ import annotations

import gzip
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from codeselect.data import pool_hash
from codeselect.errors import UserError
from codeselect.scoring import top_k_descending
from codeselect.selectors.base import SelectionContext
from codeselect.selectors.deita import DeitaSelector, blocked_filter
from codeselect.selectors.ifd import IFDSelector
from codeselect.selectors.ppl import PPLSelector

REPO = Path(__file__).resolve().parents[1]


def brute_force_deita(final: np.ndarray, emb: np.ndarray, k: int, threshold: float,
                      block_size: int = 10000) -> list[int]:
    """SYSTEM.md 4's blocked rule, one candidate at a time: the first candidate alone, then blocks of
    `block_size` in score order; a candidate is dropped if too similar to one kept in an earlier
    block or to any earlier candidate of its own block (kept or not). The whole pool is filtered;
    the first k survivors, then the best dropped ones."""
    order = sorted(range(len(final)), key=lambda i: (-final[i], i))
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    block_of = [0] + [1 + (p - 1) // block_size for p in range(1, len(order))]
    kept: list[int] = []  # positions in `order`
    dropped: list[int] = []
    for p, i in enumerate(order):
        near = any(block_of[q] < block_of[p] and float(unit[i] @ unit[order[q]]) > threshold for q in kept)
        near |= any(block_of[q] == block_of[p] and float(unit[i] @ unit[order[q]]) > threshold
                    for q in range(p))
        (dropped if near else kept).append(p)
    return [order[p] for p in (kept + dropped)[:k]] if len(kept) < k else [order[p] for p in kept[:k]]


def clustered_unit_vectors(n: int, d: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    x = centers[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("n, k, clusters, threshold, block", [
    (300, 40, 12, 0.9, 10000),  # many near-duplicates, one block: lots of drops, fill-up needed
    (300, 40, 12, 0.9, 7),      # tiny blocks: block boundaries inside the walk
    (500, 60, 200, 0.8, 64),    # mostly diverse: k survive before the end
    (200, 200, 10, 0.95, 32),   # k = n: everything, survivors first then the dropped in score order
])
def test_deita_filter_equals_the_one_by_one_blocked_walk(n, k, clusters, threshold, block) -> None:
    emb = clustered_unit_vectors(n, 16, clusters, 0.15, seed=n + k)
    rng = np.random.default_rng(k)
    final = rng.integers(1, 30, n).astype(np.float64)  # integer scores: many ties
    order = np.argsort(-final, kind="stable")
    got, n_kept = blocked_filter(order, emb, k, threshold, block_size=block)
    assert got == brute_force_deita(final, emb, k, threshold, block)
    assert len(set(got)) == k


def test_deita_drops_near_any_earlier_candidate_of_its_block_kept_or_not() -> None:
    """a ~ b, b ~ c, a not ~ c. In one block b is dropped (near a) and c too (near b, though b was
    dropped): a rule that only looks at kept samples would keep c. Across blocks only kept ones count."""
    a, b, c = np.array([1.0, 0.0]), np.array([np.cos(0.4), np.sin(0.4)]), np.array([np.cos(0.8), np.sin(0.8)])
    d = np.array([0.0, -1.0])
    emb = np.stack([a, b, c, d]).astype(np.float32)  # cos(a,b) = cos(b,c) = 0.92, cos(a,c) = 0.70
    final = np.array([4.0, 3.0, 2.0, 1.0])
    order = np.argsort(-final, kind="stable")
    one_block, kept = blocked_filter(order, emb, 2, 0.9, block_size=10)
    assert one_block == [0, 3] and kept == 2
    # blocks {a}, {b}, {c}, {d}: b is dropped (near kept a), c is kept (b was not kept)
    singles, kept = blocked_filter(order, emb, 3, 0.9, block_size=1)
    assert singles == [0, 2, 3] and kept == 3
    for k, block in [(2, 10), (3, 1), (4, 10)]:
        assert blocked_filter(order, emb, k, 0.9, block_size=block)[0] == brute_force_deita(final, emb, k, 0.9, block)


def test_deita_fills_from_the_best_dropped_in_score_order() -> None:
    # 0,1,2 are one direction (sim 1), 3 another: only 0 and 3 survive; k=3 takes 1 (the better drop).
    emb = np.array([[1, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    final = np.array([4.0, 3.0, 2.0, 1.0])
    chosen, n_kept = blocked_filter(np.argsort(-final, kind="stable"), emb, 3, 0.9)
    assert chosen == [0, 3, 1] and n_kept == 2


def write_scores(path: Path, records: list[dict], **columns: np.ndarray) -> Path:
    with open(path, "w") as fh:
        for i, rec in enumerate(records):
            fh.write(json.dumps({"id": rec["id"], **{k: float(v[i]) for k, v in columns.items()}}) + "\n")
    return path


def make_ctx(records: list[dict], emb: np.ndarray | None, cache: Path) -> SelectionContext:
    return SelectionContext(records=records, embeddings=None if emb is None else torch.from_numpy(emb),
                            cache_dir=cache, pool_hash=pool_hash(records))


def toy_records(n: int) -> list[dict]:
    return [{"id": f"s{i}", "instruction": f"task {i}", "response": f"answer {i}"} for i in range(n)]


def test_top_k_is_descending_with_ties_in_pool_order_and_nan_last() -> None:
    scores = np.array([1.0, 3.0, np.nan, 3.0, 2.0, 3.0])
    assert top_k_descending(scores, 6) == [1, 3, 5, 4, 0, 2]
    assert top_k_descending(scores, 2) == [1, 3]


@pytest.mark.parametrize("selector_cls, key", [(IFDSelector, "ifd"), (PPLSelector, "ppl")])
def test_ifd_and_ppl_select_top_k_from_a_scores_file(tmp_path: Path, selector_cls, key: str) -> None:
    records = toy_records(50)
    values = np.random.default_rng(1).integers(0, 10, 50) / 10  # ties
    f = write_scores(tmp_path / "scores.jsonl", records, **{key: values})
    ctx = make_ctx(records, None, tmp_path)
    got = selector_cls(scores_path=str(f)).select(ctx, 12)
    assert got == sorted(range(50), key=lambda i: (-values[i], i))[:12]
    assert ctx.info["scores_path"] == str(f) and ctx.info[key]["max"] == values.max()


def test_deita_selector_uses_complexity_times_quality(tmp_path: Path) -> None:
    records = toy_records(120)
    emb = clustered_unit_vectors(120, 8, 15, 0.1, seed=3)
    rng = np.random.default_rng(2)
    comp, qual = rng.uniform(1, 6, 120), rng.uniform(1, 6, 120)
    f = write_scores(tmp_path / "s.jsonl", records, complexity=comp, quality=qual)
    ctx = make_ctx(records, emb, tmp_path)
    got = DeitaSelector(scores_path=str(f), threshold=0.9).select(ctx, 30)
    assert got == brute_force_deita(comp * qual, emb, 30, 0.9)
    assert ctx.info["kept_by_filter"] + ctx.info["filled"] == 30


def test_deita_scores_file_needs_both_columns(tmp_path: Path) -> None:
    records = toy_records(5)
    f = write_scores(tmp_path / "s.jsonl", records, complexity=np.ones(5))
    with pytest.raises(UserError, match=r"s.jsonl:1, key 'quality': missing required key"):
        DeitaSelector(scores_path=str(f)).select(make_ctx(records, np.eye(5, dtype=np.float32), tmp_path), 2)


def test_ifd_refuses_the_two_model_deita_scorer(tmp_path: Path) -> None:
    records = toy_records(5)
    with pytest.raises(UserError, match="needs one model"):
        IFDSelector(scorer={"complexity": {"model": "tiny"}, "quality": {"model": "tiny"}}).select(
            make_ctx(records, None, tmp_path), 2)


@pytest.fixture(scope="module")
def real_records(shared: Path) -> list[dict]:
    with gzip.open(shared / "data/instruct/code-instruct-15k.jsonl.gz", "rt", encoding="utf-8") as fh:
        recs = [json.loads(line) for line in itertools.islice(fh, 30)]
    return [{**r, "instruction": r["instruction"][:300], "response": r["response"][:400]} for r in recs]


def test_tiny_scorer_path_for_ifd_ppl_and_deita(real_records: list[dict], tmp_path: Path) -> None:
    from codeselect.scoring import compute_scores

    from codeselect.config import conf_defaults

    scorer = {**conf_defaults("scorer/tiny"), "batch_tokens": 4096}
    emb = clustered_unit_vectors(len(real_records), 8, 6, 0.3, seed=0)
    ifd_ctx = make_ctx(real_records, emb, tmp_path)
    ifd_pick = IFDSelector(scorer=scorer, progress=False).select(ifd_ctx, 10)
    s = compute_scores(real_records, ["ppl", "ppl_alone", "complexity", "quality"], scorer, cache_dir=tmp_path,
                       pool_hash=pool_hash(real_records), progress=False)
    assert ifd_pick == top_k_descending(s["ppl"] / s["ppl_alone"], 10)
    assert PPLSelector(scorer=scorer, progress=False).select(make_ctx(real_records, emb, tmp_path), 10) \
        == top_k_descending(s["ppl"], 10)
    deita_ctx = make_ctx(real_records, emb, tmp_path)
    deita_pick = DeitaSelector(scorer=scorer, progress=False).select(deita_ctx, 10)
    assert deita_pick == brute_force_deita(s["complexity"] * s["quality"], emb, 10, 0.9)
    assert ifd_ctx.info["scorer"] == "tiny" and deita_ctx.info["scoring"]["scored_batches"] == 0  # cached


# --- select.py end to end ------------------------------------------------------------------------

needs_pipeline = pytest.mark.skipif(
    not all((REPO / "codeselect" / f"{m}.py").exists() for m in ("embeddings", "metrics")),
    reason="the select pipeline (embeddings, metrics) is not complete yet")


def run_select(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, str(REPO / "select.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def small_pool(real_records: list[dict], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pool")
    pool = folder / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in real_records))
    emb = folder / "pool.npy"
    np.save(emb, clustered_unit_vectors(len(real_records), 16, 8, 0.2, seed=5))
    return pool, emb


@needs_pipeline
@pytest.mark.parametrize("selector", ["ifd", pytest.param("ppl", marks=pytest.mark.slow), "deita"])
def test_select_py_end_to_end_with_tiny_scorer(selector: str, small_pool: tuple[Path, Path], tmp_path: Path) -> None:
    pool, emb = small_pool
    run_dir = tmp_path / "run"
    out = run_select(f"selector={selector}", "scorer=tiny", "sample_num=8", f"data.path={pool}",
                     "embedding=precomputed", f"embedding.path={emb}", f"hydra.run.dir={run_dir}",
                     "logger=none", "plot=false", "selector.progress=false")
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = json.loads((run_dir / "selection.json").read_text())
    assert manifest["selector"] == selector and len(manifest["selected_ids"]) == 8
    lines = (run_dir / "pool-sn8.jsonl").read_text().splitlines()
    assert [str(json.loads(ln)["id"]) for ln in lines] == manifest["selected_ids"]
    assert manifest["config"]["scorer"]["model"] == "tiny"
    assert manifest["selector_info"]["stats"]["scorer_key" if selector != "deita" else "scoring"]
    written = [json.loads(ln) for ln in lines]
    report = json.loads((run_dir / "selection_report.json").read_text())  # the LM scores, pool vs subset
    if selector in ("ifd", "ppl"):  # the reference's records gain their score key, best first
        scores = [rec[selector] for rec in written]
        assert all(isinstance(v, float) for v in scores) and scores == sorted(scores, reverse=True)
        assert report["scores"][selector]["subset"]["mean"] == pytest.approx(np.mean(scores), abs=1e-3)
    else:
        assert not {"ifd", "ppl"} & set(written[0])
        assert {"complexity", "quality"} <= set(report["scores"])


@needs_pipeline
@pytest.mark.parametrize("selector", ["ifd", "ppl"])
def test_select_py_top_k_from_a_scores_file_as_the_reference(selector: str, small_pool: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    """The published ifd/ppl scripts: records in pool order gain the score, `sorted(..., reverse=True)`
    (stable), the first k written; a NaN-free file with ties."""
    pool, emb = small_pool
    records = [json.loads(ln) for ln in pool.read_text().splitlines()]
    values = [round(float(v), 1) for v in np.random.default_rng(3).uniform(0, 2, len(records))]
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps({"id": r["id"], selector: v}) + "\n" for r, v in zip(records, values)))
    expected = sorted(({**r, selector: v} for r, v in zip(records, values)), key=lambda r: r[selector],
                      reverse=True)[:9]
    run_dir = tmp_path / "run"
    out = run_select(f"selector={selector}", "sample_num=9", f"data.path={pool}", "embedding=precomputed",
                     f"embedding.path={emb}", f"selector.scores_path={scores}", f"hydra.run.dir={run_dir}",
                     "logger=none", "plot=false")
    assert out.returncode == 0, out.stderr[-2000:]
    assert [json.loads(ln) for ln in (run_dir / "pool-sn9.jsonl").read_text().splitlines()] == expected


@needs_pipeline
def test_select_py_bad_scores_file_exits_2_without_output(small_pool: tuple[Path, Path], tmp_path: Path) -> None:
    pool, emb = small_pool
    bad = tmp_path / "scores.jsonl"
    bad.write_text('{"id": 0, "ifd": NaN}\n')
    run_dir = tmp_path / "run"
    out = run_select("selector=ifd", "sample_num=3", f"data.path={pool}", "embedding=precomputed",
                     f"embedding.path={emb}", f"selector.scores_path={bad}", f"hydra.run.dir={run_dir}",
                     "logger=none", "plot=false")
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {bad}:1, key 'ifd': must be a finite number, got nan"
    assert not (run_dir / "selection.json").exists() and not list(run_dir.glob("*.jsonl"))
