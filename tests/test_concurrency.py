"""Caches shared by the jobs of a sweep stay correct when the jobs run at once."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from codeselect.config import conf_defaults


def test_score_store_finalize_keeps_part_files_it_did_not_read(tmp_path: Path) -> None:
    from codeselect.scoring.store import ScoreStore

    store = ScoreStore(tmp_path / "scores")
    a = store.write_part("ppl", "a", np.arange(0, 5), np.arange(0, 5) * 1.0)
    b = store.write_part("ppl", "b", np.arange(5, 10), np.arange(5, 10) * 1.0)
    parts = store.part_files("ppl")
    values, done = store.load_parts("ppl", 10, parts)
    assert done.all() and sorted(parts) == sorted([a, b])
    # another job writes a part after this one listed its parts, then this one finalizes
    late = store.write_part("ppl", "c", np.arange(0, 3), np.zeros(3))
    store.finalize("ppl", values, parts)
    assert late.is_file() and not a.exists() and not b.exists()
    np.testing.assert_array_equal(store.load_final("ppl", 10), np.arange(10.0))
    # a part that vanished between listing and reading is skipped, not an error
    v, d = store.load_parts("ppl", 10, [a, late])
    assert d.sum() == 3
    store.finalize("ppl", v, [late])
    assert not store.parts_dir("ppl").exists()  # empty now: the folder goes


RECORDS = [{"id": str(i), "instruction": f"Write a function that adds {i} to x",
            "response": f"def add_{i}(x):\n    return x + {i}\n"} for i in range(24)]
SCORER = {**conf_defaults("scorer/tiny"), "batch_tokens": 256, "max_batch_size": 2, "chunk_batches": 1,
          "tiny": {"vocab_size": 300, "hidden_size": 16, "num_layers": 1, "num_heads": 2,
                   "intermediate_size": 32}}


def _score_job(cache_dir: str) -> dict:
    from codeselect.scoring import compute_scores

    return compute_scores(RECORDS, ["ppl", "ppl_alone"], SCORER, cache_dir=Path(cache_dir),
                          pool_hash="p", progress=False)


def test_compute_scores_of_two_concurrent_jobs_agree(tmp_path: Path) -> None:
    """Two processes (as joblib's sweep jobs) score the same pool into one cache at once."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
        results = list(ex.map(_score_job, [str(tmp_path)] * 2))
    for kind in ("ppl", "ppl_alone"):
        np.testing.assert_allclose(results[0][kind], results[1][kind], rtol=1e-6)
        assert np.isfinite(results[0][kind]).all()
    # the tiny model was built into place once, no temporary folder left behind
    models = [p.name for p in (tmp_path / "models").iterdir()]
    assert models == ["tiny-p"], models
    assert json.loads((tmp_path / "models" / "tiny-p" / "tiny_lm.json").read_text())["key"]


def test_tiny_lm_build_is_atomic(tmp_path: Path) -> None:
    import transformers  # noqa: F401
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: F401 (lazy imports are not thread-safe)

    from codeselect.tiny_lm import build_tiny_lm

    texts = [f"def f{i}(x): return x * {i}" for i in range(30)]
    opts = dict(vocab_size=300, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    out = tmp_path / "tiny"
    threads = [threading.Thread(target=build_tiny_lm, args=(texts, out), kwargs=opts) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(str(out)).config.hidden_size == 16


def test_pipeline_tasks_after_the_first_wait_for_its_selection(tmp_path: Path, monkeypatch) -> None:
    """Under slurm_pipeline every task runs the job: task 0 selects, the others wait for its manifest."""
    import pytest

    from codeselect.errors import UserError
    from codeselect.pipeline import launch_rank, wait_for_manifest

    monkeypatch.setenv("SLURM_PROCID", "3")
    assert launch_rank() == 3
    manifest = tmp_path / "job" / "select" / "selection.json"
    manifest.parent.mkdir(parents=True)

    def write() -> None:
        manifest.write_text(json.dumps({"output_file": "pool-sn10.jsonl"}))

    timer = threading.Timer(0.3, write)
    timer.start()
    assert wait_for_manifest(manifest, poll_s=0.05)["output_file"] == "pool-sn10.jsonl"
    manifest.unlink()
    (tmp_path / "job" / "failed.json").write_text(json.dumps({"error": "key 'sample_num': too large"}))
    with pytest.raises(UserError, match="selection task failed: key 'sample_num'"):
        wait_for_manifest(manifest, poll_s=0.05)
