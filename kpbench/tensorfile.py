"""Tensors in the safetensors format (the ``safetensors`` library), read and written without
unpickling anything; errors as one-line :class:`KpbenchError`.

    write_tensors(path, {"weight": tensor}, metadata={"format": "pt"})
    tensors, metadata = read_tensors(path)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
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
        tensors = load_file(path)
        with safe_open(path, framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
    except OSError as error:
        raise KpbenchError(f"cannot read {path}: {error.strerror or error}") from None
    except (SafetensorError, ValueError, TypeError, UnicodeDecodeError) as error:
        raise KpbenchError(f"{path} is not a safetensors file ({error})") from None
    return tensors, metadata
