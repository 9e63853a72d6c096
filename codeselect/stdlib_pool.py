"""The embedded default pool (`data=stdlib`): instruction/response pairs mined from Python source.

Every documented public function and method of the standard library becomes one pair: the
instruction is built from its signature and docstring (summary and description, up to the first
section such as `Args:`/`Parameters`/`>>>`), the response is its source code *without* the
docstring (the instruction already carries it, and a response that repeats the instruction would
make the pairs trivially easy). The standard library alone gives about 2,700 pairs (Python 3.11),
so whole packages from `EXTRA_PACKAGES` (all installed with codeselect: numpy, matplotlib, torch
and transformers directly, networkx and sympy through torch) are added in that fixed order until
`min_pairs` is reached; the manifest names each one with its version. Files are read and
parsed with `ast`, never imported. Order and ids follow the sorted file paths, so a machine with
the same Python and package versions builds the same pool bit for bit. The pool and a manifest
recording its provenance are cached in `out_dir` and rebuilt only when the source set changes.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import sys
import sysconfig
import textwrap
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from codeselect.data import pool_hash, write_json, write_jsonl
from codeselect.errors import UserError

log = logging.getLogger(__name__)

BUILDER_VERSION = 1  # bump when the mining rules change: cached pools are rebuilt
EXTRA_PACKAGES = ("networkx", "numpy", "sympy", "matplotlib", "torch", "transformers")  # used in this order, only as far as needed
SKIP_DIRS = frozenset({"test", "tests", "testing", "idlelib", "turtledemo", "site-packages",
                       "dist-packages", "ensurepip", "pydoc_data", "benchmarks", "examples"})
MIN_DOC_CHARS = 20           # description shorter than this: skipped
MAX_DESC_CHARS = 1000        # longer descriptions are cut at a paragraph or sentence boundary
MIN_CODE_LINES = 3           # response lines (docstring removed), decorators and `def` included
MAX_CODE_LINES = 60
MAX_CODE_CHARS = 3000
FILTERS = {
    "skip_dirs": sorted(SKIP_DIRS), "skip_private": "names starting with '_' (files, dirs, defs)",
    "skip_files": "test_*.py, *_test.py, conftest.py, setup.py, __main__.py",
    "skip_defs": "nested in functions, no docstring, single simple statement body",
    "min_doc_chars": MIN_DOC_CHARS, "max_desc_chars": MAX_DESC_CHARS,
    "min_code_lines": MIN_CODE_LINES, "max_code_lines": MAX_CODE_LINES,
    "max_code_chars": MAX_CODE_CHARS,
    "dedup": "normalised code (ast.unparse, name erased) and exact instruction",
    "response": "source of the def with decorators, docstring removed, dedented",
}

_FUNCTION_TEMPLATES = (
    "Write a Python function `{sig}`.\n\n{desc}",
    "Implement the Python function `{sig}` as described below.\n\n{desc}",
    "{desc}\n\nWrite this as a Python function with the signature `{sig}`.",
    "Create a function `{sig}` in Python. Its documentation says:\n\n{desc}",
    "Complete the Python function `{sig}`. It should do the following:\n{desc}",
)
_METHOD_TEMPLATES = (
    "Write the method `{sig}` of the Python class `{cls}`.\n\n{desc}",
    "Implement `{cls}.{sig}` in Python.\n\n{desc}",
    "{desc}\n\nWrite this as a method `{sig}` of the class `{cls}`.",
    "In a Python class `{cls}`, add a method `{sig}`. It should do the following:\n{desc}",
)
# A docstring's description ends where its first structured section starts.
_SECTION = re.compile(
    r"^\s*(>>>|\.\. |:(param|type|return|returns|rtype|raises?|arg|keyword)\b|"
    r"(Args|Arguments|Parameters|Params|Returns?|Yields?|Raises|Examples?|Notes?|See Also|"
    r"References|Attributes|Keyword Arguments|Warnings?|Usage|Doctest)\s*:?\s*$)", re.IGNORECASE)
_UNDERLINE = re.compile(r"^\s*[-=~^]{3,}\s*$")


@dataclass(frozen=True)
class SourceRoot:
    """One tree of Python files: the standard library or one installed package."""

    name: str          # "stdlib" or the package's import name
    path: Path         # directory scanned
    module_base: str   # prefix of module names ("" for the stdlib, else the package name)
    version: str


def stdlib_root() -> SourceRoot:
    """The running interpreter's standard library."""
    return SourceRoot("stdlib", Path(sysconfig.get_paths()["stdlib"]), "",
                      ".".join(map(str, sys.version_info[:3])))


def package_root(name: str) -> SourceRoot | None:
    """An installed pure-Python package's directory, found without importing it (None if absent)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return SourceRoot(name, Path(list(spec.submodule_search_locations)[0]), name, version)


def iter_source_files(root: SourceRoot) -> list[str]:
    """Relative POSIX paths of the files to mine under `root`, sorted."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root.path):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and d.isidentifier()
                       and not d.startswith("_")]
        rel_dir = Path(dirpath).relative_to(root.path)
        for fn in filenames:
            if not fn.endswith(".py") or (fn.startswith("_") and fn != "__init__.py"):
                continue
            if fn.startswith("test_") or fn.endswith("_test.py") or fn in ("conftest.py", "setup.py"):
                continue
            out.append((rel_dir / fn).as_posix())
    return sorted(out)


