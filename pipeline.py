"""select -> train -> evaluate for each grid point:
`python pipeline.py -m selector=ours,random sample_num=5000,10000 experiment=paper hydra/launcher=submitit_slurm`."""
from pathlib import Path

from codeselect.cli import run_hydra


def _task(cfg, run_dir):
    from codeselect.pipeline import run_pipeline

    return run_pipeline(cfg, run_dir)


if __name__ == "__main__":
    run_hydra(_task, config_name="pipeline", conf_dir=Path(__file__).resolve().parent / "conf")
