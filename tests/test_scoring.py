"""Per-sample LM scores: PPL / IFD / DEITA values against hand computation, batching, cache, resume, input files."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from codeselect.data import pool_hash
from codeselect.errors import UserError
from codeselect.scoring import ScorerConfig, compute_scores, read_scores_file
from codeselect.scoring.batching import plan_batches
from codeselect.scoring.encoding import deita_prompt, encode, rating_token_ids
from codeselect.scoring.reductions import expected_rating, masked_perplexity


@pytest.fixture(scope="module")
def records(real_pairs) -> list[dict]:
    """24 real pairs, clipped so the tiny model runs fast; every response starts with a non-space."""
    return real_pairs(24, 500)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("score-cache")


def tiny(**overrides) -> dict:
    from codeselect.config import conf_defaults

    return {**conf_defaults("scorer/tiny"), "batch_tokens": 4096, **overrides}


def load_tiny(records: list[dict], cache: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = cache / "models" / f"tiny-{pool_hash(records)}"
    return AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()


def hand_ppl(model, ids: list[int], first_target: int) -> float:
    """exp(mean -log p(token_t | tokens_<t)) over t >= first_target, straight from the logits."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    nll = [-logp[t - 1, ids[t]].item() for t in range(first_target, len(ids))]
    return math.exp(sum(nll) / len(nll))


def system_md_scores(tok, model, instruction: str, response: str, max_length: int) -> tuple[float, float]:
    """(PPL(response | instruction), PPL(response alone)) as SYSTEM.md section 4 defines them, with
    Hugging Face's own label-shifted loss (one sample at a time, as the reference)."""
    prompt = f"{tok.bos_token}You are a helpful programming assistant.\n### Instruction:\n{instruction}\n### Response:\n"
    n_prompt = len(tok.encode(prompt, add_special_tokens=False))
    text = response + tok.eos_token
    full = tok.encode(prompt + text, add_special_tokens=False)[:max_length]
    labels = torch.tensor([full])
    labels[0, :n_prompt] = -100
    alone = tok.encode(text, add_special_tokens=False)[:max_length - n_prompt + 1]
    with torch.no_grad():
        cond = math.exp(float(model(torch.tensor([full]), labels=labels).loss))
        resp = math.exp(float(model(torch.tensor([alone]), labels=torch.tensor([alone])).loss))
    return cond, resp


@pytest.mark.parametrize("truncate", [False, True])
def test_ppl_and_ifd_match_system_md(records: list[dict], cache: Path, truncate: bool) -> None:
    """The reference's definitions: EOS appended, the response alone without BOS (its first token
    unpredicted), the boundary at the prompt's own token count, truncation at max_position_embeddings
    (2048 for the tiny model) or at a configured max_length (here 6 tokens past the longest prompt)."""
    full = compute_scores(records, ["ppl"], tiny(), cache_dir=cache, pool_hash=pool_hash(records),
                          progress=False)["ppl"]  # also builds the tiny model for this pool
    tok, model = load_tiny(records, cache)
    picked = (0, 7, 23)
    max_length = None
    if truncate:
        prompts = [f"{tok.bos_token}You are a helpful programming assistant.\n### Instruction:\n"
                   f"{records[i]['instruction']}\n### Response:\n" for i in picked]
        max_length = max(len(tok.encode(p, add_special_tokens=False)) for p in prompts) + 6
    info: dict = {}
    s = compute_scores(records, ["ppl", "ppl_alone"], tiny(max_length=max_length), cache_dir=cache,
                       pool_hash=pool_hash(records), progress=False, info=info)
    limit = max_length or model.config.max_position_embeddings
    assert info["max_length"] == limit
    for i in picked:
        rec = records[i]
        cond, alone = system_md_scores(tok, model, rec["instruction"], rec["response"], limit)
        assert s["ppl"][i] == pytest.approx(cond, rel=1e-5)
        assert s["ppl_alone"][i] == pytest.approx(alone, rel=1e-5)
    if truncate:  # the cut changed the scores
        assert not np.allclose(full[list(picked)], s["ppl"][list(picked)])


def test_conditional_targets_are_the_response_and_eos(records: list[dict], cache: Path) -> None:
    tok, _ = load_tiny(records, cache)
    store = encode("ppl", records, tok, max_length=2048)
    for i, rec in enumerate(records):
        seq = store.sequence(i)
        assert seq[0] == tok.bos_token_id  # from the template's BOS text
        assert seq[-1] == tok.eos_token_id
        assert len(seq) - store.starts[i] >= 2  # the response's tokens and the EOS are targets


