"""select.py as users run it: the stdlib-shadowing guard, bad input -> exit 2 in one line, no output."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_select(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, str(REPO / "select.py"), *args], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def small_pool(path: Path, n: int = 30) -> Path:
    path.write_text("".join(json.dumps({"id": i, "instruction": f"Write a function number {i}",
                                        "response": f"def f{i}():\n    return {i}\n"}) + "\n"
                            for i in range(n)))
    return path


def test_importing_stdlib_select_from_repo_root_gets_the_real_module() -> None:
    # The repo root first on sys.path (as `python -c`, pytest rootdir, notebooks do): subprocess and
    # selectors import `select`; they must get the standard library's, not our script.
    code = ("import sys; sys.path.insert(0, {root!r}); import subprocess, selectors, select; "
            "print(hasattr(select, 'poll'), subprocess.run(['true']).returncode, select.__name__)")
    out = subprocess.run([sys.executable, "-c", code.format(root=str(REPO))], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "0", "select"]


def test_script_runs_from_another_directory_and_shows_help(tmp_path: Path) -> None:
    out = run_select("--help", cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "sample_num" in out.stdout and "selector" in out.stdout


def test_unknown_selector_is_a_user_error(tmp_path: Path) -> None:
    out = run_select("selector=nope", f"hydra.run.dir={tmp_path}/run", "logger=none", timeout=60)
    assert out.returncode == 2
    assert "nope" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("sample_num, message", [("0", "must be positive"), ("31", "larger than the pool"),
                                                  ("-3", "must be positive")])
def test_sample_num_out_of_range(tmp_path: Path, sample_num: str, message: str) -> None:
    pool = small_pool(tmp_path / "pool.jsonl")
    run_dir = tmp_path / "run"
    out = run_select(f"data.path={pool}", f"sample_num={sample_num}", f"hydra.run.dir={run_dir}",
                     "logger=none", timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "sample_num" in lines[0] and message in lines[0]
    assert not list(run_dir.glob("*.jsonl")) and not (run_dir / "selection.json").exists()


def test_malformed_pool_names_the_line(tmp_path: Path) -> None:
    pool = small_pool(tmp_path / "pool.jsonl", 5)
    pool.write_text(pool.read_text() + '{"id": 99, "instruction": "x"}\n')
    out = run_select(f"data.path={pool}", "sample_num=2", f"hydra.run.dir={tmp_path}/run", "logger=none",
                     timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {pool}:6, key 'response': missing required key"