def fingerprint(root: SourceRoot, files: list[str]) -> str:
    """Hash of the root's version and its files' paths and sizes: changes when the source set does."""
    h = hashlib.sha256(f"{root.name}\x00{root.version}\x00".encode())
    for rel in files:
        h.update(f"{rel}\x00{(root.path / rel).stat().st_size}\x00".encode())
    return h.hexdigest()[:16]


def module_name(root: SourceRoot, rel: str) -> str:
    """Dotted module name of a file: `json/decoder.py` -> `json.decoder`."""
    parts = rel[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([p for p in [root.module_base] if p] + parts)


def describe(doc: str) -> str:
    """The prose part of a docstring: paragraphs before the first section, unwrapped and capped."""
    lines = doc.splitlines()
    kept: list[str] = []
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if _SECTION.match(line) or (line.strip() and _UNDERLINE.match(nxt)):
            break
        kept.append(line)
    paragraphs = [" ".join(p.split()) for p in "\n".join(kept).split("\n\n")]
    paragraphs = [p for p in paragraphs if p]
    desc = ""
    for p in paragraphs:
        if desc and len(desc) + 2 + len(p) > MAX_DESC_CHARS:
            break
        desc = f"{desc}\n\n{p}" if desc else p
    if len(desc) > MAX_DESC_CHARS:  # one very long paragraph: cut at the last sentence end
        cut = desc[:MAX_DESC_CHARS]
        end = cut.rfind(". ")
        desc = cut[: end + 1] if end > MIN_DOC_CHARS else cut.rstrip() + " ..."
    return desc


def signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """`name(args) -> ret` as written in the source (annotations and defaults kept)."""
    ret = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    return f"{node.name}({ast.unparse(node.args)}){ret}"


def _is_trivial(body: list[ast.stmt]) -> bool:
    """A stub: `pass`, `...`, a bare `raise`, or returning a constant, a name or an attribute."""
    if len(body) != 1:
        return False
    stmt = body[0]
    if isinstance(stmt, (ast.Pass, ast.Raise)):
        return True
    if isinstance(stmt, (ast.Expr, ast.Return)):
        return stmt.value is None or isinstance(stmt.value, (ast.Constant, ast.Name, ast.Attribute))
    return False


def response_code(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> str | None:
    """The def's source (decorators included) with its docstring lines removed, dedented.

    None when the docstring shares a line with other code (it cannot be cut out by lines).
    """
    doc = node.body[0]
    before = lines[doc.lineno - 1].encode()[:doc.col_offset]
    after = lines[doc.end_lineno - 1].encode()[doc.end_col_offset:].strip()
    if before.strip() or (after and not after.startswith(b"#")):
        return None
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    body = lines[doc.end_lineno:node.end_lineno]
    while body and not body[0].strip():
        body = body[1:]
    return textwrap.dedent("\n".join(lines[start - 1:doc.lineno - 1] + body)).strip("\n") + "\n"


def _defs(tree: ast.Module) -> Iterator[tuple[ast.FunctionDef | ast.AsyncFunctionDef, str | None]]:
    """Module-level functions and methods of module-level classes (with the class name)."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node, None
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield item, node.name


def _choose(key: str, n: int) -> int:
    """A template index that depends only on `key` (stable across runs and machines)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % n


def mine_file(root: SourceRoot, rel: str, stats: Counter[str]) -> Iterator[dict[str, Any]]:
    """Candidate pairs from one file (before de-duplication); counts skips in `stats`."""
    try:
        src = (root.path / rel).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        stats["skipped_non_utf8_files"] += 1
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(src)
    except (SyntaxError, ValueError):
        stats["skipped_unparsable_files"] += 1
        return
    lines = src.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    module = module_name(root, rel)
    for node, cls in _defs(tree):
        if node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node)
        if not doc:
            stats["skipped_no_docstring"] += 1
            continue
        desc = describe(doc)
        if len(desc) < MIN_DOC_CHARS or _is_trivial(node.body[1:] or [ast.Pass()]):
            stats["skipped_trivial"] += 1
            continue
        code = response_code(node, lines)
        n_lines = len(code.splitlines()) if code else 0
        if code is None or not MIN_CODE_LINES <= n_lines <= MAX_CODE_LINES or len(code) > MAX_CODE_CHARS:
            stats["skipped_size"] += 1
            continue
        qualname = f"{cls}.{node.name}" if cls else node.name
        sig = signature(node)
        templates = _METHOD_TEMPLATES if cls else _FUNCTION_TEMPLATES
        template = templates[_choose(f"{module}:{qualname}", len(templates))]
        yield {"instruction": template.format(sig=sig, desc=desc, cls=cls),
               "response": code, "source": root.name, "module": module, "qualname": qualname}


def normalised_code(code: str, name: str) -> str | None:
    """The response's AST, unparsed with the function's name erased (None if it does not parse)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)) \
            or tree.body[0].name != name:
        return None
    tree.body[0].name = "_"
    tree.body[0].decorator_list = []
    return ast.unparse(tree)


def mine(min_pairs: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Mine the pool and its provenance: the stdlib, then extra packages until `min_pairs`."""
    t0 = time.perf_counter()
    candidates = {name: package_root(name) for name in EXTRA_PACKAGES}
    stats: Counter[str] = Counter()
    seen_code: set[str] = set()
    seen_instr: set[str] = set()
    records: list[dict[str, Any]] = []
    roots_info: list[dict[str, Any]] = []
    for root in [stdlib_root()] + [r for r in candidates.values() if r is not None]:
        if root.name != "stdlib" and len(records) >= min_pairs:
            break
        files = iter_source_files(root)
        before = len(records)
        for rel in files:
            for rec in mine_file(root, rel, stats):
                key = normalised_code(rec["response"], rec["qualname"].rsplit(".", 1)[-1])
                if key is None:
                    stats["skipped_unparsable_response"] += 1
                    continue
                if key in seen_code or rec["instruction"] in seen_instr:
                    stats["skipped_duplicate"] += 1
                    continue
                seen_code.add(key)
                seen_instr.add(rec["instruction"])
                records.append({"id": len(records), **rec})
        roots_info.append({"name": root.name, "path": str(root.path), "version": root.version,
                           "files": len(files), "fingerprint": fingerprint(root, files),
                           "pairs": len(records) - before})
    per_package = Counter(rec["module"].split(".")[0] for rec in records)
    manifest = {
        "builder_version": BUILDER_VERSION,
        "python": sys.version,
        "python_version": ".".join(map(str, sys.version_info[:3])),
        "implementation": sys.implementation.name,
        "min_pairs": min_pairs,
        "n_records": len(records),
        "pool_hash": pool_hash(records) if records else "",
        "roots": roots_info,
        "candidates": {name: (r.version if r else None) for name, r in candidates.items()},
        "counts_per_top_level_package": dict(sorted(per_package.items())),
        "counts_per_source": dict(Counter(rec["source"] for rec in records)),
        "skipped": dict(sorted(stats.items())),
        "filters": FILTERS,
        "build_s": round(time.perf_counter() - t0, 2),
    }
    return records, manifest


def _cache_valid(manifest: dict[str, Any], min_pairs: int) -> bool:
    """True when a cached manifest still describes what a fresh build would mine."""
    if manifest.get("builder_version") != BUILDER_VERSION or manifest.get("min_pairs") != min_pairs:
        return False
    if manifest.get("python") != sys.version:
        return False
    current = {name: package_root(name) for name in EXTRA_PACKAGES}
    if manifest.get("candidates") != {n: (r.version if r else None) for n, r in current.items()}:
        return False
    for info in manifest.get("roots", []):
        root = stdlib_root() if info["name"] == "stdlib" else current.get(info["name"])
        if root is None or str(root.path) != info["path"]:
            return False
        if fingerprint(root, iter_source_files(root)) != info["fingerprint"]:
            return False
    return True


def build_stdlib_pool(out_dir: Path, min_pairs: int = 10000) -> Path:
    """Path of the embedded default pool JSONL under `out_dir`, mining it first if needed.

    Writes `stdlib-py3XY.jsonl` and `stdlib-py3XY.manifest.json` (provenance: Python version, roots
    scanned with versions and fingerprints, counts per top-level package, filters, content hash).
    A cached pool is reused unless its manifest no longer matches this machine's source set.
    Raises UserError when fewer than `min_pairs` pairs can be mined here.
    """
    out_dir = Path(out_dir)
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}"
    pool_path = out_dir / f"stdlib-{tag}.jsonl"
    manifest_path = out_dir / f"stdlib-{tag}.manifest.json"
    if pool_path.is_file() and manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            manifest = {}
        if _cache_valid(manifest, min_pairs):
            log.info("stdlib pool: using cached %s (%d pairs)", pool_path, manifest["n_records"])
            return pool_path
    log.info("stdlib pool: mining Python source into %s", pool_path)
    records, manifest = mine(min_pairs)
    if len(records) < min_pairs:
        roots = ", ".join(f"{r['name']} {r['version']}" for r in manifest["roots"])
        raise UserError(f"only {len(records)} instruction pairs could be mined from {roots} "
                        f"(need {min_pairs}); install {' / '.join(EXTRA_PACKAGES)} or set data.path=FILE",
                        key="data.min_pairs")
    write_jsonl(pool_path, records)
    manifest["file_sha256"] = hashlib.sha256(pool_path.read_bytes()).hexdigest()
    write_json(manifest_path, manifest)
    log.info("stdlib pool: %d pairs in %.1f s (%s)", len(records), manifest["build_s"],
             ", ".join(f"{r['name']}: {r['pairs']}" for r in manifest["roots"]))
    return pool_path