def test_masked_perplexity_ignores_instruction_and_padding_logits() -> None:
    torch.manual_seed(0)
    ids = torch.tensor([[1, 5, 6, 7, 8, 0], [1, 9, 4, 0, 0, 0]])
    starts, lengths = torch.tensor([3, 1]), torch.tensor([5, 3])
    logits = torch.randn(2, 6, 12)
    base = masked_perplexity(logits, ids, starts, lengths)
    expected = []
    for b in range(2):
        logp = torch.log_softmax(logits[b].double(), -1)
        nll = [-logp[t - 1, ids[b, t]] for t in range(int(starts[b]), int(lengths[b]))]
        expected.append(math.exp(float(sum(nll) / len(nll))))
    assert base.tolist() == pytest.approx(expected, rel=1e-6)
    noisy = logits.clone()
    noisy[0, :2] += 5 * torch.randn(2, 12)   # positions predicting instruction tokens 1..2
    noisy[0, 4:] += 5 * torch.randn(2, 12)   # last token's logits and padding
    noisy[1, 2:] += 5 * torch.randn(4, 12)
    assert torch.allclose(masked_perplexity(noisy, ids, starts, lengths), base)
    noisy[0, 2] += 5 * torch.randn(12)       # predicts the first response token: must matter
    assert not torch.allclose(masked_perplexity(noisy, ids, starts, lengths), base)
    # no target at all -> NaN, not a crash
    assert torch.isnan(masked_perplexity(logits, ids, torch.tensor([5, 3]), lengths)).all()


