"""User-facing errors.

Every failure a user can cause (bad input, missing file, unknown name) raises
:class:`KpbenchError` with a one-line message; the CLI prints it and exits non-zero
without a traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path


class KpbenchError(Exception):
    """An error whose message is shown to the user as one line, with exit code 2."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        # Collapse to one line so the CLI contract ("a clear one-line error") holds.
        super().__init__(" ".join(str(message).split()))


# OS errors the user fixes outside kpbench (free space, change permissions), so they are reported
# as one line naming the file rather than as a traceback.
USER_FIXABLE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"


def file_error(error: OSError, path: Path | str | None = None, needed: int | None = None,
               action: str = "write") -> KpbenchError | None:
    """The one-line error for an OS error the user can fix (full disk, no permission, read-only
    file system) on ``path`` (else ``error.filename``), or None for any other error. ``needed``:
    the bytes a write needed, when known; a full disk's message then gives them and the space
    left. ``action`` names what failed ("write", or "open" where it may have been a read)."""
    if error.errno not in USER_FIXABLE_ERRNOS:
        return None
    target = Path(path) if path is not None else (Path(error.filename) if error.filename else None)
    reason = (error.strerror or os.strerror(error.errno or 0)).lower()  # e.g. "no space left on device"
    where = f"cannot {action} {target}" if target is not None else f"cannot {action} a file"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        space = [f"needs {_megabytes(needed)}"] if needed is not None else []
        if target is not None:
            with contextlib.suppress(OSError):
                space.append(f"{_megabytes(shutil.disk_usage(_existing_parent(target)).free)} free")
        detail = f" ({', '.join(space)})" if space else ""
        return KpbenchError(f"{where}: {reason}{detail}; free some space and run the command again")
    return KpbenchError(f"{where}: {reason}; check the permissions of its folder")


def _existing_parent(path: Path) -> Path:
    """The nearest existing folder holding ``path`` (whose disk is the one to measure)."""
    for folder in (path, *path.parents):
        if folder.is_dir():
            return folder
    return Path.cwd()
