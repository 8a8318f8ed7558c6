"""User-facing errors.

Every failure a user can cause (bad input, missing file, unknown name) raises
:class:`KpbenchError` with a one-line message; the CLI prints it and exits non-zero
without a traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class KpbenchError(Exception):
    """An error whose message is shown to the user as one line, with exit code 2."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        # Collapse to one line so the CLI contract ("a clear one-line error") holds.
        super().__init__(" ".join(str(message).split()))
