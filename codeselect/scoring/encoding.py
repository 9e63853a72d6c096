"""Turn pool records into token sequences for each score kind.

Kinds (all per sample), with the reference's definitions (SYSTEM.md section 4):
- `ppl`: PPL(response | instruction). prompt = the paper's template applied to the instruction with
  the generation prompt (it holds the BOS text); L_p = its token count, encoded without special
  tokens. The sequence is prompt + response + EOS (as text) encoded as one string without special
  tokens, truncated to `max_length`; positions L_p.. are the targets (the boundary is the prompt's
  own token count, not a character offset).
- `ppl_alone`: PPL(response): response + EOS encoded without special tokens (no BOS), truncated to
  max_length - L_p + 1 tokens; its first token is context, every later one a target.
- `complexity` / `quality`: DEITA's scorer prompts; the score is read from the next-token logits at
  the last position.
`max_length` is the scorer model's `max_position_embeddings` unless configured.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from codeselect.prompts import prompt_text

PPL_KINDS = ("ppl", "ppl_alone")
RATING_KINDS = ("complexity", "quality")
KINDS = PPL_KINDS + RATING_KINDS

# The published DEITA scorer prompts (hkust-nlp/deita, LLaMA scorers), spacing included: the scorers
# were fine-tuned on exactly these strings.
COMPLEXITY_TEMPLATE = ("You are a helpful assistant. Please identify the complexity score of the following "
                       "user query. \n##Query: {instruction}  \n##Complexity: ")
QUALITY_TEMPLATE = ("You are a helpful assistant. Please identify the quality score of the Response "
                    "corresponding to the Question. \n #Question#:\n{instruction}\n#Response#:\n"
                    "{output} \n##Quality: ")
_TEMPLATE_TAILS = {"complexity": "  \n##Complexity: ", "quality": " \n##Quality: "}
RATINGS = (1, 2, 3, 4, 5, 6)


@dataclass
class TokenStore:
    """Token sequences of one kind, flat: sequence i is `tokens[offsets[i]:offsets[i+1]]`.

    `starts[i]` is the first target position (PPL kinds); a sequence with `starts[i] >= length`
    has no targets and scores NaN. Rating kinds read the logits at the last position.
    """

    kind: str
    tokens: np.ndarray   # int64, all sequences concatenated
    offsets: np.ndarray  # int64, n + 1
    starts: np.ndarray   # int64, n

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    def scorable(self) -> np.ndarray:
        """Which samples have something to score."""
        if self.kind in PPL_KINDS:
            return (self.starts < self.lengths) & (self.starts >= 1)
        return self.lengths > 0


def _with_bos(ids: list[int], bos: int | None) -> tuple[list[int], int]:
    """Prepend BOS when the tokenizer has one and did not add it; return ids and the shift."""
    if bos is not None and (not ids or ids[0] != bos):
        return [bos] + ids, 1
    return ids, 0


def _store(kind: str, seqs: list[list[int]], starts: list[int]) -> TokenStore:
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((t for s in seqs for t in s), dtype=np.int64, count=int(offsets[-1]))
    return TokenStore(kind, flat, offsets, np.asarray(starts, dtype=np.int64))


def reference_texts(record: dict[str, Any], tok: Any) -> tuple[str, str]:
    """(prompt, response + EOS) as the reference builds them for PPL / IFD."""
    return prompt_text(record["instruction"], bos=tok.bos_token or ""), record["response"] + (tok.eos_token or "")


def _prompt_lengths(records: Sequence[dict[str, Any]], tok: Any, max_length: int) -> list[int]:
    """L_p: the prompt's token count (no special tokens added; the template holds the BOS text)."""
    prompts = [reference_texts(r, tok)[0] for r in records]
    return [min(len(ids), max_length) for ids in tok(prompts, add_special_tokens=False)["input_ids"]]


def _encode_conditional(records: Sequence[dict[str, Any]], tok: Any, max_length: int) -> TokenStore:
    fulls = ["".join(reference_texts(r, tok)) for r in records]
    ids = tok(fulls, add_special_tokens=False)["input_ids"]
    return _store("ppl", [list(s[:max_length]) for s in ids], _prompt_lengths(records, tok, max_length))


def _encode_alone(records: Sequence[dict[str, Any]], tok: Any, max_length: int) -> TokenStore:
    responses = [reference_texts(r, tok)[1] for r in records]
    ids = tok(responses, add_special_tokens=False)["input_ids"]
    limits = [max_length - lp + 1 for lp in _prompt_lengths(records, tok, max_length)]
    seqs = [list(s[:limit]) if limit > 0 else [] for s, limit in zip(ids, limits)]
    return _store("ppl_alone", seqs, [1] * len(seqs))


def deita_prompt(kind: str, record: dict[str, Any]) -> str:
    """The DEITA scorer input for one record."""
    if kind == "complexity":
        return COMPLEXITY_TEMPLATE.format(instruction=record["instruction"])
    return QUALITY_TEMPLATE.format(instruction=record["instruction"], output=record["response"])


def _encode_rating(kind: str, records: Sequence[dict[str, Any]], tok: Any, max_length: int) -> TokenStore:
    enc = tok([deita_prompt(kind, r) for r in records], add_special_tokens=True)["input_ids"]
    tail = list(tok(_TEMPLATE_TAILS[kind], add_special_tokens=False)["input_ids"])
    seqs = []
    for ids in enc:
        ids, _ = _with_bos(list(ids), tok.bos_token_id)
        if len(ids) > max_length:  # too long: cut the middle, keep the `##Complexity: ` / `##Quality: ` tail
            ids = ids[:max_length - len(tail)] + tail
        seqs.append(ids)
    return _store(kind, seqs, [len(s) for s in seqs])


def encode(kind: str, records: Sequence[dict[str, Any]], tokenizer: Any, max_length: int) -> TokenStore:
    """Token sequences of `kind` for every record, truncated to `max_length` tokens."""
    if kind == "ppl":
        return _encode_conditional(records, tokenizer, max_length)
    if kind == "ppl_alone":
        return _encode_alone(records, tokenizer, max_length)
    if kind in RATING_KINDS:
        return _encode_rating(kind, records, tokenizer, max_length)
    raise ValueError(f"unknown score kind {kind!r}; known: {KINDS}")


def rating_token_ids(tokenizer: Any, override: Sequence[int] | None = None) -> list[int]:
    """Token ids of the ratings "1".."6" (LLaMA: 29896, 29906, 29941, 29946, 29945, 29953)."""
    if override is not None:
        return [int(i) for i in override]
    ids = []
    unk = tokenizer.unk_token_id
    for r in RATINGS:
        tid = tokenizer.convert_tokens_to_ids(str(r))
        if tid is None or tid == unk:
            tid = tokenizer(str(r), add_special_tokens=False)["input_ids"][-1]
        ids.append(int(tid))
    return ids
