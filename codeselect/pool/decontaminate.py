"""Decontamination: flag pool rows that share a word n-gram with HumanEval+ / MBPP+.

A row is contaminated when its instruction or response contains any n consecutive words (n = 13
by default, the usual choice for code since GPT-3's decontamination) of a benchmark task's prompt,
canonical solution or test inputs. Words are `\\w+` runs, lower-cased, so whitespace, punctuation
and case do not hide a copy. We write this ourselves instead of using a curation framework (NeMo
Curator, datatrove) because those pull in their own engines; the index here is a sorted numpy array
of 64-bit n-gram hashes, every hash hit is confirmed by comparing the words themselves, and a pool of
a million rows is scanned in chunks with a constant memory footprint.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from codeselect.errors import UserError

log = logging.getLogger(__name__)

WORD = re.compile(r"\w+")
_P = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier of the polynomial n-gram hash
BENCHMARKS = {"humaneval": ("HUMANEVAL_OVERRIDE_PATH", "HumanEvalPlus-v0.1.10.jsonl"),
              "mbpp": ("MBPP_OVERRIDE_PATH", "MbppPlus-v0.2.0.jsonl")}
PARTS = ("prompt", "canonical_solution", "test_inputs")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def benchmark_file(name: str, path: str | None) -> Path | None:
    """The benchmark's JSONL: `path`, else the evalplus override variable, else evalplus's cache."""
    env, filename = BENCHMARKS[name]
    for candidate in (path, os.environ.get(env)):
        if candidate:
            p = Path(str(candidate)).expanduser()
            if not p.is_file():
                raise UserError("benchmark file not found", file=p, key=f"data.decontamination.{name}")
            return p
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "evalplus" / filename
    return cache if cache.is_file() else None


def benchmark_texts(name: str, path: Path, parts: Sequence[str] = PARTS) -> list[tuple[str, str]]:
    """(task_id, text) for every prompt, prompt + canonical solution, and test input of a benchmark."""
    out: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                task = json.loads(raw)
                tid = str(task["task_id"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError("not an evalplus task line (task_id, prompt, ...)", file=path, line=lineno) from None
            prompt = str(task.get("prompt", ""))
            if "prompt" in parts:
                out.append((tid, prompt))
            if "canonical_solution" in parts:
                solution = str(task.get("canonical_solution", ""))
                # HumanEval's solution is the body under the prompt's signature; MBPP's is whole code.
                out.append((tid, prompt + solution if name == "humaneval" else solution))
            if "test_inputs" in parts:
                for inp in list(task.get("base_input") or []) + list(task.get("plus_input") or []):
                    out.append((tid, repr(inp)))
    return out


def _hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hash (mod 2^64) of every window of n ids: h_i = sum_j ids[i+j] P^(n-1-j)."""
    m = len(ids) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _P + ids[j:j + m]
    return h


def _valid(ids: np.ndarray, n: int) -> np.ndarray:
    """Windows of n ids with no 0 (an unknown word or a row separator)."""
    z = np.concatenate([[0], np.cumsum(ids == 0)])
    return (z[n:] - z[:-n]) == 0


def _has_word(word: np.ndarray, n: int) -> np.ndarray:
    """Windows of n tokens holding at least one real word (not a number, not a single character)."""
    c = np.concatenate([[0], np.cumsum(word)])
    return (c[n:] - c[:-n]) > 0


