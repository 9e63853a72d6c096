"""The pool's cleaning stage: decontamination and deduplication as configured, with their reports.

`data.decontaminate`: report (default: rows flagged and counted in a warning, the pool unchanged,
so the subset stays the reference's), remove (dropped before selection) or off.
`data.dedup`: off (default), report or remove. Each writes a manifest section listing the rows
(id, matched benchmark task or the id it duplicates).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Mapping

import numpy as np

from codeselect.errors import UserError

log = logging.getLogger(__name__)
MODES = ("report", "remove", "off")


def _mode(value: Any, key: str) -> str:
    mode = "off" if value is False else str(value)  # YAML reads a bare `off` as false
    if mode not in MODES:
        raise UserError(f"must be one of {', '.join(MODES)}, got {mode!r}", key=key)
    return mode


def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import DictConfig, OmegaConf

    if cfg is None:
        return {}
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def decontaminate(pool: Any, data_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The `decontamination` manifest section; `rows` holds the flagged rows (pool positions too)."""
    from codeselect.pool.decontaminate import build_index, find_contamination

    mode = _mode(data_cfg["decontaminate"], "data.decontaminate")
    if mode == "off":
        return {"mode": "off"}
    opts = _plain(data_cfg["decontamination"])
    t0 = time.perf_counter()
    index, info = build_index(opts)
    if index is None:
        msg = ("no HumanEval+/MBPP+ file found (set data.decontamination.humaneval=PATH and "
               "data.decontamination.mbpp=PATH, or HUMANEVAL_OVERRIDE_PATH / MBPP_OVERRIDE_PATH)")
        if mode == "remove":
            raise UserError(msg, key="data.decontamination")
        log.warning("decontamination skipped: %s", msg)
        return {"mode": mode, "status": "skipped", "reason": msg, **info}
    fields = list(opts["fields"])
    for f in fields:
        if f not in ("instruction", "response"):
            raise UserError(f"must be instruction and/or response, got {f!r}", key="data.decontamination.fields")
    rows = find_contamination(pool, index, fields)
    tasks: dict[str, int] = {}
    for r in rows:
        tasks[r["task"]] = tasks.get(r["task"], 0) + 1
    section = {"mode": mode, "status": "done", **info, "fields": fields, "flagged": len(rows),
               "removed": len(rows) if mode == "remove" else 0, "tasks": dict(sorted(tasks.items())),
               "rows": rows, "seconds": round(time.perf_counter() - t0, 3)}
    names = "/".join(b for b, v in info["benchmarks"].items() if v)
    if rows:
        verb = "removed before selection" if mode == "remove" else \
            "kept in the pool (data.decontaminate=remove drops them)"
        log.warning("decontamination: %d of %d rows share a %d-gram with %s (%d tasks); %s",
                    len(rows), len(pool), info["ngram"], names, len(tasks), verb)
    else:
        log.info("decontamination: no row shares a %d-gram with %s", info["ngram"], names)
    return section


def deduplicate(pool: Any, data_cfg: Mapping[str, Any], skip: set[int] | None = None) -> dict[str, Any]:
    """The `deduplication` manifest section (rows already removed by decontamination are skipped)."""
    from codeselect.pool.dedup import find_duplicates

    mode = _mode(data_cfg["dedup"], "data.dedup")
    if mode == "off":
        return {"mode": "off"}
    opts = _plain(data_cfg["deduplication"])
    t0 = time.perf_counter()
    rows = [r for r in find_duplicates(pool, opts) if not skip or r["position"] not in skip]
    kinds = {"exact": sum(r["kind"] == "exact" for r in rows), "near": sum(r["kind"] == "near" for r in rows)}
    log.warning("deduplication: %d duplicates (%d exact, %d near) of %d rows; %s", len(rows), kinds["exact"],
                kinds["near"], len(pool), "removed before selection" if mode == "remove" else "kept in the pool")
    return {"mode": mode, "method": str(opts["method"]), "threshold": opts["threshold"],
            "found": len(rows), **kinds, "removed": len(rows) if mode == "remove" else 0, "rows": rows,
            "seconds": round(time.perf_counter() - t0, 3)}


def clean_pool(pool: Any, data_cfg: Mapping[str, Any]) -> tuple[np.ndarray | None, dict[str, Any]]:
    """(pool positions to keep, or None when nothing is removed; manifest sections)."""
    decon = decontaminate(pool, data_cfg)
    removed = {r["position"] for r in decon.get("rows", [])} if decon["mode"] == "remove" else set()
    dedup = deduplicate(pool, data_cfg, skip=removed)
    if dedup["mode"] == "remove":
        removed |= {r["position"] for r in dedup["rows"]}
    keep = None
    if removed:
        mask = np.ones(len(pool), dtype=bool)
        mask[list(removed)] = False
        keep = np.nonzero(mask)[0]
        if len(keep) == 0:
            raise UserError("every row was removed by decontamination / deduplication", key="data.decontaminate")
    return keep, {"decontamination": decon, "deduplication": dedup}


def flag_selected(sections: dict[str, Any], selected_ids: list[str]) -> None:
    """Add to each section the selected ids it flagged (report mode: contaminated rows picked)."""
    chosen = set(selected_ids)
    for section in sections.values():
        rows = section.get("rows")
        if rows is not None:
            section["selected_flagged"] = [r["id"] for r in rows if r["id"] in chosen]
            for r in rows:
                r.pop("position", None)
