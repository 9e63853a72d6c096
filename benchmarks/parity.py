"""Reference parity: run the published selection scripts and ours on the same pool, compare subsets.

    python benchmarks/parity.py --reference /path/to/efficode-finetune     # a checkout (or a bare git dir)

The published scripts are not part of this repository; point --reference at your own copy of the
paper's code. On a real pool (default: the first 3,000 and 3,003 rows and all 15,419 rows of
code-instruct-15k with their MiniLM embeddings as the reference's `.pt`) it runs, for each selector,
the published script and `select.py` with the same seed, embeddings and scores, and reports whether
the two subsets are identical in the identical order. random, kcenter, dq (get_bins + dq_select),
deita (deita_select, on a scores file with ties), ifd and ppl (on a scores file with ties). The
parametric selector's script needs a GPU (`.cuda()`); its parity is measured in bench_ours.py.
Writes benchmarks/results/parity.md.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "instruct"
SCRIPTS = ["random/random_select.py", "kcenter/kcenter_select.py", "dq/get_bins.py", "dq/dq_select.py",
           "dq/submodular_function.py", "dq/submodular_optimizer.py", "deita/deita_select.py",
           "ifd/ifd_select.py", "ppl/ppl_select.py"]


def reference_scripts(reference: Path, into: Path) -> Path:
    """The published `data_selection/` folder: from a checkout, or read out of a bare git dir."""
    if (reference / "data_selection").is_dir():
        return reference / "data_selection"
    for name in SCRIPTS:
        text = subprocess.run(["git", f"--git-dir={reference}", "show", f"HEAD:data_selection/{name}"],
                              check=True, capture_output=True, text=True).stdout
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        (into / name).write_text(text)
    return into


def write_pool(rows: list[dict], emb: np.ndarray, folder: Path, seed: int) -> dict[str, Path]:
    """The pool JSONL, the reference's `.pt` dict, and scores files (with ties) in both formats."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    paths = {k: folder / f for k, f in [("pool", "pool.jsonl"), ("pt", "pool.pt"), ("deita", "deita.jsonl"),
                                          ("analysis", "analysis.jsonl"), ("ifd", "ifd.jsonl"), ("ppl", "ppl.jsonl")]}
    paths["pool"].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    torch.save({str(r["id"]): torch.from_numpy(emb[i].copy()) for i, r in enumerate(rows)}, paths["pt"])
    rng = random.Random(seed)
    deita, analysis, ifd, ppl = [], [], [], []
    for r in rows:
        c, q = round(rng.uniform(1, 6), 2), round(rng.uniform(1, 6), 1)
        deita.append({"id": r["id"], "complexity": c, "quality": q})
        analysis.append({"id": r["id"], "source": r.get("source"), "final_score": c * q})
        ifd.append({"id": r["id"], "ifd": round(rng.uniform(0, 2), 2)})
        ppl.append({"id": r["id"], "ppl": round(rng.uniform(1, 20), 1)})
    for key, items in [("deita", deita), ("analysis", analysis), ("ifd", ifd), ("ppl", ppl)]:
        paths[key].write_text("".join(json.dumps(x) + "\n" for x in items))
    return paths


def run(cmd: list[str], cwd: Path | None = None) -> None:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                         env=dict(os.environ, WANDB_MODE="offline", CUDA_VISIBLE_DEVICES=""))
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{out.stderr[-2000:]}")


def ids(folder: Path) -> list[str]:
    (path,) = folder.glob("*-sn*.jsonl")
    return [str(json.loads(line)["id"]) for line in path.read_text().splitlines()]


def compare(ref_dir: Path, p: dict[str, Path], work: Path, selector: str, k: int) -> tuple[bool, float]:
    """Run the published script and ours for one selector; (identical order, overlap)."""
    py, out_ref, out_ours = sys.executable, work / f"ref-{selector}-{k}", work / f"ours-{selector}-{k}"
    common = ["--data_path", str(p["pool"]), "--output_dir", str(out_ref), "--sample_num", str(k)]
    if selector == "random":
        run([py, str(ref_dir / "random/random_select.py"), *common])
    elif selector == "kcenter":
        run([py, str(ref_dir / "kcenter/kcenter_select.py"), *common, "--pt_path", str(p["pt"])])
    elif selector == "dq":
        bins = work / "bins"
        run([py, "get_bins.py", "--data_path", str(p["pool"]), "--pt_path", str(p["pt"]), "--output_dir", str(bins)],
            cwd=ref_dir / "dq")
        run([py, "dq_select.py", *common, "--bins_path", str(bins / "pool_bins10.jsonl")], cwd=ref_dir / "dq")
    elif selector == "deita":
        run([py, str(ref_dir / "deita/deita_select.py"), *common, "--analysis_path", str(p["analysis"]),
             "--pt_path", str(p["pt"])])
    else:
        run([py, str(ref_dir / f"{selector}/{selector}_select.py"), *common, "--score_path", str(p[selector])])
    extra = {"deita": [f"selector.scores_path={p['deita']}"], "ifd": [f"selector.scores_path={p['ifd']}"],
             "ppl": [f"selector.scores_path={p['ppl']}"]}.get(selector, [])
    run([py, str(REPO / "select.py"), f"selector={selector}", f"sample_num={k}", f"data.path={p['pool']}",
         "embedding=precomputed", f"embedding.path={p['pt']}", f"hydra.run.dir={out_ours}", "logger=none",
         "plot=false", *extra])
    a, b = ids(out_ref), ids(out_ours)
    return a == b, len(set(a) & set(b)) / max(1, len(a))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, type=Path, help="the published code: a checkout or a bare git dir")
    ap.add_argument("--sizes", default="3000,3003,15419")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/parity.md"))
    args = ap.parse_args()
    rows = [json.loads(line) for line in gzip.open(SHARED / "code-instruct-15k.jsonl.gz", "rt", encoding="utf-8")]
    emb = np.load(SHARED / "code-instruct-15k.minilm.npy")
    cases = {"random": [300, 1000], "kcenter": [300], "dq": [300, 1000], "deita": [300, 1000],
             "ifd": [300], "ppl": [300]}
    lines = ["# Reference parity: the published scripts vs select.py", "",
             "`python benchmarks/parity.py --reference <the paper's code>`: real pool code-instruct-15k "
             "(first n rows), its MiniLM embeddings as the reference's `.pt`, seed 42, the same scores files "
             "(with ties) for deita / ifd / ppl.", "",
             "| pool rows | selector | k | identical subset, identical order | overlap |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        ref_dir = reference_scripts(args.reference, Path(tmp) / "ref")
        for n in [int(s) for s in args.sizes.split(",")]:
            p = write_pool(rows[:n], emb[:n], Path(tmp) / f"pool{n}", seed=n)
            for selector, ks in cases.items():
                if selector == "dq" and n > 5000:
                    continue  # the published get_bins (n x n matrix, NaiveGreedy) takes tens of minutes at 15K
                for k in ks:
                    same, overlap = compare(ref_dir, p, Path(tmp) / f"pool{n}", selector, k)
                    print(n, selector, k, same, overlap, flush=True)
                    lines.append(f"| {n:,} | {selector} | {k:,} | {same} | {overlap:.3f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
