"""Checks shared by the command-line tests."""

from __future__ import annotations

from typing import Any


def assert_one_line_error(result: Any, *fragments: str) -> None:
    """A CliRunner result is a user error: exit 2, one ``error:`` line on stderr holding every
    fragment, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = result.stderr.strip()
    assert message.startswith("error:") and "\n" not in message, message
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, message
