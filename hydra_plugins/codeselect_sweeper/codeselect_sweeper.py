"""Hydra finds sweepers only inside the `hydra_plugins` namespace package: this registers ours (the
logic lives in codeselect/config/sweeper.py). It sits at the repo root beside conf/; the entry
points put that folder on sys.path (codeselect.cli.run_hydra)."""
from codeselect.config.sweeper import Sweeper


class CodeselectSweeper(Sweeper):
    """See codeselect.config.sweeper.Sweeper."""
