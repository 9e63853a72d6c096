"""Encoding speed on this CPU: the default torch float32 path vs the other backends, same vectors checked.

    python benchmarks/bench_encode.py                    # MiniLM and mpnet, 512 real instructions, 3 rounds
    python benchmarks/bench_encode.py --models minilm --n 64 --rounds 1   # smoke
    python benchmarks/bench_encode.py --models mpnet --n-mpnet 96 --paths "openvino bfloat16"

Texts: a seeded sample of instructions from ../shared/data/instruct/code-instruct-15k.jsonl.gz
(real lengths; truncation at the tokenizer's model_max_length, 512, as in every run). Every path is
`codeselect.embed.encoder.encode_texts` with the packaged model and the configured batch size, once
warm, with these `embedding` settings:

- `backend=torch dtype=float32`: the default;
- `backend=torch dtype=bfloat16`: bf16 autocast on the CPU;
- `backend=openvino dtype=float32` and `dtype=bfloat16`: OpenVINO on the CPU;
- "torch bf16 weights" (no config key: measured to compare): the default model with its weights cast
  to bf16, SDPA attention, pooling in float32;
- "onnxruntime float32" (no config key; only when `onnxruntime` and `onnx` import): the transformer
  exported with torch.onnx (TorchScript exporter, dynamic axes), run by onnxruntime's CPU provider on
  the torch thread count, in the same sentence-transformers pipeline.

Rounds interleave the paths (the order alternates) and the table gives medians of texts/s (wall
clock) and texts per CPU-second (process time of all threads; what contention disturbs least).
"load s": building the path and its first (warm-up) call of 8 texts, the model already loaded; for
OpenVINO and onnxruntime it includes converting (exporting) and compiling the model.
Writes benchmarks/results/encode.md.
"""
from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT = "torch float32 (default)"


Encode = Callable[[list[str]], np.ndarray]


def variants(base: dict[str, Any], cache: Path) -> dict[str, Callable[[], Encode]]:
    """Name -> a factory of a function encoding a list of texts (float32, unit rows)."""
    import torch

    from codeselect.embed.encoder import encode_texts, encoder_for

    def configured(**over: Any) -> Callable[[], Encode]:
        opts = {**base, **over}
        return lambda: lambda texts: encode_texts(texts, opts, cache_dir=cache)

    def bf16_weights() -> Encode:
        model = copy.deepcopy(encoder_for(base, cache, "cpu")).to(torch.bfloat16)

        def run(texts: list[str]) -> np.ndarray:
            e = model.encode(texts, batch_size=int(base["batch_size"]), convert_to_tensor=True,
                             show_progress_bar=False).float()  # pooling accumulates in float32
            return torch.nn.functional.normalize(e, dim=1).numpy()
        return run

    out = {DEFAULT: configured(),
           "torch bf16 autocast": configured(dtype="bfloat16"),
           "torch bf16 weights": bf16_weights,
           "openvino float32": configured(backend="openvino"),
           "openvino bfloat16": configured(backend="openvino", dtype="bfloat16")}
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        print(f"onnxruntime variant skipped ({exc})", flush=True)
    else:
        out["onnxruntime float32"] = lambda: onnxruntime_variant(base, cache)
    return out


