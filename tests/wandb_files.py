"""Read offline W&B run files back, and check a workspace spec against them (test helpers).

wandb 0.31 ships no reader for offline `.wandb` files; this one is written from the file format
(a LevelDB-style log of `Record` protobufs), independently of codeselect. `spec_problems` reads a
workspace spec in W&B's own JSON (not through wandb-workspaces or codeselect.workspace) and lists
every panel key that the runs the spec selects do not carry.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any


def read_wandb_run(path: Path) -> dict:
    """Group, tags, config, history, summary and artifacts of an offline `.wandb` file. The file is
    a LevelDB-style log (a 7-byte `:W&B` header, then 32 KiB blocks of chunks: crc32, length, type)
    of `Record` protobufs; read here independently of the SDK, which no longer ships a reader."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # block trailer
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending += chunk
        if kind in (1, 4):  # FULL or LAST
            records.append(pending)
            pending = b""

    def key(item) -> str:
        return item.key or "/".join(item.nested_key)

    out: dict = {"config": {}, "history": [], "history_keys": set(), "summary": {}, "artifacts": [],
                 "path": path}
    for raw in records:
        rec = pb.Record()
        rec.ParseFromString(raw)
        which = rec.WhichOneof("record_type")
        if which == "run":
            out["group"], out["tags"], out["job_type"] = rec.run.run_group, list(rec.run.tags), rec.run.job_type
            out["id"] = rec.run.run_id
            out["config"].update({key(i): json.loads(i.value_json) for i in rec.run.config.update})
        elif which == "config":
            out["config"].update({key(i): json.loads(i.value_json) for i in rec.config.update})
        elif which == "history":
            row = {key(i): json.loads(i.value_json) for i in rec.history.item}
            out["history"].append(row)
            out["history_keys"].update(row)
        elif which == "summary":
            out["summary"].update({key(i): json.loads(i.value_json) for i in rec.summary.update})
        elif which == "artifact":
            a = rec.artifact
            out["artifacts"].append({"name": a.name, "type": a.type, "digest": a.digest,
                                     "used": a.use_after_commit, "metadata": json.loads(a.metadata or "{}"),
                                     "entries": {e.path: e.ref for e in a.manifest.contents}})
    return out


def runs_in(folder: Path) -> list[dict]:
    return [read_wandb_run(p) for p in sorted(folder.glob("**/offline-run-*/run-*.wandb"))]


def config_value(run: dict, path: str) -> Any:
    """A nested config value by W&B's backend path (`selector.value.name`, `sample_num.value`)."""
    value: Any = run["config"]
    for part in (p for p in path.split(".") if p != "value"):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _matches(flt: dict, run: dict) -> bool:
    field = {"group": run.get("group"), "jobType": run.get("job_type")}[flt["key"]["name"]]
    if flt["op"] == "=":
        return field == flt["value"]
    if flt["op"] == "IN":
        return field in flt["value"]
    raise AssertionError(f"filter op {flt['op']} not understood")


def spec_problems(spec: dict, runs: list[dict]) -> list[str]:
    """Every panel, runs-table column and grouping key of `spec` that a run it selects lacks."""
    section = spec["spec"]["section"]
    runset = section["runSets"][0]
    matched = [r for r in runs if all(_matches(f, r) for f in runset["filters"]["filters"])]
    if not matched:
        return ["the runset's filter selects no run"]
    problems: list[str] = []

    def check(accessor: str, where: str) -> None:
        section_name, _, name = accessor.partition(":")
        for run in matched:
            if section_name == "summary" and name not in run["summary"]:
                problems.append(f"{where}: summary key {name!r} missing in run {run['id']}")
            elif section_name == "config" and config_value(run, name) is None:
                problems.append(f"{where}: config key {name!r} missing in run {run['id']}")

    for sec in section["panelBankConfig"]["sections"]:
        for panel in sec["panels"]:
            cfg, kind = panel["config"], panel["viewType"]
            where = f"{sec['name']} / {cfg.get('chartTitle') or kind}"
            if kind == "Run History Line Plot":
                x, ys = cfg["xAxis"], cfg["metrics"]
                for run in matched:
                    if not any(all(y in row for y in ys) and (x == "_step" or x in row) for row in run["history"]):
                        problems.append(f"{where}: run {run['id']} has no history row with {x} and {ys}")
                if cfg.get("groupBy"):
                    check(f"config:{cfg['groupBy']}", where)
            elif kind == "Scatter Plot":
                check(cfg["xAxis"], where)
                check(cfg["yAxis"], where)
            elif kind == "Parallel Coordinates Plot":
                for column in cfg["columns"]:
                    check(column["accessor"], where)
            elif kind == "Parameter Importance":
                check(f"summary:{cfg['targetKey']}", where)
            else:
                problems.append(f"{where}: panel type {kind} not checked")
    for column in runset["runFeed"]["columnPinned"]:
        if not column.startswith("run:"):
            check(column, "runs table")
    return problems
