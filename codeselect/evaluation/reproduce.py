"""Re-score the published generation files and compare with the published per-task results.

The reference ships, for every (benchmark, method, size), the raw generations (`*_temp0.0.jsonl`),
their sanitized form (`*-sanitized.jsonl`) and evalplus's results (`*_eval_results.json`). For each
file `check_file` sanitizes the raw file (and diffs it against the published sanitized one),
scores the published sanitized file with our sandboxed evaluator, and lists the tasks whose base
or plus status differs. Results are cached as one JSON per file, so long runs resume.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from codeselect.evaluation.benchmarks import Benchmark
from codeselect.evaluation.correctness import load_samples, pass_at_k, sanitize_samples, score

METHOD_ORDER = ["ours", "random", "kcenter", "dq", "deita", "ifd", "ppl", "full92K"]
SIZE_ORDER = ["5K", "10K", "15K", "20K", "25K", "full"]


@dataclass
class PublishedFile:
    """One published sanitized generation file and its siblings."""

    benchmark: str
    method: str
    size: str
    sanitized: Path

    @property
    def raw(self) -> Path:
        return self.sanitized.with_name(self.sanitized.name.replace("-sanitized.jsonl", ".jsonl"))

    @property
    def results(self) -> Path:
        return self.sanitized.with_name(self.sanitized.name.replace(".jsonl", "_eval_results.json"))

    @property
    def name(self) -> str:
        return f"{self.benchmark}/{self.method}/{self.size}"


def discover(root: str | Path, benchmarks: Iterable[str] | None = None,
             methods: Iterable[str] | None = None, sizes: Iterable[str] | None = None
             ) -> list[PublishedFile]:
    """Published sanitized files under `root/<benchmark>/<method>/`, filtered, in table order."""
    out = []
    for f in Path(root).glob("*/*/*-sanitized.jsonl"):
        bench, method = f.parts[-3], f.parts[-2]
        m = re.search(r"-sn(\d+K)_", f.name)
        size = m.group(1) if m else "full"
        if benchmarks and bench not in benchmarks or methods and method not in methods \
                or sizes and size not in sizes:
            continue
        out.append(PublishedFile(bench, method, size, f))
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(out, key=lambda p: (rank.get(p.method, 99), SIZE_ORDER.index(p.size)
                                      if p.size in SIZE_ORDER else 99, p.benchmark))


@dataclass
class FileCheck:
    """Published vs ours for one file."""

    name: str
    n_tasks: int
    published: dict[str, float | None]
    ours: dict[str, float | None]
    base_diff: list[str] = field(default_factory=list)     # tasks passing base tests on one side only
    plus_diff: list[str] = field(default_factory=list)     # tasks passing plus tests on one side only
    status_diff: list[str] = field(default_factory=list)   # both fail, but fail vs timeout
    sanitize_diff: list[str] = field(default_factory=list)  # tasks where our sanitize differs
    score_s: float = 0.0
    sandbox_errors: list[str] = field(default_factory=list)

    @property
    def within_one(self) -> bool:
        return len(self.base_diff) <= 1 and len(self.plus_diff) <= 1


def check_file(pub: PublishedFile, bench: Benchmark, *, workers: int | None = None,
               cache_dir: str | Path | None = None, limit: int | None = None,
               sandbox: str = "auto") -> FileCheck:
    """Sanitize-diff and re-score one published file (the first `limit` tasks when given)."""
    published = json.loads(pub.results.read_text())
    samples = load_samples(pub.sanitized, bench)[:limit]
    raw = {s["task_id"]: s for s in load_samples(pub.raw, bench)} if pub.raw.is_file() else {}
    sanitize_diff = []
    if raw:
        ours_san = sanitize_samples([raw[s["task_id"]] for s in samples if s["task_id"] in raw],
                                    bench)
        pub_san = {s["task_id"]: s["solution"] for s in samples}
        sanitize_diff = [s["task_id"] for s in ours_san if s["solution"] != pub_san[s["task_id"]]]
    started = time.time()
    ours = score(samples, bench, workers=workers, cache_dir=cache_dir, sandbox=sandbox)
    elapsed = time.time() - started
    tids = list(ours["eval"])
    pub_sub = {"eval": {t: published["eval"][t] for t in tids}}
    diff: dict[str, list[str]] = {"base": [], "plus": [], "status": []}
    for t in tids:
        mine, theirs = ours["eval"][t][0], published["eval"][t][0]
        for kind in ("base", "plus"):
            a, b = mine[f"{kind}_status"], theirs[f"{kind}_status"]
            if (a == "pass") != (b == "pass"):
                diff[kind].append(t)
            elif a != b and t not in diff["status"]:
                diff["status"].append(t)
    return FileCheck(pub.name, len(tids), pass_at_k(pub_sub, (1,))["pass@1"],
                     pass_at_k(ours, (1,))["pass@1"], diff["base"], diff["plus"], diff["status"],
                     sanitize_diff, round(elapsed, 1), list(ours.get("sandbox_errors", [])))


def load_check(path: Path) -> FileCheck:
    return FileCheck(**json.loads(path.read_text()))


def save_check(check: FileCheck, path: Path) -> None:
    from codeselect.data import write_json

    write_json(path, asdict(check))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def paper_table(checks: list[FileCheck], benchmark: str) -> str:
    """Markdown: method x size, `published base (plus) / ours base (plus)` per cell."""
    cells = {c.name: c for c in checks if c.name.startswith(benchmark + "/")}
    methods = [m for m in METHOD_ORDER if any(n.split("/")[1] == m for n in cells)]
    lines = [f"| {benchmark} | " + " | ".join(SIZE_ORDER) + " |",
             "|---" * (len(SIZE_ORDER) + 1) + "|"]
    for m in methods:
        row = []
        for size in SIZE_ORDER:
            c = cells.get(f"{benchmark}/{m}/{size}")
            if c is None:
                row.append("")
                continue
            row.append(f"{_pct(c.published['base'])} ({_pct(c.published['plus'])}) / "
                       f"{_pct(c.ours['base'])} ({_pct(c.ours['plus'])})")
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def files_table(checks: list[FileCheck]) -> str:
    """Markdown: one row per checked file with both pass@1s and the differing tasks."""
    lines = ["| file | tasks | published base / plus | ours base / plus | base diff | plus diff "
             "| fail vs timeout | sanitize diff | within one task | score s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(
            f"| {c.name} | {c.n_tasks} | {_pct(c.published['base'])} / {_pct(c.published['plus'])}"
            f" | {_pct(c.ours['base'])} / {_pct(c.ours['plus'])}"
            f" | {', '.join(c.base_diff) or '-'} | {', '.join(c.plus_diff) or '-'}"
            f" | {len(c.status_diff)}"
            f" | {len(c.sanitize_diff)}{' (' + ', '.join(c.sanitize_diff) + ')' if c.sanitize_diff else ''}"
            f" | {'yes' if c.within_one else 'NO'} | {c.score_s} |")
    return "\n".join(lines)
