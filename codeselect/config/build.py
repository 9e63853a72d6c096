"""Objects from `_target_` entries, with constructor errors reported as the user's, in one line."""
from __future__ import annotations

from typing import Any

from codeselect.errors import UserError


def instantiate(node: Any, key: str, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate(node)`; a UserError raised inside comes out as itself (Hydra wraps it
    in InstantiationException), a bad argument (TypeError) or `_target_` (ImportError) as a UserError
    naming `key`; any other exception is a bug and keeps its traceback."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, UserError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if cause is not None and not isinstance(cause, (TypeError, ImportError)):
            raise cause from None  # a bug inside the constructor: keep its traceback
        detail = str(cause if cause is not None else exc).strip().splitlines()
        raise UserError(f"cannot build it: {detail[-1] if detail else type(exc).__name__}", key=key) from None
