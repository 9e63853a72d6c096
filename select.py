"""Select a subset of an instruction pool: `python select.py selector=ours sample_num=10000`.

This file shares its name with the standard library's `select` module. Python puts the script's
folder first on sys.path, so `import subprocess` (which imports `select`) would find this file.
The guard below runs before any other import: as a script it moves this folder to the end of
sys.path; imported as `select` by mistake, it hands the importer the real standard-library module.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _is_here(entry: str) -> bool:
    return os.path.abspath(entry or os.curdir) == _HERE


if __name__ != "__main__":  # imported as the stdlib `select`: swap in the real one
    import importlib.machinery
    import importlib.util

    _spec = importlib.machinery.PathFinder.find_spec(
        "select", [p for p in sys.path if not _is_here(p)])
    if _spec is None:
        raise ImportError("the standard library's select module was not found")
    _real = importlib.util.module_from_spec(_spec)
    sys.modules[__name__] = _real
    _spec.loader.exec_module(_real)
else:
    sys.path[:] = [p for p in sys.path if not _is_here(p)] + [_HERE]

    from pathlib import Path

    from codeselect.cli import run_hydra

    def _task(cfg, run_dir):
        from codeselect.selection import run_selection

        return run_selection(cfg, run_dir)

    run_hydra(_task, config_name="select", conf_dir=Path(_HERE) / "conf", stage="select")
