"""Compatibility: the embedding code moved to `codeselect.embed`; this module re-exports it."""
from __future__ import annotations

from codeselect.embed import cache_path, embed_pool, encode_sharded  # noqa: F401
from codeselect.embed.encoder import (assemble_split_zip, encode_texts, load_encoder,  # noqa: F401
                                      model_location, resolve_max_length)
from codeselect.embed.precomputed import load_precomputed, normalise_rows  # noqa: F401
