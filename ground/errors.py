"""The one error type a person can act on.

Every package raises :class:`UserError` for bad input (a missing file, a wrong field, an engine built for
another GPU). The CLI prints its message as a single line and exits non-zero; no traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: the message says what was wrong, where, and what to do."""

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
