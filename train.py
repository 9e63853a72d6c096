"""Fine-tune a causal LM on a selection: `python train.py data.path=<selection.jsonl> model=tiny strategy=single`.

`model=<folder or hub id>` is read as `model=hf model.path=<...>` (any option of conf/model/ as itself)."""
import sys
from pathlib import Path

from codeselect.cli import model_argv, run_hydra

_CONF = Path(__file__).resolve().parent / "conf"


def _task(cfg, run_dir):
    from codeselect.train.run import run_training

    return run_training(cfg, run_dir)


if __name__ == "__main__":
    sys.argv[1:] = model_argv(sys.argv[1:], _CONF)
    run_hydra(_task, config_name="train", conf_dir=_CONF, stage="train")
