"""User-facing errors: one readable line, exit code 2, no traceback."""
from __future__ import annotations

from pathlib import Path

EXIT_USER_ERROR = 2


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
        self.file, self.line, self.key, self.reason = file, line, key, message
