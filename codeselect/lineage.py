"""What each stage logs to W&B: the keys that join the stages, and the lineage as artifacts.

Keys (one name per quantity, the same in every run that carries it; `codeselect.workspace`'s
panels read exactly these):
- `sample_num`, `seed`, `selector` (the config also has `selector.name`, nested)
- `subset/<metric>` (mmd, coverage_mean_max_sim, kcenter_radius, diversity), `subset/tokens`
  (instruction + response tokens of the subset), `subset/contaminated`
- `time/select_s` (the selector), `time/embed_s`, `time/select_total_s`, `time/train_s`
- `train/loss` (history, Lightning), `train/final_loss`, `train/steps`, `train/tokens`
- `<benchmark>/pass@1/base`, `<benchmark>/pass@1/plus`

Which run carries what: a select run logs its `selection_scalars` as summary and as one history
row; an evaluate run logs `sample_num` and its benchmark's pass@1 as a history row (so line plots
against sample_num work) and, as summary, everything known about its model's job (selection,
training, its pass@1); a pipeline job ends with a `job` run whose summary and one history row
join select, train and every benchmark (`job_scalars`): the run that parallel-coordinates,
scatter, parameter-importance panels and the runs table read.

Lineage: pool (`pool`, a reference to the pool file) -> select run -> subset (`dataset`: the
selected file, `selection.json`, the selection report, the dataset card and a capped Table of the
selected samples) -> train run -> checkpoint (`model`, a reference to its folder; its files are
uploaded only with `logger.upload_model=true`) -> evaluate run -> `evaluation` (samples, evalplus
results, summary) -> job run. A later stage names its input by rebuilding the same artifact from
the same files (W&B identifies a version by its content digest), so offline runs link up when
they are synced, in the order they ran (`python -m codeselect.report DIR --wandb --sync`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

SUBSET_METRICS = ("mmd", "coverage_mean_max_sim", "kcenter_radius", "diversity")
SAMPLE_NUM = "sample_num"
SELECT_TIME = "time/select_s"
TRAIN_TIME = "time/train_s"
TRAIN_LOSS = "train/loss"          # Lightning's per-step history key (codeselect.train.module)
FINAL_LOSS = "train/final_loss"
STEPS = "train/steps"
REPORT_FILES = ("selection.json", "README.md", "selection_report.md", "selection_report.png",
                "selection_report.json", "selection.png")


def subset_key(metric: str) -> str:
    """`subset/<metric>`: a subset-quality metric of the selection."""
    return f"subset/{metric}"


def pass_key(benchmark: str, tests: str) -> str:
    """`<benchmark>/pass@1/<base|plus>`."""
    return f"{benchmark}/pass@1/{tests}"


# ----------------------------------------------------------------------------- the joined scalars
def selection_scalars(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The selection's numbers, under their joined keys."""
    timings, metrics = manifest.get("timings", {}), manifest.get("metrics", {})
    out: dict[str, Any] = {SAMPLE_NUM: int(manifest["sample_num"]), "pool_size": manifest.get("pool_size")}
    out.update({subset_key(m): metrics[m] for m in SUBSET_METRICS if metrics.get(m) is not None})
    report = manifest.get("report") or {}
    if report.get("tokens") is not None:
        out["subset/tokens"] = report["tokens"]
    decon = manifest.get("decontamination") or {}
    if "selected_flagged" in decon:
        out["subset/contaminated"] = len(decon["selected_flagged"])
    for key, name in (("select_s", SELECT_TIME), ("embed_s", "time/embed_s"), ("total_s", "time/select_total_s")):
        if timings.get(key) is not None:
            out[name] = timings[key]
    return out


def training_scalars(train: Mapping[str, Any]) -> dict[str, Any]:
    """The training run's numbers (from `train.json`), under their joined keys."""
    pairs = ((FINAL_LOSS, "final_loss"), ("train/initial_loss", "initial_loss"), (STEPS, "steps"),
             ("train/tokens", "tokens"), (TRAIN_TIME, "time_s"))
    return {key: train[src] for key, src in pairs if train.get(src) is not None}


