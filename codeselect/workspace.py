"""A sweep's W&B workspace, built with wandb-workspaces: `python -m codeselect.report DIR --wandb`.

The workspace shows the sweep's W&B group, one run per job: the pipeline's `job` runs (their
summary and history join select, train and evaluate: `codeselect.lineage`), or the select runs
of a select-only sweep. Sections: pass@1 (base, plus; each benchmark) against sample_num, one line
per selector (mean over seeds, min-max band); the subset metrics against sample_num; selection and
training time; the training loss curves by selector; a parallel-coordinates panel, a scatter of
subset MMD against pass@1 and a parameter-importance panel across the sweep; the runs table with
the joined columns. Every key a panel reads is one of `codeselect.lineage`'s.

Online (logged in, WANDB_MODE not offline) the workspace is saved and its URL printed; otherwise,
or when W&B does not answer within `timeout_s`, the spec (W&B's own JSON for the view) is written
beside report.md as `wandb_workspace.json`, and the command says how to push it later. Nothing here
waits on the network longer than that. `wandb_workspace.png` previews the panels from the sweep's
own files (the values each run logs, under the same keys).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codeselect import lineage as L

log = logging.getLogger(__name__)
SELECTOR = "selector.name"     # the config key the lines are grouped by
SPEC_FILE, PREVIEW_FILE = "wandb_workspace.json", "wandb_workspace.png"


@dataclass
class Sweep:
    """What the workspace is built for: where, which W&B group and project, which jobs."""

    root: Path
    group: str | None                           # None: a single select run (no W&B group)
    project: str
    kind: str                                   # pipeline | select
    jobs: list[dict[str, Any]] = field(default_factory=list)   # per job: its joined scalars (+ losses)
    benchmarks: list[tuple[str, bool]] = field(default_factory=list)  # (name, has plus tests)

    @property
    def job_type(self) -> str:
        return "job" if self.kind == "pipeline" else "select"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _job_dirs(root: Path) -> list[Path]:
    """Hydra job dirs under `root` that hold a selection (a select job or a pipeline job)."""
    dirs = {p.parent for p in root.rglob("selection.json")}
    jobs = set()
    for d in dirs:
        jobs.add(d.parent if d.name == "select" and (d.parent / ".hydra").is_dir() else d)
    return sorted(jobs)


def sweep_of(root: str | Path) -> Sweep:
    """Read a sweep dir: its jobs, their joined scalars, and the W&B group its runs share."""
    import yaml

    from codeselect.tracking import group_of_sweep_dir

    root = Path(root)
    jobs = _job_dirs(root)
    if not jobs:
        raise FileNotFoundError(f"no selection.json under {root}")
    kind = "pipeline" if any((j / "select" / "selection.json").is_file() for j in jobs) else "select"
    first = jobs[0] / ".hydra"
    config = yaml.safe_load((first / "config.yaml").read_text()) if (first / "config.yaml").is_file() else {}
    hydra = yaml.safe_load((first / "hydra.yaml").read_text()) if (first / "hydra.yaml").is_file() else {}
    logger_cfg = (config or {}).get("logger") or {}
    hydra = (hydra or {}).get("hydra") or {}
    output_dir = (hydra.get("runtime") or {}).get("output_dir")
    if logger_cfg.get("group"):
        group = logger_cfg["group"]
    elif hydra.get("mode") == "RUN":  # one job, not a sweep: a pipeline's stages share its job id
        group = "/".join(Path(output_dir or jobs[0]).resolve().parts[-2:]) if kind == "pipeline" else None
    else:
        group = group_of_sweep_dir(Path(output_dir).parent if output_dir else root)
    sweep = Sweep(root=root, group=group, project=str(logger_cfg.get("project") or "codeselect"), kind=kind)
    benches: dict[str, bool] = {}
    for job in jobs:
        sel_dir = job / "select" if kind == "pipeline" else job
        manifest = _read(sel_dir / "selection.json")
        train = _read(job / "train" / "train.json") if kind == "pipeline" else None
        evals = [s for p in sorted((job / "eval").glob("*/summary.json")) if (s := _read(p))] \
            if kind == "pipeline" else []
        for s in evals:
            benches[s["benchmark"]] = benches.get(s["benchmark"], False) or \
                (s.get("pass@1") or {}).get("plus") is not None
        scalars = L.job_scalars(manifest, train, evals)
        scalars["_losses"] = list((train or {}).get("losses") or [])
        sweep.jobs.append(scalars)
    sweep.benchmarks = sorted(benches.items())
    return sweep


# ----------------------------------------------------------------------------- the workspace
def _api() -> tuple[Any, Any]:
    """wandb-workspaces' report and workspace modules (imported quietly: their pydantic-v1-style
    validators warn at import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
    return wr, ws


