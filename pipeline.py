"""select -> train -> evaluate for each grid point:
`python pipeline.py -m selector=ours,random sample_num=5000,10000 experiment=paper hydra/launcher=submitit_slurm`.

`model=<folder or hub id>` is read as `model=hf model.path=<...>` (any option of conf/model/ as itself)."""
import sys
from pathlib import Path

from codeselect.cli import model_argv, run_hydra

_CONF = Path(__file__).resolve().parent / "conf"


def _task(cfg, run_dir):
    from codeselect.pipeline import run_pipeline

    return run_pipeline(cfg, run_dir)


if __name__ == "__main__":
    sys.argv[1:] = model_argv(sys.argv[1:], _CONF)
    run_hydra(_task, config_name="pipeline", conf_dir=_CONF)
