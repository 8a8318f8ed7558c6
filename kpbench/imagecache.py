"""Decode every image of a dataset once into one uint8 array on disk, memory-mapped.

Training reads each image many times (once per epoch) and evaluation once per protocol and run;
decoding a JPEG or drawing a built-in creature and resizing it costs milliseconds each time, which
at small widths is a large share of a training step. The cache turns that into a memory copy.

The file is ``<cache_dir>/images/<manifest hash>.npy``, a plain ``.npy`` of shape (L, S, S, 3):
the manifest hash names the exact files, preprocessing (side S, crop) and split, so any change
of data gives a new file. It is built as ``<hash>.partial.npy`` with a ``<hash>.filled.npy``
(L,) bool record, saved atomically after each chunk; an interrupted build resumes from the
chunks recorded there, and the finished array is renamed into place, so a reader never sees a
half-written cache. One process builds at a time (``flock``); the others wait and then read it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from kpbench.boxcache import CacheableDataset, image_progress
from kpbench.errors import file_error
from kpbench.io import atomic_write

CHUNK_SIZE = 256  # images decoded between two progress records


class DecodableDataset(CacheableDataset, Protocol):
    """What the cache needs from :class:`kpbench.data.ImageDataset`."""

    def decode(self, index: int) -> np.ndarray: ...


def decoded_cache_path(dataset: DecodableDataset, cache_dir: Path) -> Path:
    return Path(cache_dir) / "images" / f"{dataset.manifest.hash}.npy"


def open_decoded(path: Path) -> np.ndarray:
    """The cached (L, S, S, 3) uint8 array, memory-mapped read-only."""
    array: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)
    return array


def build_decoded_cache(dataset: DecodableDataset, cache_dir: Path, progress: bool = False,
                        on_chunk: Callable[[int], None] | None = None) -> Path:
    """Path of the finished cache of ``dataset``, decoding what is missing first.

    ``on_chunk(filled)`` is called after each chunk is recorded (tests use it to interrupt a build).
    """
    path = decoded_cache_path(dataset, cache_dir)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process is killed
        if not path.exists():
            _build(dataset, path, progress, on_chunk)
    return path


def _build(dataset: DecodableDataset, path: Path, progress: bool,
           on_chunk: Callable[[int], None] | None) -> None:
    size = int(dataset.preprocess.size)
    shape = (len(dataset), size, size, 3)
    partial = path.with_name(f"{path.stem}.partial.npy")
    filled_path = path.with_name(f"{path.stem}.filled.npy")
    images, filled = _resume(partial, filled_path, shape)
    todo = np.flatnonzero(~filled)
    with image_progress(progress, "decoding images", len(dataset), int(filled.sum())) as advance:
        for start in range(0, len(todo), CHUNK_SIZE):
            chunk = todo[start:start + CHUNK_SIZE]
            for index in chunk.tolist():
                images[index] = dataset.decode(index)
            images.flush()  # pixels on disk before the record says they are there
            filled[chunk] = True
            atomic_write(filled_path, lambda handle: np.save(handle, filled))
            advance(len(chunk))
            if on_chunk is not None:
                on_chunk(int(filled.sum()))
    images.flush()
    del images
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)
    filled_path.unlink(missing_ok=True)


def _resume(partial: Path, filled_path: Path, shape: tuple[int, ...]) -> tuple[np.memmap, np.ndarray]:
    """The partial array and its (L,) filled record: reopened when both match ``shape``, else new."""
    if partial.exists() and filled_path.exists():
        try:
            images = np.lib.format.open_memmap(partial, mode="r+")
            filled = np.load(filled_path, allow_pickle=False)
            if images.shape == shape and images.dtype == np.uint8 and filled.shape == shape[:1]:
                return images, filled.astype(bool)
            del images
        except (OSError, ValueError):
            pass  # a torn header: start again
    filled_path.unlink(missing_ok=True)
    images = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
    _reserve(partial)
    return images, np.zeros(shape[0], dtype=bool)


def _reserve(path: Path) -> None:
    """Allocate the whole (sparse) file now: a memory map that outgrows the disk would kill the
    process (SIGBUS) in mid-build, whereas this fails at once naming the file and its size."""
    size = path.stat().st_size
    try:
        with open(path, "rb+") as handle:
            os.posix_fallocate(handle.fileno(), 0, size)
    except OSError as error:
        if (translated := file_error(error, path, size)) is None:
            return  # a file system that cannot reserve space: build as before
        path.unlink(missing_ok=True)
        raise translated from None
