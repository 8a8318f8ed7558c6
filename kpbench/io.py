"""Atomic file writes and content hashes: one place for every file kpbench saves.

A file is written to a temporary sibling, flushed, fsynced, then renamed over the target, so a
killed process leaves either the old file or the new one, never a torn one. A full disk or a
folder without write permission is reported as one line naming the file (``errors.file_error``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from kpbench.errors import file_error


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], object], size: int | None = None) -> Path:
    """Call ``write(fileobj)`` on a temp file next to ``path`` and rename it into place.

    A full disk or a folder without write permission raises :class:`KpbenchError` naming
    ``path`` (and ``size``, the bytes to be written, when the caller knows them); the old file,
    if any, is kept."""
    path = Path(path)
    try:
        _replace_atomically(path, write)
    except OSError as error:
        raise file_error(error, path, size) or error from None
    return path


def _replace_atomically(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp_name, 0o666 & ~_UMASK)  # mkstemp makes 0600; saved files follow the umask
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        # Ctrl-C or an error mid-write: drop the partial temp file, keep the old target.
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data), size=len(data))


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(path: Path | str, obj: Any) -> Path:
    """``torch.save`` through a temp file. ``obj`` must hold only tensors and plain containers
    so that it loads back with ``torch.load(weights_only=True)``."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-serialisable object, independent of dict order (for cache keys)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return sha256_bytes(text.encode("utf-8"))[:length]
