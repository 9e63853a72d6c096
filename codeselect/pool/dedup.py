"""Deduplication: exact (normalised text hash) and near-duplicates (MinHash LSH, `datasketch`).

Exact: instruction and response lower-cased with whitespace collapsed, hashed (blake2b, 8 bytes);
a row equal to an earlier one is its duplicate. Near: word 5-gram shingles of instruction + response,
MinHash signatures (128 permutations) and an LSH index at Jaccard 0.8 (datasketch picks the bands);
each candidate is confirmed against the signatures' Jaccard estimate. We use MinHash on the text
rather than embedding cosine because it sees the response too (the embeddings are of the instruction
only), needs no encoder, and scales linearly through LSH where all-pairs cosine is quadratic.
Rows are visited in pool order, so the first of a group is kept and later ones point to it.
"""
from __future__ import annotations

import hashlib
import re
from typing import Any, Mapping

from codeselect.errors import UserError

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    return _WS.sub(" ", text.lower()).strip()


def exact_duplicates(pool: Any, chunk: int = 65536) -> list[dict[str, Any]]:
    """Rows whose normalised instruction + response equal an earlier row's."""
    first: dict[bytes, int] = {}
    out = []
    for start in range(0, len(pool), chunk):
        stop = min(start + chunk, len(pool))
        for j, (ins, res) in enumerate(zip(pool.column("instruction", start, stop),
                                           pool.column("response", start, stop))):
            key = hashlib.blake2b(f"{normalise(ins)}\x00{normalise(res)}".encode("utf-8"),
                                  digest_size=8).digest()
            i = start + j
            if key in first:
                out.append({"position": i, "id": str(pool.ids[i].as_py()), "kind": "exact",
                            "duplicate_of": str(pool.ids[first[key]].as_py()), "similarity": 1.0})
            else:
                first[key] = i
    return out


def _shingles(text: str, k: int) -> set[bytes]:
    w = _WORD.findall(text.lower())
    if len(w) < k:
        return {" ".join(w).encode("utf-8")} if w else set()
    return {" ".join(w[i:i + k]).encode("utf-8") for i in range(len(w) - k + 1)}


def near_duplicates(pool: Any, threshold: float = 0.8, num_perm: int = 128, shingle: int = 5,
                    skip: set[int] | None = None, chunk: int = 4096) -> list[dict[str, Any]]:
    """Rows whose estimated Jaccard similarity to an earlier kept row is >= `threshold`."""
    from datasketch import MinHash, MinHashLSH

    if not 0 < threshold <= 1:
        raise UserError(f"must be in (0, 1], got {threshold}", key="data.deduplication.threshold")
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    skip = skip or set()
    kept: dict[int, Any] = {}
    out = []
    for start in range(0, len(pool), chunk):
        stop = min(start + chunk, len(pool))
        sets = [_shingles(f"{a}\n{b}", shingle) for a, b in zip(pool.column("instruction", start, stop),
                                                               pool.column("response", start, stop))]
        sigs = MinHash.bulk(sets, num_perm=num_perm)
        for j, sig in enumerate(sigs):
            i = start + j
            if i in skip or not sets[j]:
                continue
            best, best_sim = None, 0.0
            for cand in lsh.query(sig):
                sim = sig.jaccard(kept[cand])
                if sim >= threshold and (sim > best_sim or (sim == best_sim and cand < best)):
                    best, best_sim = cand, sim
            if best is None:
                lsh.insert(i, sig)
                kept[i] = sig
            else:
                out.append({"position": i, "id": str(pool.ids[i].as_py()), "kind": "near",
                            "duplicate_of": str(pool.ids[best].as_py()), "similarity": round(best_sim, 4)})
    return out


def find_duplicates(pool: Any, cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Duplicates by `data.deduplication.method` (exact | minhash, which includes exact), pool order."""
    method = str(cfg["method"])
    if method not in ("exact", "minhash"):
        raise UserError(f"must be exact or minhash, got {method!r}", key="data.deduplication.method")
    found = exact_duplicates(pool)
    if method == "minhash":
        found += near_duplicates(pool, float(cfg["threshold"]), int(cfg["num_perm"]), int(cfg["shingle"]),
                                 skip={d["position"] for d in found})
    return sorted(found, key=lambda d: d["position"])
