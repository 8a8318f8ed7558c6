"""Tensors in the safetensors format, read and written without unpickling anything.

The format (https://huggingface.co/docs/safetensors): an unsigned little-endian 64-bit header
length H, then H bytes of JSON, ``{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin,
end]}, "__metadata__": {str: str}}`` (padded with spaces to a multiple of 8 bytes), then the
tensors' bytes, little-endian, row-major, back to back; offsets count from the end of the header.
It is simple enough to implement here in full, so exported models need no extra package, and
files written here are read by the ``safetensors`` library and the other way round
(tests/test_generate.py checks it when the library is installed).

    write_tensors(path, {"weight": tensor}, metadata={"format": "pt"})
    tensors, metadata = read_tensors(path)
"""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from kpbench.errors import KpbenchError
from kpbench.io import atomic_write

# The format's dtype names, and ours.
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPES.items()}
METADATA_KEY = "__metadata__"
MAX_HEADER_BYTES = 100_000_000  # the library's own limit: a larger header is not a tensor file


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    """A tensor's values as bytes, row-major, in the machine's (little-endian) byte order."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)  # 0-d tensors (counters) too
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def write_tensors(path: Path | str, tensors: Mapping[str, torch.Tensor],
                  metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` (names sorted, so the same tensors give the same bytes) and string
    ``metadata`` to ``path`` atomically."""
    if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for is little-endian
        raise KpbenchError("writing safetensors needs a little-endian machine")
    header: dict[str, object] = {}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name]
        if tensor.dtype not in DTYPE_NAMES:
            raise KpbenchError(f"tensor {name!r} has dtype {tensor.dtype}, which safetensors cannot hold")
        data = _raw_bytes(tensor)
        header[name] = {"dtype": DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata:
        header[METADATA_KEY] = {str(key): str(value) for key, value in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)  # the tensors start 8-byte aligned, as the library writes
    blob = struct.pack("<Q", len(text)) + text + b"".join(chunks)
    return atomic_write(path, lambda handle: handle.write(blob))


def read_tensors(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(name -> CPU tensor, metadata) of a safetensors file; a one-line error for anything that
    is not one (short, a bad header, offsets that leave gaps or run past the end)."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as error:
        raise KpbenchError(f"cannot read {path}: {error.strerror or error}") from None

    def bad(why: str) -> KpbenchError:
        return KpbenchError(f"{path} is not a safetensors file ({why})")

    if len(blob) < 8:
        raise bad("shorter than its header length")
    (header_size,) = struct.unpack("<Q", blob[:8])
    if header_size > min(MAX_HEADER_BYTES, len(blob) - 8):
        raise bad(f"header of {header_size} bytes in a file of {len(blob)}")
    try:
        header = json.loads(blob[8:8 + header_size].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise bad(f"header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    metadata = header.pop(METADATA_KEY, None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("metadata must map strings to strings")
    data = blob[8 + header_size:]
    tensors: dict[str, torch.Tensor] = {}
    spans = []
    for name, entry in header.items():
        try:
            dtype = DTYPES[entry["dtype"]]
            shape = [int(side) for side in entry["shape"]]
            begin, end = (int(value) for value in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise bad(f"entry {name!r} lacks a known dtype, a shape or two data offsets") from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= len(data) \
                or end - begin != math.prod(shape) * itemsize:
            raise bad(f"entry {name!r}: offsets {begin}..{end} do not hold shape {shape} of {entry['dtype']}")
        spans.append((begin, end))
        raw = bytearray(data[begin:end])  # a writable copy: the tensor owns its memory
        flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        tensors[name] = flat.view(dtype).reshape(shape)
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise bad("tensor data overlaps or leaves gaps")
        position = end
    if position != len(data):
        raise bad("bytes after the last tensor")
    return tensors, dict(metadata)