def test_expected_rating_is_the_softmax_mean_over_the_six_rating_tokens() -> None:
    logits = torch.tensor([[9.0, 0.0, 1.0, 2.0, 0.5, -1.0, 3.0, 7.0],
                           [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    rating_ids = [1, 2, 3, 4, 5, 6]  # token 0 and 7 are not ratings and must not count
    got = expected_rating(logits, rating_ids)
    w = [math.exp(v) for v in (0.0, 1.0, 2.0, 0.5, -1.0, 3.0)]
    assert got[0].item() == pytest.approx(sum(r * x for r, x in zip(range(1, 7), w)) / sum(w), rel=1e-12)
    assert got[1].item() == pytest.approx(3.5)


def test_deita_scores_match_the_next_token_logits(records: list[dict], cache: Path) -> None:
    s = compute_scores(records, ["complexity", "quality"], tiny(), cache_dir=cache,
                       pool_hash=pool_hash(records), progress=False)
    tok, model = load_tiny(records, cache)
    ids6 = rating_token_ids(tok)
    assert [tok.decode([i]) for i in ids6] == ["1", "2", "3", "4", "5", "6"]
    for kind in ("complexity", "quality"):
        for i in (0, 11):
            ids = [tok.bos_token_id] + tok(deita_prompt(kind, records[i]), add_special_tokens=False)["input_ids"]
            assert deita_prompt(kind, records[i]).endswith("##Complexity: " if kind == "complexity" else "##Quality: ")
            with torch.no_grad():
                last = model(torch.tensor([ids])).logits[0, -1].double()
            p = torch.softmax(last[ids6], -1)
            assert s[kind][i] == pytest.approx(float((p * torch.arange(1, 7)).sum()), rel=1e-6)
            assert 1.0 <= s[kind][i] <= 6.0


def test_batched_scores_equal_one_at_a_time(records: list[dict], cache: Path, tmp_path: Path) -> None:
    kinds = ["ppl", "ppl_alone", "complexity", "quality"]
    batched = compute_scores(records, kinds, tiny(), cache_dir=cache, pool_hash=pool_hash(records),
                             progress=False)
    single = compute_scores(records, kinds, tiny(max_batch_size=1), cache_dir=tmp_path,
                            pool_hash=pool_hash(records), progress=False)
    for kind in kinds:
        np.testing.assert_allclose(batched[kind], single[kind], rtol=1e-5, err_msg=kind)


def test_second_run_reads_the_cache_without_the_model(records: list[dict], cache: Path, monkeypatch) -> None:
    first = compute_scores(records, ["ppl"], tiny(), cache_dir=cache, pool_hash=pool_hash(records), progress=False)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although the scores are cached")

    monkeypatch.setattr("codeselect.scoring.engine.load_tokenizer", no_model)
    info: dict = {}
    again = compute_scores(records, ["ppl"], tiny(), cache_dir=cache, pool_hash=pool_hash(records),
                           progress=False, info=info)
    np.testing.assert_array_equal(first["ppl"], again["ppl"])
    assert info["scored_batches"] == 0 and info["cached_kinds"] == ["ppl"]
    assert Path(info["scores_dir"]).is_relative_to(cache / "scores")


def test_interrupted_run_resumes_and_gives_identical_scores(records: list[dict], tmp_path: Path,
                                                             monkeypatch) -> None:
    from codeselect.scoring.predict import ScoringModule

    cfg = tiny(batch_tokens=512, chunk_batches=1)
    kinds = ["ppl", "quality"]
    reference = compute_scores(records, kinds, cfg, cache_dir=tmp_path / "ref", pool_hash=pool_hash(records),
                               progress=False)
    real_step = ScoringModule.predict_step
    calls = {"n": 0, "fail_after": 3}

    def counting_step(self, batch, batch_idx):
        if calls["fail_after"] is not None and calls["n"] == calls["fail_after"]:
            raise RuntimeError("simulated crash")
        calls["n"] += 1
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(ScoringModule, "predict_step", counting_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        compute_scores(records, kinds, cfg, cache_dir=tmp_path / "run", pool_hash=pool_hash(records),
                       progress=False)
    parts = list((tmp_path / "run" / "scores").rglob("parts-*/*.npz"))
    assert len(parts) == 3  # one shard per finished batch survived the crash
    calls.update(n=0, fail_after=None)
    info: dict = {}
    resumed = compute_scores(records, kinds, cfg, cache_dir=tmp_path / "run", pool_hash=pool_hash(records),
                             progress=False, info=info)
    tok, _ = load_tiny(records, tmp_path / "run")
    n_batches = sum(len(plan_batches(s.lengths, s.scorable(), 512, 64)) for s in
                    (encode(k, records, tok, 2048) for k in kinds))
    assert calls["n"] == info["scored_batches"] == n_batches - 3
    for kind in kinds:
        np.testing.assert_array_equal(resumed[kind], reference[kind])
    assert not list((tmp_path / "run" / "scores").rglob("parts-*/*.npz"))


def test_a_response_of_one_token_has_no_alone_target_and_ifd_0(tmp_path: Path) -> None:
    """An empty response is just the EOS: PPL(response alone) has no target (NaN in the reference,
    whose IFD is then 0), while PPL(response | instruction) still predicts the EOS."""
    from codeselect.scoring import ifd_scores

    recs = [{"id": i, "instruction": f"Write function {i}", "response": "" if i == 1 else f"def f{i}(): pass"}
            for i in range(4)]
    s = compute_scores(recs, ["ppl", "ppl_alone"], tiny(), cache_dir=tmp_path, pool_hash=pool_hash(recs),
                       progress=False)
    assert np.isnan(s["ppl_alone"][1]) and np.isfinite(s["ppl"]).all()
    ifd = ifd_scores(s["ppl"], s["ppl_alone"])
    assert ifd[1] == 0.0 and (np.delete(ifd, 1) > 0).all()


def test_cache_key_carries_the_score_definitions(records: list[dict], cache: Path) -> None:
    """Scores cached under an older definition are not reused."""
    from codeselect.scoring.config import SCORE_DEFINITIONS, model_key

    cfg = ScorerConfig.from_mapping(tiny())
    key = model_key(cfg, cache / "models" / f"tiny-{pool_hash(records)}", "cpu", 2048)
    import codeselect.scoring.config as config

    old, config.SCORE_DEFINITIONS = config.SCORE_DEFINITIONS, SCORE_DEFINITIONS - 1
    try:
        assert model_key(cfg, cache / "models" / f"tiny-{pool_hash(records)}", "cpu", 2048) != key
    finally:
        config.SCORE_DEFINITIONS = old


def test_scorer_config_errors_name_the_key() -> None:
    with pytest.raises(UserError, match=r"key 'scorer'.*unknown scorer option\(s\) \['batch_token'\]"):
        ScorerConfig.from_mapping({"model": "tiny", "batch_token": 3})
    with pytest.raises(UserError, match=r"key 'scorer.max_length': must be a positive integer"):
        ScorerConfig.from_mapping(tiny(max_length=0))
    with pytest.raises(UserError, match=r"key 'scorer'.*missing scorer option\(s\) \['batch_tokens'"):
        ScorerConfig.from_mapping({k: v for k, v in tiny().items() if k != "batch_tokens"})


def test_missing_scorer_model_is_a_user_error(records: list[dict], tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"key 'scorer.model'.*cannot load the scorer config"):
        compute_scores(records, ["ppl"], tiny(model=str(tmp_path / "no-such-model")), cache_dir=tmp_path,
                       pool_hash="x", progress=False)


# --- scores files the user already has -------------------------------------------------------------

POOL3 = [{"id": 1, "instruction": "a", "response": "b"}, {"id": "x", "instruction": "c", "response": "d"},
         {"id": 3, "instruction": "e", "response": "f"}]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_scores_file_is_read_in_pool_order(tmp_path: Path) -> None:
    f = write(tmp_path / "s.jsonl", ['{"id": 3, "ifd": 0.5, "extra": "kept out"}', '{"id": "1", "ifd": 2}',
                                     '', '{"id": "x", "ifd": 1e-3}', '{"id": 99, "ifd": 7}'])
    assert read_scores_file(f, ["ifd"], POOL3)["ifd"].tolist() == [2.0, 0.001, 0.5]


@pytest.mark.parametrize("lines, message", [
    (['{"id": 1, "ifd": 1}', '{"id": 3, "ifd": 2}'],
     "{f}, key 'id': no scores for 1 of 3 pool ids (first: 'x')"),
    (['{"id": 1, "ifd": 1}', '{"id": "x", "ifd": NaN}', '{"id": 3, "ifd": 2}'],
     "{f}:2, key 'ifd': must be a finite number, got nan"),
    (['{"id": 1, "ifd": Infinity}'], "{f}:1, key 'ifd': must be a finite number, got inf"),
    (['{"id": 1, "ifd": 1}', '{"id": "x" "ifd": 1}', '{"id": 3, "ifd": 2}'],
     "{f}:2: malformed JSON (Expecting ',' delimiter at column 12)"),
    (['{"id": 1, "ifd": "high"}'], "{f}:1, key 'ifd': must be a number, got \"high\""),
    (['{"id": 1, "ifd": true}'], "{f}:1, key 'ifd': must be a number, got true"),
    (['{"id": 1, "ppl": 1}'], "{f}:1, key 'ifd': missing required key"),
    (['{"ifd": 1}'], "{f}:1, key 'id': missing required key"),
    (['{"id": 1, "ifd": 1}', '{"id": "1", "ifd": 1}'], "{f}:2, key 'id': duplicate id '1'"),
    (['[1, 2]'], "{f}:1: expected a JSON object, got list"),
])
def test_bad_scores_file_is_a_clear_user_error(tmp_path: Path, lines: list[str], message: str) -> None:
    f = write(tmp_path / "scores.jsonl", lines)
    with pytest.raises(UserError) as err:
        read_scores_file(f, ["ifd"], POOL3)
    assert str(err.value) == message.format(f=f)


def test_missing_scores_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="scores file not found"):
        read_scores_file(tmp_path / "nope.jsonl", ["ifd"], POOL3)


def test_batch_plan_covers_every_sample_once_within_budget_and_fill() -> None:
    rng = np.random.default_rng(3)
    lengths = np.concatenate([rng.integers(5, 120, 300), [400, 390, 200, 37]])
    eligible = rng.random(len(lengths)) > 0.1
    plan = plan_batches(lengths, eligible, 1024, 16)
    flat = np.concatenate(plan)
    assert sorted(flat.tolist()) == np.flatnonzero(eligible).tolist()
    for batch in plan:
        longest = lengths[batch].max()
        assert len(batch) == 1 or (len(batch) * longest <= 1024 and len(batch) <= 16)
        assert lengths[batch].min() >= 0.9 * longest  # little padding
    assert [b.tolist() for b in plan] == [b.tolist() for b in plan_batches(lengths, eligible, 1024, 16)]


def test_head_only_scores_equal_full_logits(records: list[dict], cache: Path, tmp_path: Path,
                                            monkeypatch) -> None:
    """The LM head applied only where a score reads it gives the same scores as full logits."""
    kinds = ["ppl", "ppl_alone", "complexity", "quality"]
    fast = compute_scores(records, kinds, tiny(), cache_dir=cache, pool_hash=pool_hash(records), progress=False)
    monkeypatch.setattr("codeselect.scoring.predict.plain_head", lambda model: False)
    full = compute_scores(records, kinds, tiny(), cache_dir=tmp_path, pool_hash=pool_hash(records), progress=False)
    for kind in kinds:
        np.testing.assert_allclose(fast[kind], full[kind], rtol=1e-5, err_msg=kind)


def test_plain_head_only_for_known_architectures(records: list[dict], cache: Path) -> None:
    from codeselect.scoring.predict import plain_head

    _, model = load_tiny(records, cache)
    assert plain_head(model)
    model.config.model_type = "gemma2"  # soft-caps its logits after the head
    assert not plain_head(model)