def evaluation_scalars(summary: Mapping[str, Any]) -> dict[str, Any]:
    """One benchmark's pass@1 (from `summary.json`); `plus` only where plus tests ran."""
    bench, p1 = summary["benchmark"], summary.get("pass@1") or {}
    return {pass_key(bench, tests): p1[tests] for tests in ("base", "plus") if p1.get(tests) is not None}


def job_scalars(manifest: Mapping[str, Any] | None, train: Mapping[str, Any] | None,
                evaluations: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Everything known about one job, joined: selector, sample_num, seed, the subset's metrics
    and times, the training's loss, steps and time, pass@1 base/plus per benchmark."""
    out: dict[str, Any] = {}
    if manifest:
        out.update(selector=manifest["selector"], seed=(manifest.get("config") or {}).get("seed"))
        out.update(selection_scalars(manifest))
    if train:
        out.update(training_scalars(train))
    for summary in evaluations:
        out.update(evaluation_scalars(summary))
    return {k: v for k, v in out.items() if v is not None}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def training_of(checkpoint: str | Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None, Path | None]:
    """(train.json, selection.json, selection dir) behind a checkpoint folder, as far as found."""
    train = _read(Path(checkpoint).expanduser().parent / "train.json")
    data_path = ((train or {}).get("config") or {}).get("data", {}).get("path")
    if not data_path:
        return train, None, None
    sel_dir = Path(str(data_path)).expanduser().parent
    return train, _read(sel_dir / "selection.json"), sel_dir


# ----------------------------------------------------------------------------- artifacts
def artifact_name(*parts: Any) -> str:
    """A W&B artifact name (letters, digits, `-`, `_`, `.`) from its parts."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(str(p) for p in parts if p not in (None, "")))[:120]


def _wandb() -> Any:
    import wandb

    return wandb


def pool_artifact(manifest: Mapping[str, Any]) -> Any | None:
    """The pool, by reference to its file or folder (no checksum pass over a large pool: the name
    carries the pool's content hash). None for a pool that is not a local path (a hub id)."""
    path = Path(str(manifest.get("pool_path", ""))).expanduser()
    if not path.exists():
        return None
    art = _wandb().Artifact(artifact_name("pool", path.name.split(".")[0], manifest["pool_hash"]), type="pool",
                            metadata={"path": str(path.resolve()), "hash": manifest["pool_hash"],
                                      "rows": manifest.get("pool_rows"), "format": manifest.get("pool_format")})
    art.add_reference(path.resolve().as_uri(), checksum=False)
    return art


def dataset_artifact(selection_dir: str | Path, manifest: Mapping[str, Any]) -> Any:
    """The subset as a `dataset`: the selected file (or folder), `selection.json`, the selection
    report and dataset card, and the report's capped Table of the selected samples. A pure
    function of the files in `selection_dir`: the train run rebuilds the same digest."""
    wandb = _wandb()
    sel = Path(selection_dir)
    report = _read(sel / "selection_report.json") or {}
    table = report.get("table") or {}
    info = manifest.get("selector_info") or {}
    meta = {"pool_path": manifest.get("pool_path"), "pool_hash": manifest.get("pool_hash"),
            "pool_size": manifest.get("pool_size"), "selector": manifest.get("selector"),
            "params": info.get("params"), "seed": (manifest.get("config") or {}).get("seed"),
            "sample_num": manifest.get("sample_num"), "metrics": manifest.get("metrics"),
            "output_file": manifest.get("output_file"),
            "table_rows": len(table.get("rows", [])), "table_cap": table.get("cap")}
    art = wandb.Artifact(artifact_name("subset", manifest["selector"], f"sn{manifest['sample_num']}",
                                       manifest.get("pool_hash", "")[:8]), type="dataset", metadata=meta)
    out = sel / str(manifest["output_file"])
    if out.is_dir():
        art.add_dir(str(out), name=out.name, policy="immutable")
    else:
        art.add_file(str(out), name=out.name, policy="immutable")
    for name in REPORT_FILES:
        if (sel / name).is_file():
            art.add_file(str(sel / name), name=name, policy="immutable")
    if table.get("rows"):
        art.add(wandb.Table(columns=table["columns"], data=table["rows"]), "samples")
    return art


def model_artifact(train: Mapping[str, Any], upload: bool) -> Any | None:
    """The checkpoint as a `model`: a reference to its folder (`upload`: its files)."""
    ckpt = Path(str(train.get("checkpoint") or ""))
    if not ckpt.is_dir():
        return None
    tracking = train.get("tracking") or {}
    if tracking.get("selector") and tracking.get("sample_num") is not None:
        tail = [tracking["selector"], f"sn{tracking['sample_num']}"]
    else:
        tail = [hashlib.sha1(str(ckpt.resolve()).encode()).hexdigest()[:8]]
    meta = {k: train.get(k) for k in ("model", "model_path", "strategy", "steps", "epochs", "tokens",
                                      "final_loss", "precision", "world_size", "checkpoint")}
    meta["tracking"] = tracking
    art = _wandb().Artifact(artifact_name("model", train.get("model"), *tail), type="model", metadata=meta)
    if upload:
        art.add_dir(str(ckpt), policy="immutable")
    else:
        art.add_reference(ckpt.resolve().as_uri(), checksum=False)
    return art


def evaluation_label(summary: Mapping[str, Any], manifest: Mapping[str, Any] | None) -> str:
    """What an evaluation artifact is named after: its job (`<selector>-sn<k>`) when known, else
    the model id of its samples file."""
    if manifest:
        return f"{manifest['selector']}-sn{manifest['sample_num']}"
    from codeselect.report import model_label

    return model_label(dict(summary))


def evaluation_artifact(summary: Mapping[str, Any], model_label: str) -> Any:
    """An evaluation's files: the samples, their sanitized copy, evalplus's results, summary.json."""
    files = {Path(str(summary[k])) for k in ("samples", "sanitized", "eval_results") if summary.get(k)}
    meta = {k: summary.get(k) for k in ("benchmark", "n_tasks", "n_samples", "pass@1", "base_tests_only",
                                        "dataset_hash")}
    art = _wandb().Artifact(artifact_name("eval", summary["benchmark"], model_label), type="evaluation",
                            metadata=meta)
    for path in sorted(files):
        if path.is_file():
            art.add_file(str(path), name=path.name, policy="immutable")
    summary_path = Path(str(summary.get("eval_results", ""))).parent / "summary.json"
    if summary_path.is_file():
        art.add_file(str(summary_path), name="summary.json", policy="immutable")
    return art


def _guard(what: str, fn: Any, *args: Any) -> Any:
    """Run a lineage step; a failure is a warning, never the end of the run it annotates."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - tracking must never kill a run
        log.warning("W&B %s skipped: %s: %s", what, type(exc).__name__, exc)
        return None


# ----------------------------------------------------------------------------- stage hooks
def log_selection(tracker: Any, manifest: Mapping[str, Any], run_dir: str | Path, artifacts: bool = True) -> None:
    """The select run: its scalars (summary and one history row), the report picture, and (W&B)
    the pool it used and the subset it made."""
    scalars = selection_scalars(manifest)
    tracker.summary({**scalars, "selector": manifest["selector"]})
    tracker.log(scalars)
    png = Path(run_dir) / "selection_report.png"
    if png.is_file():
        tracker.log_image("selection_report", png)
    if tracker.wandb_run is None or not artifacts:
        return
    pool = _guard("pool artifact", pool_artifact, manifest)
    if pool is not None:
        _guard("pool artifact", tracker.use_artifact, pool)
    dataset = _guard("dataset artifact", dataset_artifact, run_dir, manifest)
    if dataset is not None:
        _guard("dataset artifact", tracker.log_artifact, dataset)


def log_training(tracker: Any, train: Mapping[str, Any], logger_cfg: Mapping[str, Any]) -> None:
    """The train run: its joined scalars as summary; (W&B) the subset it trained on (when it is a
    codeselect selection) as input, its checkpoint as output."""
    tracker.summary(training_scalars(train))
    if tracker.wandb_run is None or not logger_cfg.get("artifacts", True):
        return
    data_path = Path(str((train.get("config") or {}).get("data", {}).get("path", ""))).expanduser()
    manifest = _read(data_path.parent / "selection.json")
    if manifest and manifest.get("output_file") == data_path.name:
        dataset = _guard("dataset artifact", dataset_artifact, data_path.parent, manifest)
        if dataset is not None:
            _guard("dataset artifact", tracker.use_artifact, dataset)
    model = _guard("model artifact", model_artifact, train, bool(logger_cfg.get("upload_model", False)))
    if model is not None:
        _guard("model artifact", tracker.log_artifact, model)


def log_evaluation(tracker: Any, summary: Mapping[str, Any], model_path: str | None,
                   logger_cfg: Mapping[str, Any]) -> None:
    """The evaluate run: `sample_num` and pass@1 as a history row, the job's joined scalars as
    summary; (W&B) the checkpoint it evaluated as input, its evaluation as output."""
    train, manifest, _ = training_of(model_path) if model_path else (None, None, None)
    own = evaluation_scalars(summary)
    row = dict(own)
    if manifest:
        row[SAMPLE_NUM] = int(manifest["sample_num"])
    elif train and (train.get("tracking") or {}).get("sample_num") is not None:
        row[SAMPLE_NUM] = int(train["tracking"]["sample_num"])
    tracker.log(row)
    tracker.summary({**job_scalars(manifest, train, [summary]), **row})
    if tracker.wandb_run is None or not logger_cfg.get("artifacts", True):
        return
    if train:
        upload = bool(((train.get("config") or {}).get("logger") or {}).get("upload_model", False))
        model = _guard("model artifact", model_artifact, train, upload)
        if model is not None:
            _guard("model artifact", tracker.use_artifact, model)
    evaluation = _guard("evaluation artifact", evaluation_artifact, summary, evaluation_label(summary, manifest))
    if evaluation is not None:
        _guard("evaluation artifact", tracker.log_artifact, evaluation)


def log_job(cfg: Any, run_dir: str | Path, job_id: str) -> dict[str, Any]:
    """The end of a pipeline job: one `job` run whose summary (and one history row) joins the
    selection, the training and every benchmark's pass@1, with the training loss curve before it
    (`train/loss` per step, from train.json), so that one run per job carries everything the
    workspace plots; it uses the job's evaluations. Returns the joined scalars (the pipeline
    writes them into `pipeline.json`)."""
    from omegaconf import OmegaConf

    from codeselect.tracking import start_tracker

    run_dir = Path(run_dir)
    manifest = _read(run_dir / "select" / "selection.json")
    train = _read(run_dir / "train" / "train.json")
    evaluations = [s for bench in cfg.benchmarks
                   if (s := _read(run_dir / "eval" / str(bench) / "summary.json")) is not None]
    joined = job_scalars(manifest, train, evaluations)
    context = {"stage": "job", "selector": joined.get("selector"), "sample_num": joined.get(SAMPLE_NUM),
               "job_id": job_id, "pipeline": True}
    config = OmegaConf.to_container(cfg, resolve=True)
    with start_tracker(cfg.logger, run_dir, config, job_type="job",
                       name=f"{joined.get('selector')}-sn{joined.get(SAMPLE_NUM)}", context=context) as tracker:
        for loss in (train or {}).get("losses") or []:  # the training curve, one row per step
            tracker.log({TRAIN_LOSS: loss})
        tracker.log({k: v for k, v in joined.items() if isinstance(v, (int, float))})
        tracker.summary(joined)
        if tracker.wandb_run is not None and cfg.logger.get("artifacts", True):
            for summary in evaluations:
                art = _guard("evaluation artifact", evaluation_artifact, summary,
                             evaluation_label(summary, manifest))
                if art is not None:
                    _guard("evaluation artifact", tracker.use_artifact, art)
    return joined
