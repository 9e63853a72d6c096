"""Re-score the paper's published generations and print its table beside ours.

    python benchmarks/reproduce_table.py                       # every file, both benchmarks
    python benchmarks/reproduce_table.py --benchmark mbpp --method ours random --size 5K
    python benchmarks/reproduce_table.py --limit 20            # first 20 tasks per file (quick)
    python benchmarks/reproduce_table.py --evalplus-baseline 1 # also time plain evalplus on 1 file

Per file: sanitize the raw generations and diff them with the published sanitized file; score the
published sanitized file in our sandbox; compare base/plus status per task with the published
`*_eval_results.json`. Checks are cached per file (`--cache`), so an interrupted run resumes.
Writes benchmarks/results/reproduction.md.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CODESELECT_SHARED", REPO.parent / "shared"))
DATA = {"humaneval": SHARED / "data/evalplus/HumanEvalPlus-v0.1.10.jsonl",
        "mbpp": SHARED / "data/evalplus/MbppPlus-v0.2.0.jsonl"}


NOTES = "<!-- notes: kept when this file is regenerated -->"


def evalplus_baseline(pub, workers: int) -> float:
    """Seconds plain `evalplus.evaluate` (no sandbox, its ground-truth cache warm) takes on a file."""
    env = {**os.environ, "HUMANEVAL_OVERRIDE_PATH": str(DATA["humaneval"]),
           "MBPP_OVERRIDE_PATH": str(DATA["mbpp"])}
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / pub.sanitized.name
        shutil.copy(pub.sanitized, f)
        cmd = [sys.executable, "-m", "evalplus.evaluate", "--dataset", pub.benchmark,
               "--samples", str(f), "--parallel", str(workers)]
        subprocess.run(cmd, env=env, capture_output=True, check=True, cwd=tmp)  # warm its GT cache
        f.with_name(f.name.replace(".jsonl", "_eval_results.json")).unlink()
        started = time.time()
        subprocess.run(cmd, env=env, capture_output=True, check=True, cwd=tmp)
        return time.time() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=str(SHARED / "reference/evalplus_results"))
    ap.add_argument("--benchmark", nargs="*", choices=["humaneval", "mbpp"])
    ap.add_argument("--method", nargs="*")
    ap.add_argument("--size", nargs="*")
    ap.add_argument("--limit", type=int, default=None, help="first N tasks of each file")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--cache", default=str(REPO / ".cache/reproduction"))
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/reproduction.md"))
    ap.add_argument("--cached-only", action="store_true",
                    help="write the report from the cached checks, score nothing")
    ap.add_argument("--evalplus-baseline", type=int, default=0,
                    help="also time plain evalplus (unsandboxed) on the first N files")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))  # this checkout's codeselect, whatever is installed
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("CODESELECT_CACHE", str(REPO / ".cache"))

    from codeselect.evaluation.benchmarks import load_benchmark
    from codeselect.evaluation.reproduce import (check_file, discover, files_table, load_check,
                                                 paper_table, save_check)
    from codeselect.evaluation.sandbox import detect_mode

    cache = Path(args.cache) / (f"limit{args.limit}" if args.limit else "full")
    files = discover(args.root, args.benchmark, args.method, args.size)
    benches = {}
    baseline = []
    for i, pub in enumerate(files):
        out = cache / f"{pub.name.replace('/', '__')}.json"
        if out.is_file() or args.cached_only:
            continue
        if pub.benchmark not in benches:
            benches[pub.benchmark] = load_benchmark(pub.benchmark, str(DATA[pub.benchmark]))
        check = check_file(pub, benches[pub.benchmark], workers=args.workers,
                           cache_dir=os.environ["CODESELECT_CACHE"], limit=args.limit)
        save_check(check, out)
        print(f"{pub.name}: ours {check.ours} published {check.published} base diff "
              f"{check.base_diff} plus diff {check.plus_diff} sanitize diff "
              f"{len(check.sanitize_diff)} ({check.score_s}s)", flush=True)
        if i < args.evalplus_baseline and not args.limit:
            ref_s = evalplus_baseline(pub, args.workers)
            baseline.append((pub.name, check.score_s, ref_s))
            print(f"  evalplus (no sandbox) {ref_s:.1f}s, ours {check.score_s}s: ratio "
                  f"{check.score_s / ref_s:.2f}", flush=True)

    checks = [load_check(p) for p in sorted(cache.glob("*.json"))]
    order = {p.name: i for i, p in enumerate(discover(args.root))}
    checks.sort(key=lambda c: order.get(c.name, 1 << 30))
    n_ok = sum(c.within_one for c in checks)
    diffs = sorted({t for c in checks for t in c.base_diff + c.plus_diff})
    md = [f"# Reproduction of the published evalplus results ({'first ' + str(args.limit) + ' tasks per file' if args.limit else 'all tasks'})",
          "", f"Sandbox mode: `{detect_mode()}`, {args.workers} workers. Files checked: "
          f"{len(checks)} of {len(discover(args.root))}; within one task of the published "
          f"per-task results (base and plus): {n_ok}/{len(checks)}.",
          "", "Regenerate: `python benchmarks/reproduce_table.py [--benchmark ...] [--method ...] "
          "[--size ...] [--limit N]` (cached per file under `.cache/reproduction/`).", ""]
    for b in ("humaneval", "mbpp"):
        if any(c.name.startswith(b + "/") for c in checks):
            md += [f"## {b}: pass@1 % base (plus), published / ours", "", paper_table(checks, b), ""]
    md += ["## Per file", "", files_table(checks), ""]
    if diffs:
        md += ["Tasks that differ somewhere: " + ", ".join(diffs), ""]
    if baseline:
        md += ["## Speed: ours (sandboxed) vs plain evalplus (unsandboxed, GT cache warm)", "",
               "| file | ours s | evalplus s | ratio |", "|---|---|---|---|"]
        md += [f"| {n} | {o} | {r:.1f} | {o / r:.2f} |" for n, o, r in baseline] + [""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.read_text() if out.is_file() else ""
    if NOTES in old:  # hand-written analysis below the marker survives regeneration
        md += [NOTES + old.split(NOTES, 1)[1].rstrip("\n")]
    out.write_text("\n".join(md) + "\n")
    for b in ("humaneval", "mbpp"):
        if any(c.name.startswith(b + "/") for c in checks):
            print(paper_table(checks, b))
    print(f"{n_ok}/{len(checks)} files within one task; written {args.out}")


if __name__ == "__main__":
    main()