def onnxruntime_variant(base: dict[str, Any], cache: Path) -> Encode:
    """The transformer exported to ONNX and run by onnxruntime inside the sentence-transformers pipeline."""
    import onnxruntime as ort
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    from codeselect.embed.encoder import encoder_for

    model = copy.deepcopy(encoder_for(base, cache, "cpu"))
    hf = model[0].auto_model
    example = dict(model.tokenizer(["a b", "a longer example text"], padding=True, return_tensors="pt"))
    names = list(example)

    class Export(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hf = hf

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.hf(**dict(zip(names, args)), return_dict=True).last_hidden_state

    path = cache / f"bench-{Path(str(base['model'])).name}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {k: {0: "batch", 1: "seq"} for k in [*names, "last_hidden_state"]}
    torch.onnx.export(Export().eval(), tuple(example[k] for k in names), str(path), input_names=names,
                      output_names=["last_hidden_state"], dynamic_axes=axes, dynamo=False, opset_version=17)
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    class Run(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = hf.config

        def forward(self, **features: torch.Tensor) -> Any:
            out = session.run(None, {k: features[k].numpy() for k in names})[0]
            return BaseModelOutput(last_hidden_state=torch.from_numpy(out))

    model[0].model = Run()

    def run(texts: list[str]) -> np.ndarray:
        e = model.encode(texts, batch_size=int(base["batch_size"]), convert_to_tensor=True, show_progress_bar=False)
        return torch.nn.functional.normalize(e.float(), dim=1).numpy()
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["minilm", "mpnet"])
    ap.add_argument("--n", type=int, default=512, help="texts per timed call (MiniLM)")
    ap.add_argument("--n-mpnet", type=int, default=None, help="texts per timed call for mpnet (default: --n)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=None, help="batch size for every path (default: the config's)")
    ap.add_argument("--paths", nargs="+", default=None, help=f"only these paths (the default, {DEFAULT!r}, always)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "encode.md")
    args = ap.parse_args()

    from omegaconf import OmegaConf

    from codeselect.embed.encoder import encoder_for

    pool = REPO.parent / "shared" / "data" / "instruct" / "code-instruct-15k.jsonl.gz"
    texts = [json.loads(ln)["instruction"] for ln in gzip.open(pool, "rt", encoding="utf-8")]
    sample = random.Random(0).sample(texts, max(args.n, args.n_mpnet or 0))
    cache = REPO / ".cache" / "bench_encode"
    rows: list[dict[str, Any]] = []
    for name in args.models:
        texts = sample[:(args.n_mpnet or args.n) if name == "mpnet" else args.n]
        base = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "embedding" / f"{name}.yaml"))
        base["show_progress"] = False
        base["batch_size"] = args.batch or base["batch_size"]
        load0 = os.getloadavg()[0]
        model = encoder_for(base, cache, "cpu")
        n_tok = [len(x) for x in model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]]
        paths: dict[str, Encode] = {}
        load_s: dict[str, float] = {}
        chosen = {v: make for v, make in variants(base, cache).items()
                  if v == DEFAULT or args.paths is None or v in args.paths}
        for v, make in chosen.items():  # build each, then warm it up (first calls allocate)
            t0 = time.perf_counter()
            paths[v] = make()
            paths[v](texts[:8])
            load_s[v] = time.perf_counter() - t0
        speeds: dict[str, list[float]] = {v: [] for v in paths}
        cpu: dict[str, list[float]] = {v: [] for v in paths}
        vecs: dict[str, np.ndarray] = {}
        for r in range(args.rounds):
            order = list(paths) if r % 2 == 0 else list(paths)[::-1]
            for v in order:
                t0, c0 = time.perf_counter(), time.process_time()
                vecs[v] = paths[v](texts)
                speeds[v].append(len(texts) / (time.perf_counter() - t0))
                cpu[v].append(len(texts) / (time.process_time() - c0))
                print(f"{name} {v}: {speeds[v][-1]:.1f} texts/s wall, {cpu[v][-1]:.1f} texts per CPU-second",
                      flush=True)
        ref = vecs[DEFAULT]
        load1 = os.getloadavg()[0]
        for v in paths:
            cos = (vecs[v] * ref).sum(1)
            rows.append({"model": name, "path": v, "speed": statistics.median(speeds[v]), "all": speeds[v],
                         "cpu": statistics.median(cpu[v]), "cpu_all": cpu[v], "load_s": load_s[v],
                         "cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
                         "max_len": model.max_seq_length, "tokens": statistics.mean(n_tok),
                         "batch": base["batch_size"], "n": len(texts), "loadavg": (load0, load1)})
        write(rows, args)


def write(rows: list[dict], args: argparse.Namespace) -> None:
    import torch

    loads = ", ".join(f"{m}: {r['loadavg'][0]:.1f} before, {r['loadavg'][1]:.1f} after"
                      for m, r in {r["model"]: r for r in rows}.items())
    lines = ["# Encoding speed on CPU (`benchmarks/bench_encode.py`)", "",
             f"Real instructions (a seeded sample of the 15K pool; `n` per timed call), {args.rounds} interleaved "
             "rounds, medians. "
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"{torch.get_num_threads()} torch threads, torch {torch.__version__}. The machine is shared with other "
             f"jobs (1-minute load average {loads}), so wall-clock texts/s are noisy; texts per CPU-second "
             "(process time, all threads) is what contention disturbs least. Cosine: each text's vector against the "
             "default path's, min and mean over the `n` texts.", "",
             "| model | path | n | texts/s wall (median) | rounds | wall speed-up | texts per CPU-s | rounds | "
             "CPU speed-up | min cosine to default | mean cosine | load s | truncation | mean tokens | batch |",
             "|---|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        base = next(x for x in rows if x["model"] == r["model"] and x["path"] == DEFAULT)
        lines.append(f"| {r['model']} | {r['path']} | {r['n']} | {r['speed']:.1f} | "
                     f"{', '.join(f'{s:.1f}' for s in r['all'])} | {r['speed'] / base['speed']:.2f}x | "
                     f"{r['cpu']:.1f} | {', '.join(f'{s:.1f}' for s in r['cpu_all'])} | {r['cpu'] / base['cpu']:.2f}x | "
                     f"{r['cos_min']:.6f} | {r['cos_mean']:.6f} | {r['load_s']:.1f} | {r['max_len']} | "
                     f"{r['tokens']:.0f} | {r['batch']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