@dataclass
class NgramIndex:
    """Sorted n-gram hashes of the benchmark texts, each with where it starts in `flat`."""

    n: int
    vocab: dict[str, int]
    hashes: np.ndarray        # uint64, sorted
    where: np.ndarray         # int64, window start in `flat` of each hash
    text_of: np.ndarray       # int32, benchmark text of each hash
    flat: np.ndarray          # uint64 word ids of all benchmark texts, a 0 after each
    text_task: list[str]
    text_bench: list[str]

    @classmethod
    def build(cls, texts: Iterable[tuple[str, str, str]], n: int) -> "NgramIndex":
        """From (benchmark, task_id, text) triples."""
        vocab: dict[str, int] = {}
        ids: list[int] = []
        word: list[bool] = []
        begin: list[int] = []
        tasks, benches = [], []
        for bench, tid, text in texts:
            ws = words(text)
            if len(ws) < n:
                continue
            begin.append(len(ids))
            tasks.append(tid)
            benches.append(bench)
            ids.extend(vocab.setdefault(w, len(vocab) + 1) for w in ws)
            # n-grams of numbers and single characters only ("1 2 3 4 ...", the digits of a list
            # of floats, "a b c d ...") turn up in ordinary code by chance: they are not evidence
            # of a copy, so they are not indexed.
            word.extend(not (w.isdigit() or len(w) == 1) for w in ws)
            ids.append(0)
            word.append(False)
        if not tasks:
            raise UserError(f"no benchmark text has {n} words", key="data.decontamination.ngram")
        flat = np.array(ids, dtype=np.uint64)
        keep = _valid(flat, n) & _has_word(np.array(word, dtype=bool), n)
        where = np.nonzero(keep)[0]
        h = _hashes(flat, n)[where]
        order = np.argsort(h, kind="stable")
        where = where[order]
        text_of = (np.searchsorted(np.array(begin), where, side="right") - 1).astype(np.int32)
        return cls(n, vocab, h[order], where, text_of, flat, tasks, benches)

    def scan(self, texts: Sequence[str]) -> list[dict[str, int]]:
        """For each text, {task_id: matched n-grams} (empty when clean)."""
        n, get = self.n, self.vocab.get
        out: list[dict[str, int]] = [{} for _ in texts]
        ids: list[int] = []
        begin: list[int] = []
        for t in texts:  # one flat id list, a 0 after every row: no window spans two rows
            begin.append(len(ids))
            ids.extend(map(get, WORD.findall(t.lower()), repeat(0)))
            ids.append(0)
        ids.extend([0] * n)
        flat = np.array(ids, dtype=np.uint64)
        starts = np.array(begin, dtype=np.int64)
        if len(flat) < n or len(self.hashes) == 0:
            return out
        h = _hashes(flat, n)
        ok = _valid(flat, n)
        cand = np.nonzero(ok)[0]
        pos = np.searchsorted(self.hashes, h[cand])
        pos = np.minimum(pos, len(self.hashes) - 1)
        hit = self.hashes[pos] == h[cand]
        for p, first in zip(cand[hit], pos[hit]):
            row = int(np.searchsorted(starts, p, side="right") - 1)
            window = flat[p:p + n]
            j, seen = int(first), set()
            while j < len(self.hashes) and self.hashes[j] == h[p]:
                task = self.text_task[int(self.text_of[j])]
                o = int(self.where[j])
                if task not in seen and np.array_equal(self.flat[o:o + n], window):
                    seen.add(task)
                    out[row][task] = out[row].get(task, 0) + 1
                j += 1
        return out


def build_index(cfg: Mapping[str, Any]) -> tuple[NgramIndex | None, dict[str, Any]]:
    """The index for `data.decontamination`, and what it was built from (None when no benchmark file)."""
    n = int(cfg["ngram"])
    if n < 1:
        raise UserError(f"must be positive, got {n}", key="data.decontamination.ngram")
    parts = list(cfg["parts"])
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise UserError(f"unknown part {bad[0]!r} (known: {', '.join(PARTS)})", key="data.decontamination.parts")
    texts, info = [], {"ngram": n, "parts": parts, "benchmarks": {}}
    for name in cfg["benchmarks"]:
        if name not in BENCHMARKS:
            raise UserError(f"unknown benchmark {name!r} (humaneval | mbpp)", key="data.decontamination.benchmarks")
        path = benchmark_file(name, cfg[name])
        if path is None:
            info["benchmarks"][name] = None
            continue
        bench_texts = benchmark_texts(name, path, parts)
        info["benchmarks"][name] = {"path": str(path), "tasks": len({t for t, _ in bench_texts})}
        texts.extend((name, tid, text) for tid, text in bench_texts)
    if not texts:
        return None, info
    return NgramIndex.build(texts, n), info


def find_contamination(pool: Any, index: NgramIndex, fields: Sequence[str] = ("instruction", "response"),
                       chunk: int = 4096) -> list[dict[str, Any]]:
    """Contaminated pool positions: [{"position", "id", "task", "field", "ngrams", "tasks"}], pool order.

    `task` is the benchmark task sharing the most n-grams with the row (ties: the first in sorted
    order); `tasks` lists every matched task.
    """
    found: dict[int, dict[str, Any]] = {}
    for name in fields:
        for start in range(0, len(pool), chunk):
            stop = min(start + chunk, len(pool))
            for j, matches in enumerate(index.scan(pool.column(name, start, stop))):
                if not matches:
                    continue
                i = start + j
                hit = found.setdefault(i, {"position": i, "id": str(pool.ids[i].as_py()), "fields": [],
                                           "counts": {}})
                hit["fields"].append(name)
                for task, c in matches.items():
                    hit["counts"][task] = hit["counts"].get(task, 0) + c
    out = []
    for i in sorted(found):
        hit = found[i]
        counts = hit.pop("counts")
        best = sorted(counts, key=lambda t: (-counts[t], t))[0]
        out.append({**hit, "task": best, "ngrams": counts[best], "tasks": sorted(counts)})
    return out
