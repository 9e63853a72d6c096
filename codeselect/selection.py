"""The selection job: pool -> embeddings -> selector -> selected JSONL + `selection.json` manifest."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from codeselect.errors import UserError
from codeselect.pool import open_pool, selection_path, size_tag, write_json, write_rows

log = logging.getLogger(__name__)


def resolve_pool_path(data_cfg: Any, cache_dir: Path) -> str:
    """The pool to read (file, folder or hub id): `data.path` when given, else the embedded stdlib
    pool (built once)."""
    if data_cfg.path:
        return str(data_cfg.path)
    if data_cfg.source == "stdlib":
        from codeselect.stdlib_pool import build_stdlib_pool

        return str(build_stdlib_pool(cache_dir / "pools", min_pairs=int(data_cfg.min_pairs)))
    raise UserError("no pool given: set data.path=FILE", key="data.path")


def check_sample_num(sample_num: Any, pool_size: int, pool_path: Any) -> int:
    """sample_num must be an integer in [1, pool size]."""
    if isinstance(sample_num, bool) or not isinstance(sample_num, int):
        raise UserError(f"must be an integer, got {sample_num!r}", key="sample_num")
    if sample_num <= 0:
        raise UserError(f"must be positive, got {sample_num}", key="sample_num")
    if sample_num > pool_size:
        raise UserError(f"{sample_num} is larger than the pool ({pool_size} records in {pool_path})",
                        key="sample_num")
    return sample_num


def run_selection(cfg: Any, run_dir: str | Path) -> dict[str, Any]:
    """Run one selection as configured; write outputs into `run_dir`; return the manifest."""
    from omegaconf import OmegaConf

    from codeselect.config.build import instantiate

    from codeselect.selectors.base import SelectionContext, resolve_device

    t_start = time.perf_counter()
    run_dir = Path(run_dir)
    cache_dir = Path(str(cfg.cache_dir)).expanduser()
    device = resolve_device(str(cfg.device))

    pool_path = resolve_pool_path(cfg.data, cache_dir)
    t0 = time.perf_counter()
    full = open_pool(pool_path, cfg.data.fields, str(cfg.data.split))
    load_s = time.perf_counter() - t0
    from codeselect.pool.clean import clean_pool, flag_selected

    t0 = time.perf_counter()
    keep, cleaning = clean_pool(full, cfg.data)
    clean_s = time.perf_counter() - t0
    pool = full if keep is None else full.subset(keep)
    k = check_sample_num(cfg.sample_num, len(pool), pool_path)
    selector = instantiate(cfg.selector, "selector")
    log.info("pool %s: %d records%s; selecting %d with %s", pool_path, len(pool),
             f" ({len(full) - len(pool)} removed)" if keep is not None else "", k, selector.name)

    from codeselect.embed import embed_pool

    t0 = time.perf_counter()
    embeddings = embed_pool(full, cfg.embedding, cache_dir=cache_dir, device=device)
    if keep is not None:
        embeddings = embeddings[torch_index(keep)]
    embed_s = time.perf_counter() - t0

    ctx = SelectionContext(records=pool.records, embeddings=embeddings, seed=int(cfg.seed),
                           cache_dir=cache_dir, pool_hash=pool.hash(), device=device)
    t0 = time.perf_counter()
    indices = [int(i) for i in selector.select(ctx, k)]
    select_s = time.perf_counter() - t0
    if len(indices) != k or len(set(indices)) != k or not all(0 <= i < len(pool) for i in indices):
        raise RuntimeError(f"selector {selector.name} returned {len(indices)} indices "
                           f"({len(set(indices))} distinct) for k={k}")

    from codeselect.metrics import subset_metrics

    t0 = time.perf_counter()
    metrics = subset_metrics(embeddings, indices, seed=int(cfg.seed),
                             mmd_sample=int(cfg.metrics.mmd_sample))
    metrics_s = time.perf_counter() - t0

    out_file = selection_path(pool.source, run_dir, size_tag(k))
    # ifd / ppl records gain their score key, as the reference's scripts write them
    scores = {key: [float(values[i]) for i in indices] for key, values in ctx.record_scores.items()}
    write_rows(pool.source, [int(pool.rows[i]) for i in indices], out_file, extra=scores)
    selected_ids = [str(pool.ids[i].as_py()) for i in indices]
    flag_selected(cleaning, selected_ids)
    plot_file = None
    if cfg.plot:
        from codeselect.plots import plot_selection

        plot_file = plot_selection(embeddings.float().cpu().numpy(), indices, run_dir / "selection.png",
                                   title=f"{selector.name}, {k:,} of {len(pool):,}", seed=int(cfg.seed))
    timings = {"load_s": round(load_s, 3), "clean_s": round(clean_s, 3), "embed_s": round(embed_s, 3), "select_s": round(select_s, 3),
               "metrics_s": round(metrics_s, 3), "total_s": round(time.perf_counter() - t_start, 3)}
    manifest = {
        "selector": selector.name,
        "sample_num": k,
        "pool_size": len(pool),
        "pool_path": str(pool_path),
        "pool_format": pool.source.kind,
        "pool_rows": len(full),
        "synthetic_ids": pool.synthetic_ids,
        "pool_hash": ctx.pool_hash,
        "embedding_dim": int(embeddings.shape[1]),
        "output_file": out_file.name,
        "selected_ids": selected_ids,
        "timings": timings,
        "metrics": metrics,
        "selector_info": selector_info(selector.name, cfg.selector, ctx.info),
        **cleaning,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if cfg.report.enabled:  # what was picked: report + dataset card beside selection.json
        from codeselect.selection_report import write_selection_report

        manifest["report"] = write_selection_report(pool, indices, embeddings, manifest, cfg.report, run_dir,
                                                    scores={**ctx.record_scores, **ctx.report_scores})
    write_json(run_dir / "selection.json", manifest)

    from codeselect.lineage import log_selection
    from codeselect.tracking import run_context, start_tracker

    context = run_context(cfg, "select", run_dir)
    with start_tracker(cfg.logger, run_dir, manifest["config"], job_type="select",
                       name=f"{selector.name}-sn{k}", context=context) as tracker:
        for step, loss in enumerate(ctx.info.get("loss_history", [])):
            tracker.log({"selector/loss": loss}, step=step)
        log_selection(tracker, manifest, run_dir, artifacts=bool(cfg.logger.get("artifacts", True)))
        if plot_file is not None:
            tracker.log_image("selection", plot_file)

    print(f"selected {k} of {len(pool)} records with {selector.name} in {timings['total_s']:.1f} s")
    print(f"  records:  {out_file}")
    print(f"  manifest: {run_dir / 'selection.json'}")
    return manifest


def selector_info(name: str, node: Any, info: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `selector_info`, one shape for every selector: `name`, `params` (its config,
    resolved, without `_target_`) and `stats` (what it reported, flat: a selector that nests its
    report under its own name, as kcenter/dq/random do, is unnested)."""
    from omegaconf import OmegaConf

    params = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    params = {k: v for k, v in params.items() if k not in ("_target_", "name", "scorer")}
    stats = dict(info)
    if isinstance(stats.get(name), dict):
        stats = {**stats.pop(name), **stats}
    return {"name": name, "params": params, "stats": stats}


def torch_index(positions: Any) -> Any:
    """A torch index tensor from numpy positions."""
    import torch

    return torch.as_tensor(positions, dtype=torch.long)
