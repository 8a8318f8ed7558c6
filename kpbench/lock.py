"""One process at a time per run: an advisory ``flock`` on ``runs/.locks/<run>.lock``.

Training and evaluation hold a run's lock while they write into it; a second process asking for
it gets a one-line error naming the holder (pid, host, command, since when). The kernel drops a
``flock`` when its process dies, however it dies, so the lock of a killed process is free at once:
a stale lock file is simply taken over (its old holder text is overwritten). The lock file lives
outside the run directory so that ``--restart``, which deletes the run, cannot delete it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from kpbench.errors import KpbenchError

LOCKS_DIRNAME = ".locks"
QUERY_RETRIES = 5


class RunLocked(KpbenchError):
    """Another live process holds the run's lock."""


def lock_path(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir.parent / LOCKS_DIRNAME / f"{run_dir.name}.lock"


class RunLock:
    """``with RunLock(run_dir, "train"):`` holds the run's lock for the block (re-entrant within a
    process is not supported: nest nothing)."""

    def __init__(self, run_dir: Path, purpose: str) -> None:
        self.run_dir = Path(run_dir)
        self.purpose = purpose
        self.path = lock_path(self.run_dir)
        self._handle: IO[str] | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until __exit__
        # A few short retries: current_holder() takes a shared lock for an instant to look.
        for attempt in range(QUERY_RETRIES + 1):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt < QUERY_RETRIES:
                    time.sleep(0.05)
        else:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise RunLocked(f"run {self.run_dir.name} is in use by {holder}; wait for it to finish "
                            "or stop that process") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                                 "command": " ".join(sys.argv[:4]), "since": time.time()}))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.seek(0)
            self._handle.truncate()  # an unlocked file holds no holder text
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def _describe(text: str) -> str:
    try:
        holder = json.loads(text)
    except ValueError:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return (f"{holder.get('purpose', 'a')} process {holder.get('pid')} on {holder.get('host')} "
            f"since {since} ({holder.get('command', '')})")


def current_holder(run_dir: Path) -> str | None:
    """Who holds the run's lock right now (as in the refusal message), or None when it is free.
    Asks the kernel with a non-blocking shared lock that is released at once."""
    path = lock_path(run_dir)
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe(handle.read())
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None
