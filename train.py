"""Fine-tune a causal LM on a selection: `python train.py data.path=<selection.jsonl> model=tiny strategy=single`."""
from pathlib import Path

from codeselect.cli import run_hydra


def _task(cfg, run_dir):
    from codeselect.train.run import run_training

    return run_training(cfg, run_dir)


if __name__ == "__main__":
    run_hydra(_task, config_name="train", conf_dir=Path(__file__).resolve().parent / "conf")
