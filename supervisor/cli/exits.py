"""How `posguard` ends: exit codes, and the one-line error a user mistake gets (never a traceback)."""

from __future__ import annotations

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """Reported as one line on stderr; the exit code travels with it."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code