def _line(title: str, y: str, x: str = L.SAMPLE_NUM) -> Any:
    wr, _ = _api()

    return wr.LinePlot(title=title, x=x, y=[y], groupby=wr.Config(SELECTOR), groupby_aggfunc="mean",
                       groupby_rangefunc="minmax", title_x="sample_num" if x == L.SAMPLE_NUM else "step",
                       title_y=y)


def pass_keys(sweep: Sweep) -> list[str]:
    """`<bench>/pass@1/base` (and `/plus` where plus tests ran) for every evaluated benchmark."""
    return [L.pass_key(b, t) for b, plus in sweep.benchmarks for t in (("base", "plus") if plus else ("base",))]


def summary_columns(sweep: Sweep) -> list[str]:
    """The joined summary keys the runs table, the parallel coordinates and the scatter read."""
    cols = [L.subset_key(m) for m in L.SUBSET_METRICS] + ["subset/tokens", L.SELECT_TIME]
    if sweep.kind == "pipeline":
        cols += [L.TRAIN_TIME, L.FINAL_LOSS, L.STEPS, *pass_keys(sweep)]
    return cols


def build_workspace(sweep: Sweep, entity: str) -> Any:
    """The wandb-workspaces `Workspace` for the sweep."""
    wr, ws = _api()
    from wandb_workspaces.reports.v2.interface import _metric_to_backend_pc

    sections = []
    passes = pass_keys(sweep)
    if passes:
        sections.append(ws.Section(name="pass@1 vs sample_num (mean over seeds, min-max band)", is_open=True,
                                   panels=[_line(k.replace("/pass@1/", " pass@1 "), k) for k in passes],
                                   layout_settings=ws.SectionLayoutSettings(columns=2, rows=max(1, len(passes) // 2))))
    sections.append(ws.Section(name="subset vs sample_num", is_open=True,
                               panels=[_line(m.replace("_", " "), L.subset_key(m)) for m in L.SUBSET_METRICS],
                               layout_settings=ws.SectionLayoutSettings(columns=2, rows=2)))
    times = [_line("selection time (s)", L.SELECT_TIME)]
    if sweep.kind == "pipeline":
        times += [_line("training time (s)", L.TRAIN_TIME), _line("training loss by selector", L.TRAIN_LOSS, x="Step")]
    sections.append(ws.Section(name="time and training", is_open=True, panels=times))
    target = passes[0] if passes else L.subset_key("mmd")
    across = [wr.ParallelCoordinatesPlot(
        title="across the sweep",
        columns=[wr.ParallelCoordinatesPlotColumn(metric=wr.Config(L.SAMPLE_NUM)),
                 *[wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(k), display_name=k)
                   for k in [L.subset_key("mmd"), L.subset_key("coverage_mean_max_sim"), L.SELECT_TIME,
                             *([L.FINAL_LOSS] if sweep.kind == "pipeline" else []), *passes]]]),
        wr.ScatterPlot(title=f"subset MMD vs {target}", x=wr.SummaryMetric(L.subset_key("mmd")),
                       y=wr.SummaryMetric(target if passes else L.subset_key("coverage_mean_max_sim"))),
        wr.ParameterImportancePlot(with_respect_to=target)]
    sections.append(ws.Section(name="across the sweep", is_open=True, panels=across))
    columns = [_metric_to_backend_pc(wr.Config(k)) for k in (SELECTOR, L.SAMPLE_NUM, "seed")]
    columns += [_metric_to_backend_pc(wr.SummaryMetric(k)) for k in summary_columns(sweep)]
    return ws.Workspace(
        entity=entity, project=sweep.project, name=f"codeselect {sweep.group or sweep.root.name}", sections=sections,
        settings=ws.WorkspaceSettings(max_runs=200),
        runset_settings=ws.RunsetSettings(filters=runs_filter(sweep), pinned_columns=columns))


def runs_filter(sweep: Sweep) -> str:
    """The runs the workspace shows: the sweep's group, one run per job (`job` or `select` runs)."""
    own = f"JobType = '{sweep.job_type}'"
    return f"Group = '{sweep.group}' and {own}" if sweep.group else own


def spec_of(workspace: Any) -> dict[str, Any]:
    """W&B's JSON for the view (what `Workspace.save()` sends), without a network."""
    return workspace._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")


# ----------------------------------------------------------------------------- the preview
def plot_preview(sweep: Sweep, spec: dict[str, Any], path: Path) -> Path:
    """Draw the spec's line plots from the sweep's own values (the same keys the runs log): what
    the workspace will show once the runs are on W&B."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for s in spec["spec"]["section"]["panelBankConfig"]["sections"] for p in s["panels"]
              if p["viewType"] == "Run History Line Plot"]
    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), dpi=100, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    selectors = sorted({j.get("selector") for j in sweep.jobs if j.get("selector")})
    colors = {s: f"C{i}" for i, s in enumerate(selectors)}
    for ax, panel in zip(axes.flat, panels):
        cfg = panel["config"]
        y = cfg["metrics"][0]
        for sel in selectors:
            jobs = [j for j in sweep.jobs if j.get("selector") == sel]
            if cfg["xAxis"] == "_step":
                for n, j in enumerate(jobs):
                    if j["_losses"]:
                        ax.plot(range(len(j["_losses"])), j["_losses"], color=colors[sel], lw=1,
                                label=sel if n == 0 else None)
                continue
            by_x: dict[float, list[float]] = {}
            for j in jobs:
                if y in j and cfg["xAxis"] in j:
                    by_x.setdefault(j[cfg["xAxis"]], []).append(float(j[y]))
            if by_x:
                xs = sorted(by_x)
                ax.plot(xs, [sum(by_x[x]) / len(by_x[x]) for x in xs], marker="o", color=colors[sel], label=sel)
                ax.fill_between(xs, [min(by_x[x]) for x in xs], [max(by_x[x]) for x in xs], color=colors[sel],
                                alpha=0.15)
        if not ax.lines:
            ax.text(0.5, 0.5, f"no values for {y}", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_title(cfg.get("chartTitle") or y, fontsize=9)
        ax.set_xlabel("step" if cfg["xAxis"] == "_step" else cfg["xAxis"], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(f"W&B workspace preview, line panels: group {sweep.group or '-'} "
                 f"({len(sweep.jobs)} {sweep.job_type} runs)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- online / offline
def offline_runs(root: Path) -> list[Path]:
    """The sweep's offline W&B run dirs in the order they ran (a later stage's artifact use must
    reach W&B after the log it names)."""
    runs = [p for p in root.rglob("offline-run-*") if p.is_dir()]
    return sorted(runs, key=lambda p: (p.name.split("-")[2], min((f.stat().st_mtime for f in p.glob("*.wandb")),
                                                                  default=0.0)))


def _online(timeout_s: float, fn: Any) -> tuple[bool, Any]:
    """Run `fn` in a daemon thread; (finished, result or exception) after at most `timeout_s`."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return False, TimeoutError(f"no answer from W&B within {timeout_s:.0f} s")
    return ("error" not in box), box.get("result", box.get("error"))


def publish(root: str | Path, out: str | Path | None = None, sync: bool = False,
            timeout_s: float = 60.0) -> dict[str, Any]:
    """Build the workspace for the sweep under `root`; save it online, or write its spec. Returns
    {"spec": path, "preview": path, "url": url or None, "message": what to tell the user}."""
    from codeselect.tracking import wandb_mode

    root = Path(root)
    out = Path(out) if out else root
    out.mkdir(parents=True, exist_ok=True)
    sweep = sweep_of(root)
    online = wandb_mode(None) == "online"
    entity = os.environ.get("WANDB_ENTITY") or "<your-entity>"
    url, message = None, ""
    if online:
        def save() -> str:
            import wandb

            if sync:
                for run_dir in offline_runs(root):
                    subprocess.run([sys.executable, "-m", "wandb", "sync", str(run_dir)], check=True,
                                   stdout=subprocess.DEVNULL)
            ent = os.environ.get("WANDB_ENTITY") or wandb.Api().default_entity
            workspace = build_workspace(sweep, ent).save()
            return str(workspace.url)

        done, result = _online(timeout_s if not sync else 3600.0, save)
        if done:
            url = result
            message = f"W&B workspace: {url}"
        else:
            message = f"W&B did not take the workspace ({result}); "
    spec = spec_of(build_workspace(sweep, entity))
    spec_path = out / SPEC_FILE
    spec_path.write_text(json.dumps(spec, indent=1) + "\n")
    preview = plot_preview(sweep, spec, out / PREVIEW_FILE)
    if url is None:
        n_off = len(offline_runs(root))
        if sync and not online:
            message += "--sync needs W&B online (`wandb login`, WANDB_MODE unset): nothing uploaded. "
        message += (f"W&B is offline: the workspace spec is in {spec_path} (group {sweep.group or 'none: one run'}, "
                    f"{len(sweep.jobs)} {sweep.job_type} runs; preview {preview}). To see it on W&B: "
                    f"`wandb login`, then `python -m codeselect.report {root} --wandb --sync` "
                    f"(uploads the {n_off} offline runs in the order they ran, then saves the workspace).")
        if not n_off:
            message += (f" No offline W&B run is under {root} (a sweep logged with logger=csv or none): the "
                        "workspace shows runs once a sweep is logged with logger=wandb.")
    return {"spec": spec_path, "preview": preview, "url": url, "message": message, "sweep": sweep}
