"""The evaluate job: (generate) -> sandboxed sanitize -> sandboxed runs + trusted grading -> summary.json + W&B.

`python evaluate.py benchmark=mbpp samples=FILE` scores existing generations (raw ones are
sanitized first); `python evaluate.py model=<checkpoint|hub id> benchmark=humaneval backend=vllm`
generates first (resumable) into `<root>/<dataset>/<model-id>_<backend>_temp<T>.jsonl`.
Outputs in the run dir: `<samples-stem>-sanitized.jsonl` (when sanitized here),
`<sanitized-stem>_eval_results.json` (evalplus's format) and `summary.json`.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

from codeselect.cli import model_argv  # noqa: F401  (kept importable from here)
from codeselect.errors import UserError

log = logging.getLogger("codeselect.evaluate")


def _gen_config(cfg: Any) -> Any:
    from codeselect.evaluation.generate import GenConfig

    g = cfg.generation
    return GenConfig(n_samples=int(g.n_samples), temperature=float(g.temperature),
                     top_p=float(g.top_p), max_new_tokens=int(g.max_new_tokens),
                     seed=int(cfg.seed), prompt=str(g.prompt),
                     add_special_tokens=bool(g.get("add_special_tokens", False)),
                     instruction_prefix=str(g.instruction_prefix),
                     response_prefix=str(g.response_prefix), extra_stop=list(g.extra_stop or []))


def make_backend(cfg: Any, model: str, gen: Any) -> Any:
    """The backend named by `backend.name` (hf | vllm)."""
    from codeselect.evaluation.generate import HFBackend, VLLMBackend

    b = cfg.backend
    if b.name == "hf":
        return HFBackend(model, device=str(b.device), dtype=str(b.dtype), cfg=gen,
                         trust_remote_code=bool(b.trust_remote_code),
                         attn_implementation=str(b.get("attn_implementation", "auto")))
    if b.name == "vllm":
        device = str(b.get("device", "auto"))
        if device not in ("auto", "cpu", "cuda"):
            raise UserError(f"must be auto, cpu or cuda, got {device!r}", key="backend.device")
        return VLLMBackend(model, cfg=gen, python=b.get("python", "auto"), device=device,
                           cpu=dict(b.get("cpu") or {}),
                           tensor_parallel_size=int(b.tensor_parallel_size),
                           dtype=str(b.dtype), max_model_len=b.max_model_len,
                           gpu_memory_utilization=float(b.gpu_memory_utilization),
                           enable_prefix_caching=bool(b.enable_prefix_caching),
                           trust_remote_code=bool(b.trust_remote_code),
                           engine_args=dict(b.get("engine_args") or {}))
    raise UserError(f"unknown backend {b.name!r} (hf | vllm)", key="backend")


def _model_path(cfg: Any) -> str:
    from omegaconf import OmegaConf

    m = cfg.model
    if m.source == "smollm2":  # the packaged SmolLM2, converted once to an HF folder in the cache
        from codeselect.train.models import resolve_model_path

        return resolve_model_path(OmegaConf.to_container(m, resolve=True), Path(str(cfg.cache_dir)), [])
    if m.source == "tiny":
        raise UserError("model=tiny is built from training texts; evaluate the checkpoint train.py "
                        "saved (model=<run dir>/checkpoint)", key="model")
    missing = OmegaConf.is_missing(m, "path") if "path" in m else True
    path = None if missing or m.source != "hf" else m.path
    if not path:
        raise UserError("nothing to evaluate: pass samples=<file.jsonl> or model=<checkpoint "
                        "folder or hub id>", key="model")
    if str(path).startswith((".", "/", "~")) and not Path(path).expanduser().exists():
        raise UserError("model folder not found", file=path, key="model")
    return str(path)


def generate(cfg: Any, bench: Any, problems: dict[str, Any]) -> Path:
    """Generate samples for `problems` with the configured model and backend (resumable)."""
    from codeselect.evaluation.generate import generate_samples, output_path, read_done

    model = _model_path(cfg)
    gen = _gen_config(cfg)
    out = output_path(cfg.root, bench.name, model, cfg.backend.name, gen.temperature,
                      cfg.model_id)
    done = read_done(out, gen.n_samples)
    if all(done.get(t, 0) >= gen.n_samples for t in problems):  # resumed and complete: no model load
        log.info("all %d tasks already generated in %s", len(problems), out)
        return out
    backend = make_backend(cfg, model, gen)
    started = time.time()
    try:
        generate_samples(problems, bench.name, backend, backend.tokenizer, gen, out,
                         batch_size=int(cfg.backend.batch_size),
                         progress=lambda d, t: log.info("generated %d/%d tasks", d, t))
    finally:
        if hasattr(backend, "close"):
            backend.close()
    log.info("generation took %.1fs -> %s", time.time() - started, out)
    if getattr(backend, "output_tokens", 0):
        log.info("vLLM: %d output tokens in %.1fs (%.0f tokens/s; engine start %.1fs)",
                 backend.output_tokens, backend.generate_s,
                 backend.output_tokens / max(backend.generate_s, 1e-9), backend.engine.load_s)
    return out


def run_evaluation(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """The whole job; returns the summary (also written to `run_dir/summary.json`)."""
    from omegaconf import OmegaConf

    from codeselect.data import write_json, write_jsonl
    from codeselect.evaluation.benchmarks import load_benchmark
    from codeselect.evaluation.sandbox import Limits, resolve_mode
    from codeselect.evaluation.correctness import (is_sanitized, load_samples, per_task_rows,
                                               sanitize_samples, sanitized_name, score,
                                               summarize, write_eval_results)
    from codeselect.tracking import run_context, start_tracker

    started = time.time()
    b = cfg.benchmark
    bench = load_benchmark(str(b.name), b.path, download=bool(b.download),
                           fallback=bool(b.fallback))
    problems = bench.problems
    if cfg.limit:
        problems = dict(list(problems.items())[: int(cfg.limit)])
    timings: dict[str, float] = {}
    if cfg.samples:
        samples_path = Path(str(cfg.samples)).expanduser()
        generated = False
    else:
        t = time.time()
        samples_path = generate(cfg, bench, problems)
        timings["generate_s"] = round(time.time() - t, 2)
        generated = True
    samples = load_samples(samples_path, bench)  # validates before anything is written
    if generated or cfg.limit:
        samples = [s for s in samples if s["task_id"] in problems]
    do_sanitize = not is_sanitized(samples_path) if cfg.sanitize == "auto" else bool(cfg.sanitize)
    sb = cfg.sandbox
    limits = Limits(memory_mb=int(sb.memory_mb), cpu_s=int(sb.cpu_s), nproc=int(sb.nproc),
                    fsize_mb=int(sb.fsize_mb), nofile=int(sb.nofile), tmpfs_mb=int(sb.tmpfs_mb),
                    output_mb=int(sb.output_mb), group_memory_mb=int(sb.group_memory_mb))
    try:
        mode = resolve_mode(str(sb.mode))
    except ValueError as exc:
        raise UserError(str(exc), key="sandbox.mode") from None
    workers = cfg.workers or os.cpu_count()
    t = time.time()
    if do_sanitize:
        san = cfg.sanitizer
        samples = sanitize_samples(samples, bench, workers=workers, limits=limits, sandbox=mode,
                                   timeout_s=float(san.timeout_s), max_kb=int(san.max_kb))
        sanitized_path = (samples_path.parent if generated else run_dir) / sanitized_name(samples_path)
        write_jsonl(sanitized_path, samples)
    else:
        sanitized_path = samples_path
    timings["sanitize_s"] = round(time.time() - t, 2)
    t = time.time()
    results = score(samples, bench, workers=workers, limits=limits,
                    sandbox=mode, cache_dir=cfg.cache_dir,
                    min_time_limit=float(cfg.evalplus.min_time_limit),
                    gt_time_limit_factor=float(cfg.evalplus.gt_time_limit_factor))
    timings["score_s"] = round(time.time() - t, 2)
    results_path = run_dir / sanitized_name(sanitized_path).replace(".jsonl", "_eval_results.json")
    write_eval_results(results, results_path)
    timings["total_s"] = round(time.time() - started, 2)
    summary = summarize(results, bench, samples=str(samples_path), sanitized=str(sanitized_path),
                        eval_results=str(results_path), sandbox=mode,
                        timings=timings)
    write_json(run_dir / "summary.json", summary)
    p1 = summary["pass@1"]
    log.info("%s pass@1: base %.3f, plus %s (%d tasks%s)", bench.name, p1["base"],
             "n/a" if p1["plus"] is None else f"{p1['plus']:.3f}", summary["n_tasks"],
             ", base tests only" if bench.base_only else "")
    with start_tracker(cfg.logger, run_dir, OmegaConf.to_container(cfg, resolve=True),
                       job_type="evaluate", name=f"{bench.name}-{Path(samples_path).stem}",
                       tags=[bench.name], context=run_context(cfg, "evaluate", run_dir)) as tracker:
        tracker.summary({k: v for k, v in summary.items() if k != "sandbox_errors"})
        tracker.log_table("per_task", ["task_id", "sample", "base_status", "plus_status"],
                          per_task_rows(results))
        from codeselect.lineage import log_evaluation  # history row, joined summary, W&B artifacts

        model_dir = cfg.model.get("path") if cfg.model.get("source") == "hf" else None
        log_evaluation(tracker, summary, None if model_dir in (None, "???") else str(model_dir), cfg.logger)
    return summary
