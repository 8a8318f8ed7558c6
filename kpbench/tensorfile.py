"""Tensors in the safetensors format (the ``safetensors`` library), read and written without
unpickling anything; errors as one-line :class:`KpbenchError`.

    write_tensors(path, {"weight": tensor}, metadata={"format": "pt"})
    tensors, metadata = read_tensors(path)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from kpbench.errors import KpbenchError
from kpbench.io import atomic_write

__all__ = ["read_tensors", "write_tensors"]


def write_tensors(path: Path | str, tensors: Mapping[str, torch.Tensor],
                  metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` and string ``metadata`` to ``path`` atomically; the same tensors give the
    same bytes. Tensors are stored contiguous, on the CPU (views and strided tensors included)."""
    plain = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in tensors.items()}
    try:
        blob = save_safetensors(plain, metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    except (SafetensorError, ValueError, TypeError) as error:
        raise KpbenchError(f"cannot write {path} as safetensors: {error}") from None
    return atomic_write(Path(path), lambda handle: handle.write(blob))


def read_tensors(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(name -> CPU tensor, metadata) of a safetensors file; a one-line error for anything that
    is not one."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as error:
        raise KpbenchError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        tensors = load_safetensors(blob)
        metadata = _metadata(blob)
    except (SafetensorError, ValueError, TypeError, UnicodeDecodeError) as error:
        raise KpbenchError(f"{path} is not a safetensors file ({error})") from None
    return tensors, metadata


def _metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a file the library has already accepted (its header is valid)."""
    import json
    import struct

    (size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + size].decode("utf-8"))
    return dict(header.get("__metadata__") or {})
