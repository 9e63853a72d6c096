"""Decontamination of the real 15K pool against HumanEval+ and MBPP+: which rows, which tasks, how fast.

    python benchmarks/bench_decontaminate.py

Pool: ../shared/data/instruct/code-instruct-15k.jsonl.gz (15,419 rows merged from CodeAlpaca,
Evol-Instruct, GPTeacher, CoNaLa and LeetCodeDataset). Benchmarks: ../shared/data/evalplus. Counts per
benchmark part come from indexing each part alone. Writes benchmarks/results/decontamination.md.
"""
from __future__ import annotations

import collections
import gzip
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"


def main() -> None:
    from codeselect.pool import open_pool
    from codeselect.pool.decontaminate import PARTS, build_index, find_contamination

    path = SHARED / "instruct" / "code-instruct-15k.jsonl.gz"
    source = [json.loads(ln)["source"] for ln in gzip.open(path, "rt", encoding="utf-8")]
    from codeselect.config import conf_defaults

    bench = {**conf_defaults("data/file", "decontamination"),
             "humaneval": str(SHARED / "evalplus/HumanEvalPlus-v0.1.10.jsonl"),
             "mbpp": str(SHARED / "evalplus/MbppPlus-v0.2.0.jsonl")}
    pool = open_pool(path)
    assert all(pool.id(i) == i for i in (0, 100, len(pool) - 1))  # ids are positions (used below)
    t0 = time.perf_counter()
    index, _ = build_index(bench)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hits = find_contamination(pool, index)
    scan_s = time.perf_counter() - t0
    per_part = {}
    for part in PARTS:
        idx, _ = build_index({**bench, "parts": [part]})
        per_part[part] = len(find_contamination(pool, idx))
    tasks = collections.Counter(h["task"] for h in hits)
    by_source = collections.Counter(source[h["position"]] for h in hits)
    by_field = collections.Counter("+".join(h["fields"]) for h in hits)
    lines = ["# Decontamination of the real 15K pool (`benchmarks/bench_decontaminate.py`)", "",
             f"Pool: `code-instruct-15k.jsonl.gz`, {len(pool):,} rows. Benchmarks: HumanEval+ (164 tasks) and "
             "MBPP+ (378 tasks): prompts, canonical solutions, test inputs. 13 consecutive words (`\\w+`, "
             "lower-cased) shared with any of them flag a row; windows of numbers / single characters only "
             f"are not indexed. Index {len(index.hashes):,} n-grams built in {build_s:.1f} s; scan of instruction "
             f"and response {scan_s:.1f} s (2-core CPU shared with other jobs).", "",
             f"**{len(hits)} rows flagged ({len(hits) / len(pool):.2%}), matching {len(tasks)} tasks** "
             f"({sum(t.startswith('HumanEval') for t in tasks)} HumanEval+, {sum(t.startswith('Mbpp') for t in tasks)} "
             "MBPP+).", "",
             "| flagged by part alone | rows |", "|---|---:|"]
    lines += [f"| {p} | {c} |" for p, c in per_part.items()]
    lines += ["", "| source | rows |", "|---|---:|"] + [f"| {s} | {c} |" for s, c in by_source.most_common()]
    lines += ["", "| matched in | rows |", "|---|---:|"] + [f"| {f} | {c} |" for f, c in by_field.most_common()]
    lines += ["", "| task (most shared n-grams) | rows | example row (id: instruction start) |", "|---|---:|---|"]
    for task, c in tasks.most_common():
        h = max((h for h in hits if h["task"] == task), key=lambda h: h["ngrams"])
        text = pool.instruction(h["position"])[:90].replace("\n", " ").replace("|", "\\|")
        lines.append(f"| {task} | {c} | {h['id']}: {text} ({h['ngrams']} n-grams) |")
    lines += ["", "Reading: nearly all matches are in responses and come from standard code idioms that the "
              "benchmarks' canonical solutions also use (trial-division prime tests, the longest-common-"
              "subsequence / palindromic-subsequence DP table, two-sum pair loops), found in LeetCode and "
              "Evol-Instruct answers, or in code quoted in an instruction (the two-sum loop of Mbpp/296's solution). "
              "Two instructions restate a benchmark problem outright (ids 4160 and 5810: Mbpp/395, the first "
              "non-repeated character of a string). `report` (the default) keeps all 55 and says so; "
              "`data.decontaminate=remove` drops them."]
    from codeselect.pool.dedup import find_duplicates

    t0 = time.perf_counter()
    from codeselect.config import conf_defaults

    dups = find_duplicates(pool, {**conf_defaults("data/file", "deduplication"), "method": "minhash"})
    dedup_s = time.perf_counter() - t0
    kinds = collections.Counter(d["kind"] for d in dups)
    lines += ["", "## Duplicates in the same pool (`data.dedup=report`)", "",
              f"MinHash LSH (word 5-gram shingles of instruction + response, 128 permutations, Jaccard >= 0.8) "
              f"plus exact (normalised) hashes: {len(dups)} duplicates ({kinds['exact']} exact after lower-casing "
              f"and collapsing whitespace, {kinds['near']} near) in {dedup_s:.1f} s. The pool was built with exact "
              "duplicates removed, so these are case/space variants and rephrasings such as:", ""]
    for d in [d for d in dups if d["kind"] == "near"][:3]:
        a = pool.instruction(int(d["duplicate_of"]))[:80].replace("\n", " ")
        b = pool.instruction(int(d["id"]))[:80].replace("\n", " ")
        lines.append(f"- {d['id']} ~ {d['duplicate_of']} (Jaccard {d['similarity']:.2f}): \"{b}\" ~ \"{a}\"")
    out = REPO / "benchmarks" / "results" / "decontamination.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
