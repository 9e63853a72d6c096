"""Hydra finds sweepers only inside the `hydra_plugins` namespace: this registers ours
(the logic lives in codeselect/config/sweeper.py)."""
from codeselect.config.sweeper import Sweeper


class CodeselectSweeper(Sweeper):
    """See codeselect.config.sweeper.Sweeper."""
