"""The embedded default pool: size, schema, determinism, caching, provenance, mining rules."""
from __future__ import annotations

import ast
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

import codeselect.stdlib_pool as sp
from codeselect.data import load_pool, pool_hash
from codeselect.errors import UserError


@pytest.fixture(scope="session")
def pool_path(cache_dir: Path) -> Path:
    return sp.build_stdlib_pool(cache_dir / "pools")


@pytest.fixture(scope="session")
def records(pool_path: Path) -> list[dict]:
    return load_pool(pool_path)


def _manifest(pool_path: Path) -> dict:
    return json.loads(pool_path.with_name(pool_path.name.replace(".jsonl", ".manifest.json")).read_text())


def test_pool_has_10k_valid_records_with_sequential_ids(records: list[dict]) -> None:
    assert len(records) >= 10_000
    assert [r["id"] for r in records] == list(range(len(records)))
    for r in records:
        assert set(r) == {"id", "instruction", "response", "source", "module", "qualname"}
        assert all(isinstance(r[k], str) and r[k] for k in ("instruction", "response", "module", "qualname"))
    assert records[0]["source"] == "stdlib"
    assert len({r["response"] for r in records}) == len(records)


def test_instruction_names_the_function_and_response_defines_it(records: list[dict]) -> None:
    for r in records:
        name = r["qualname"].rsplit(".", 1)[-1]
        assert f"{name}(" in r["instruction"], r["id"]
        tree = ast.parse(r["response"])
        assert len(tree.body) == 1 and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef))
        assert tree.body[0].name == name
        assert ast.get_docstring(tree.body[0]) is None  # the docstring lives in the instruction


def test_manifest_records_provenance(pool_path: Path, records: list[dict]) -> None:
    m = _manifest(pool_path)
    assert m["n_records"] == len(records)
    assert m["pool_hash"] == pool_hash(records)
    assert m["roots"][0]["name"] == "stdlib" and m["roots"][0]["pairs"] > 2000
    assert sum(r["pairs"] for r in m["roots"]) == len(records)
    assert sum(m["counts_per_top_level_package"].values()) == len(records)
    assert dict(Counter(r["source"] for r in records)) == m["counts_per_source"]
    assert pool_path.name == "stdlib-py{}{}.jsonl".format(*m["python_version"].split(".")[:2])


def test_two_builds_give_the_same_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sp, "EXTRA_PACKAGES", ())  # stdlib only: the same rules, a quarter of the time
    a = sp.build_stdlib_pool(tmp_path / "a", min_pairs=1000)
    b = sp.build_stdlib_pool(tmp_path / "b", min_pairs=1000)
    assert a.read_bytes() == b.read_bytes()
    assert _manifest(a)["pool_hash"] == _manifest(b)["pool_hash"]
    assert _manifest(a)["roots"] == _manifest(b)["roots"]


@pytest.mark.slow
def test_fresh_full_build_is_identical_to_the_cached_one(pool_path: Path, tmp_path: Path) -> None:
    fresh = sp.build_stdlib_pool(tmp_path)
    assert fresh.read_bytes() == pool_path.read_bytes()
    assert _manifest(fresh)["pool_hash"] == _manifest(pool_path)["pool_hash"]


def test_cache_reused_and_rebuilt_when_sources_change(pool_path: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for f in pool_path.parent.glob(pool_path.stem + ".*"):
        shutil.copy(f, tmp_path / f.name)

    def no_mining(min_pairs: int) -> None:
        raise AssertionError("re-mined")

    monkeypatch.setattr(sp, "mine", no_mining)
    assert sp.build_stdlib_pool(tmp_path) == tmp_path / pool_path.name  # cache hit: no mining
    manifest_file = tmp_path / pool_path.name.replace(".jsonl", ".manifest.json")
    manifest = json.loads(manifest_file.read_text())
    manifest["roots"][0]["fingerprint"] = "0" * 16  # as if a stdlib file had changed
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(AssertionError, match="re-mined"):
        sp.build_stdlib_pool(tmp_path)


def test_too_few_pairs_is_a_user_error_and_writes_nothing(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sp, "EXTRA_PACKAGES", ())
    with pytest.raises(UserError, match=r"only \d+ instruction pairs .* \(need 10000\)") as exc:
        sp.build_stdlib_pool(tmp_path, min_pairs=10_000)
    assert "\n" not in str(exc.value) and "data.min_pairs" in str(exc.value)
    assert list(tmp_path.iterdir()) == []


SAMPLE = '''
def parse_pairs(text: str, sep: str = "=") -> dict:
    """Parse `key=value` lines into a dict.

    Blank lines are ignored.

    Args:
        text: the input.
    """
    out = {}
    for line in text.splitlines():
        if line.strip():
            k, v = line.split(sep, 1)
            out[k] = v
    return out


def _private(x):
    """A private helper that is skipped."""
    y = x + 1
    return y


def stub(self):
    """Subclasses must implement this one."""
    raise NotImplementedError


def undocumented(a, b):
    c = a + b
    return c


class Stack:
    def push(self, item):
        """Push an item onto the top of the stack."""
        self.items.append(item)
        self.size += 1
'''


def test_mining_rules_on_a_small_file(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text(SAMPLE)
    (tmp_path / "latin.py").write_bytes(b'def f():\n    """Caf\xe9 au lait, a fine drink."""\n    return 1\n')
    root = sp.SourceRoot("demo", tmp_path, "demo", "0")
    stats: Counter = Counter()
    got = [rec for rel in sp.iter_source_files(root) for rec in sp.mine_file(root, rel, stats)]
    assert [r["qualname"] for r in got] == ["parse_pairs", "Stack.push"]
    assert got[0]["module"] == "demo.mod" and got[0]["source"] == "demo"
    assert "Parse `key=value` lines into a dict.\n\nBlank lines are ignored." in got[0]["instruction"]
    assert "Args" not in got[0]["instruction"]
    assert "`parse_pairs(text: str, sep: str='=') -> dict`" in got[0]["instruction"]
    assert got[0]["response"].startswith('def parse_pairs(text: str, sep: str = "=") -> dict:\n    out = {}\n')
    assert got[1]["response"] == "def push(self, item):\n    self.items.append(item)\n    self.size += 1\n"
    assert "`Stack`" in got[1]["instruction"]
    assert stats["skipped_non_utf8_files"] == 1 and stats["skipped_trivial"] == 1
    assert stats["skipped_no_docstring"] == 1


def test_describe_stops_at_numpy_sections_and_doctests() -> None:
    doc = "Add two arrays.\n\nBroadcasts its inputs.\n\nParameters\n----------\nx : array\n"
    assert sp.describe(doc) == "Add two arrays.\n\nBroadcasts its inputs."
    assert sp.describe("Return the sum.\n>>> add(1, 2)\n3") == "Return the sum."
    assert len(sp.describe("word " * 1000)) <= sp.MAX_DESC_CHARS + 4
