"""User-facing errors: one readable line, exit code 2, no traceback."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

EXIT_USER_ERROR = 2
F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """Bad input from the user (file, field, value). Reported as one line, exit code 2."""

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        where = []
        if file is not None:
            where.append(str(file) + (f":{line}" if line is not None else ""))
        if key is not None:
            where.append(f"key '{key}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.file, self.line, self.key = file, line, key


def exit_on_user_error(fn: F) -> F:
    """Wrap an entry point so a UserError prints `error: ...` on stderr and exits with code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]
