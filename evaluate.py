"""Evaluate on HumanEval+/MBPP+: `python evaluate.py benchmark=mbpp samples=FILE` or `model=<ckpt>`."""
import sys
from pathlib import Path

from codeselect.cli import model_argv, run_hydra

_CONF = Path(__file__).resolve().parent / "conf"


def _task(cfg, run_dir):
    from codeselect.evaluation.run import run_evaluation

    return run_evaluation(cfg, run_dir)


if __name__ == "__main__":
    sys.argv[1:] = model_argv(sys.argv[1:], _CONF)
    run_hydra(_task, config_name="evaluate", conf_dir=_CONF, stage="evaluate")
