"""A tiny random-init causal LM with a BPE tokenizer trained on the fly: the whole LM path on a CPU.

`build_tiny_lm(texts, out_dir)` trains a byte-level BPE tokenizer on `texts`, builds a 2-layer Llama
with random weights (seeded), and saves both in Hugging Face format, so `from_pretrained(out_dir)`
works for training, scoring and generation with no download. Cached: same inputs, same folder.
Built in a private folder and renamed into place, so jobs of a sweep that build the same model at
once never read a half-written one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable

from codeselect.prompts import CHAT_TEMPLATE

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


def _key(texts: list[str], params: dict) -> str:
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for t in texts:
        h.update(t.encode("utf-8", "replace"))
        h.update(b"\x00")
    return h.hexdigest()[:12]


def build_tiny_lm(texts: Iterable[str], out_dir: str | Path, *, vocab_size: int = 1024,
                  hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                  intermediate_size: int = 172, max_position_embeddings: int = 2048,
                  seed: int = 0) -> Path:
    """Train a tokenizer on `texts`, build a random tiny Llama, save both to `out_dir`; return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [t for t in texts if t]
    params = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_layers=num_layers,
                  num_heads=num_heads, intermediate_size=intermediate_size,
                  max_position_embeddings=max_position_embeddings, seed=seed)
    out = Path(out_dir)
    stamp = out / "tiny_lm.json"
    key = _key(texts, params)
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        return out

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                     eos_token="</s>", pad_token="<pad>",
                                     model_max_length=max_position_embeddings)
    hf_tok.chat_template = CHAT_TEMPLATE

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(hf_tok), hidden_size=hidden_size,
                         intermediate_size=intermediate_size, num_hidden_layers=num_layers,
                         num_attention_heads=num_heads, num_key_value_heads=num_heads,
                         max_position_embeddings=max_position_embeddings,
                         bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id,
                         pad_token_id=hf_tok.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    model.save_pretrained(tmp)
    hf_tok.save_pretrained(tmp)
    (tmp / "tiny_lm.json").write_text(json.dumps({"key": key, **params}))
    if out.exists():  # a stale build (other texts), or a concurrent job finished first
        if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
            shutil.rmtree(tmp, ignore_errors=True)
            return out
        stale = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.stale")
        try:
            out.rename(stale)
        except OSError:
            pass
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp.rename(out)
    except OSError:  # another job renamed its identical build into place a moment earlier
        shutil.rmtree(tmp, ignore_errors=True)
    return out
