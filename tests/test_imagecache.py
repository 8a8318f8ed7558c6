"""The decoded-image cache and batched patch cutting: same pixels as the slow path, rebuilt when
the data changes, resumable after an interrupted build."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from kpbench import imagecache
from kpbench.data import Preprocess, open_dataset
from kpbench.dataspec import DataSpec
from kpbench.errors import KpbenchError
from kpbench.imagecache import build_decoded_cache, decoded_cache_path, open_decoded
from kpbench.patches import cut_patches
from kpbench.paths import WorkDir
from kpbench.samples import expand_batch, make_sample_dataset, sample_batches


def test_cache_equals_direct_decoding_bit_for_bit(photo_folder: Path, tmp_path: Path) -> None:
    for source in (photo_folder, "builtin:12"):
        dataset = open_dataset(source, Preprocess(size=64))
        path = build_decoded_cache(dataset, tmp_path / "cache")
        cached = open_decoded(path)
        assert cached.shape == (len(dataset), 64, 64, 3) and cached.dtype == np.uint8
        direct = np.stack([dataset.decode(index) for index in range(len(dataset))])
        np.testing.assert_array_equal(cached, direct)
        dataset.attach_decoded(path)
        np.testing.assert_array_equal(dataset.load_image(3), direct[3])
        np.testing.assert_array_equal(dataset.load_images([4, 1]), direct[[4, 1]])


def test_a_cache_that_does_not_fit_fails_at_once_naming_its_size(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full_disk)
    dataset = open_dataset("builtin:12", Preprocess(size=64))
    needed = len(dataset) * 64 * 64 * 3 / 1e6  # the pixels alone, MB
    with pytest.raises(KpbenchError, match=rf"cannot write .*\.partial\.npy: no space left on device "
                       rf"\(needs {needed:.1f} MB"):
        build_decoded_cache(dataset, tmp_path / "cache")
    assert list((tmp_path / "cache" / "images").glob("*.npy")) == []  # nothing half-made left


def test_cache_is_rebuilt_when_the_manifest_changes(photo_folder: Path, tmp_path: Path,
                                                   photos: dict[str, np.ndarray]) -> None:
    cache = tmp_path / "cache"
    before = open_dataset(photo_folder, Preprocess(size=64))
    first = build_decoded_cache(before, cache)
    Image.fromarray(photos["coffee"][::2, ::2]).save(photo_folder / "odd" / "extra.png")
    after = open_dataset(photo_folder, Preprocess(size=64))
    second = build_decoded_cache(after, cache)
    assert second != first and first.exists()  # another manifest, another file
    assert open_decoded(second).shape[0] == len(before) + 1
    expected = np.stack([after.decode(index) for index in range(len(after))])
    np.testing.assert_array_equal(open_decoded(second), expected)
    # A different side is different data too.
    assert build_decoded_cache(open_dataset(photo_folder, Preprocess(size=128)), cache) not in (first, second)


class _Interrupted(Exception):
    pass


def test_interrupted_build_resumes_and_decodes_only_what_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imagecache, "CHUNK_SIZE", 4)
    dataset = open_dataset("builtin:10", Preprocess(size=64))
    cache = tmp_path / "cache"

    def stop_after_first_chunk(filled: int) -> None:
        raise _Interrupted

    with pytest.raises(_Interrupted):
        build_decoded_cache(dataset, cache, on_chunk=stop_after_first_chunk)
    assert not decoded_cache_path(dataset, cache).exists()  # no reader sees a half-built cache

    decoded: list[int] = []
    real_decode = type(dataset).decode

    def counting_decode(self, index: int) -> np.ndarray:
        decoded.append(index)
        return real_decode(self, index)

    monkeypatch.setattr(type(dataset), "decode", counting_decode)
    path = build_decoded_cache(dataset, cache)
    assert sorted(decoded) == list(range(4, 10))  # the first chunk was kept
    monkeypatch.setattr(type(dataset), "decode", real_decode)
    np.testing.assert_array_equal(open_decoded(path), np.stack([dataset.decode(i) for i in range(10)]))
    assert sorted(p.name for p in path.parent.iterdir() if p.suffix == ".npy") == [path.name]


def test_batched_patches_equal_per_box_resize() -> None:
    """Batched cutting against the per-sample crop-and-resize it replaced (F.interpolate of each
    cropped box): equal within float rounding, for boxes from 1 px to the whole image."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 64, 64, generator=generator) * 2 - 1
    rng = np.random.default_rng(0)
    boxes = []
    for _ in range(6):
        rows = []
        for width, height in ((1, 1), (64, 64), *rng.integers(2, 64, size=(2, 2)).tolist()):
            x0, y0 = int(rng.integers(0, 65 - width)), int(rng.integers(0, 65 - height))
            rows.append([x0, y0, x0 + width, y0 + height])
        boxes.append(rows)
    boxes_tensor = torch.tensor(boxes)
    batched = cut_patches(images, boxes_tensor)  # (6, 4, 3, 64, 64)
    reference = torch.stack([
        torch.cat([F.interpolate(images[b:b + 1, :, y0:y1, x0:x1], size=(64, 64), mode="bilinear",
                                 align_corners=False, antialias=True)
                   for x0, y0, x1, y1 in boxes[b]])
        for b in range(6)])
    assert batched.shape == (6, 4, 3, 64, 64)
    assert (batched - reference).abs().max() < 1e-5
    torch.testing.assert_close(batched[:, 1], images)  # the whole-image box is the image


def test_samples_read_the_cache_and_match_item_by_item(tmp_path: Path) -> None:
    spec = DataSpec(source="builtin:24", size=64)
    samples = make_sample_dataset(spec, "train", seed=3, workdir=WorkDir(tmp_path))
    assert samples.dataset.decoded_path is not None  # attached when the boxes were loaded
    samples.set_epoch(2)
    positions = np.arange(len(samples))
    batches = list(sample_batches(samples, positions, 5, torch.device("cpu")))
    batched = {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}
    for position in (0, 7, len(samples) - 1):
        item = samples[position]
        for key in ("image", "patches", "mask", "boxes", "label", "index"):
            assert torch.equal(item[key], batched[key][position]), key
    # The DataLoader path (whole batches through __getitems__) gives the same batches.
    loader = torch.utils.data.DataLoader(samples, batch_size=5, shuffle=False,
                                         collate_fn=lambda batch: batch)
    first = expand_batch(next(iter(loader)), torch.device("cpu"))
    assert torch.equal(first["patches"], batches[0]["patches"])
