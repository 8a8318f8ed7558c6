"""Key patches on real photos, relaxation, flip consistency, random patches and the box cache."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from kpbench.boxcache import (
    BoxTable,
    box_cache_path,
    prepare_boxes,
    render_contact_sheet,
    summarize_boxes,
)
from kpbench.data import Preprocess, open_dataset
from kpbench.errors import KpbenchError
from kpbench.io import sha256_file
from kpbench.patches import (
    GRID_RELAX_LEVEL,
    PATCH_PRESETS,
    RELAX_STEPS,
    KeyPatchDetector,
    PatchParams,
    box_iou,
    boxes_to_mask,
    crop_patches,
    flip_boxes,
    random_boxes,
)

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def real_photos(size: int) -> list[np.ndarray]:
    """Eight real photos shipped with scikit-learn and scikit-image, centre-cropped to size x size."""
    photos = list(load_sample_images().images) + [getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS]
    squares = []
    for photo in photos:
        height, width = photo.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = photo[top:top + side, left:left + side]
        squares.append(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA))
    return squares


def check_filters(boxes: np.ndarray, size: int, params: PatchParams, widen: float = 1.0) -> np.ndarray:
    """(N,) bool: which boxes obey the area/aspect/side filters of params (widened by ``widen``)."""
    width = (boxes[:, 2] - boxes[:, 0]).astype(float)
    height = (boxes[:, 3] - boxes[:, 1]).astype(float)
    area = width * height / size**2
    aspect = np.maximum(width / height, height / width)
    return ((area >= params.min_area / widen) & (area <= params.max_area * widen)
            & (aspect <= params.max_aspect * widen))


def max_pairwise_iou(boxes: np.ndarray) -> float:
    pairs = itertools.combinations(range(len(boxes)), 2)
    return max((float(box_iou(boxes[i], boxes[j:j + 1])[0]) for i, j in pairs), default=0.0)


def assert_inside(boxes: np.ndarray, size: int) -> None:
    assert boxes.dtype == np.int32
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= size).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


@pytest.mark.parametrize("size", [64, 128])
def test_detect_on_real_photos_obeys_filters(size: int) -> None:
    params = PatchParams()
    detector = KeyPatchDetector(params)
    for photo in real_photos(size):
        found = detector.detect(photo)
        assert found.boxes.shape == (3, 4) and found.scores.shape == (3,)
        assert_inside(found.boxes, size)
        # Real photos have plenty of part-sized proposals: no relaxation needed.
        assert found.relax_level == 0
        assert check_filters(found.boxes, size, params).all()
        assert max_pairwise_iou(found.boxes) <= params.nms_iou
        assert (np.diff(found.scores) <= 0).all() and (found.scores > 0).all()


def test_max_height_and_side_limits_are_applied() -> None:
    params = PatchParams(min_side=0.25, max_side=0.4, max_height=0.3)
    detector = KeyPatchDetector(params)
    for photo in real_photos(128)[:4]:
        found = detector.detect(photo)
        assert found.relax_level == 0
        sides = np.stack([found.boxes[:, 2] - found.boxes[:, 0], found.boxes[:, 3] - found.boxes[:, 1]], 1)
        assert (sides >= 0.25 * 128).all() and (sides <= 0.4 * 128).all()
        assert (sides[:, 1] <= 0.3 * 128).all()


@pytest.mark.parametrize(("size", "count"), [(64, 3), (64, 5), (128, 3)])
def test_flat_image_falls_back_to_grid_boxes(size: int, count: int) -> None:
    params = PatchParams(n_patches=count)
    found = KeyPatchDetector(params).detect(np.full((size, size, 3), 128, np.uint8))
    assert found.relax_level == GRID_RELAX_LEVEL
    assert found.boxes.shape == (count, 4)
    assert_inside(found.boxes, size)
    assert check_filters(found.boxes, size, params).all()
    assert max_pairwise_iou(found.boxes) == 0.0
    assert (found.scores == 0).all()


def test_relaxation_keeps_strict_boxes_and_fills_the_rest() -> None:
    # One bright square on grey: EdgeBoxes finds boxes around it, but only one of 20-25 % area.
    image = np.full((64, 64, 3), 128, np.uint8)
    cv2.rectangle(image, (20, 20), (40, 40), (250, 250, 250), -1)
    params = PatchParams(min_area=0.2, max_area=0.25, max_aspect=1.2)
    found = KeyPatchDetector(params).detect(image)
    assert found.relax_level == 1
    assert found.boxes.shape == (3, 4)
    strict = check_filters(found.boxes, 64, params)
    assert strict[0] and not strict[1:].any()  # the strict pick comes first and is kept
    assert check_filters(found.boxes, 64, params, widen=RELAX_STEPS[0].widen).all()
    assert max_pairwise_iou(found.boxes) <= params.nms_iou


def test_detect_size_proposes_on_the_resized_image_and_returns_boxes_in_the_given_frame() -> None:
    params = PatchParams(detect_size=128)
    at_128 = KeyPatchDetector(params)
    plain = KeyPatchDetector(PatchParams())
    for photo in real_photos(64)[:4]:
        boxes, scores = at_128._proposals(photo)
        upsampled = cv2.resize(photo, (128, 128), interpolation=cv2.INTER_CUBIC)
        big_boxes, big_scores = plain._proposals(upsampled)
        # The same proposals as on a bicubic 2x image, halved back into the 64 px frame.
        np.testing.assert_array_equal(scores, big_scores)
        halved = np.round(big_boxes / 2).astype(np.int64)
        x0, y0 = np.clip(halved[:, 0], 0, 63), np.clip(halved[:, 1], 0, 63)
        expected = np.stack([x0, y0, np.clip(halved[:, 2], x0 + 1, 64), np.clip(halved[:, 3], y0 + 1, 64)], 1)
        np.testing.assert_array_equal(boxes, expected)
        found = at_128.detect(photo)
        assert_inside(found.boxes, 64)
        assert found.relax_level == 0 and check_filters(found.boxes, 64, params).all()


def test_later_fields_at_their_defaults_keep_earlier_cache_keys() -> None:
    earlier = {"n_patches", "min_area", "max_area", "max_aspect", "min_side", "max_side", "max_height",
               "nms_iou", "edge_model", "edge_blur", "alpha", "beta", "max_candidates", "detector_version"}
    for name in ("default", "celeba-v1", "waterfall"):
        assert set(PATCH_PRESETS[name].cache_key()) == earlier
    tuned = PatchParams(detect_size=128, gamma=3.0).cache_key()
    assert (tuned["detect_size"], tuned["gamma"]) == (128, 3.0) and "kappa" not in tuned


def test_detect_rejects_non_uint8_rgb() -> None:
    detector = KeyPatchDetector(PatchParams())
    with pytest.raises(ValueError):
        detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError):
        detector.detect(np.zeros((64, 64), np.uint8))


@pytest.mark.parametrize("bad", [dict(min_area=0.3, max_area=0.2), dict(n_patches=0), dict(max_aspect=0.5),
                                 dict(nms_iou=0.0), dict(max_height=1.5), dict(min_side=0.5, max_side=0.4),
                                 dict(detect_size=8), dict(gamma=0.0), dict(kappa=-1.0),
                                 dict(edge_min_mag=-0.1)])
def test_bad_params_are_user_errors(bad: dict) -> None:
    with pytest.raises(KpbenchError):
        PatchParams(**bad)


def test_flip_keeps_image_boxes_mask_and_patches_consistent() -> None:
    size = 64
    photo = real_photos(size)[2]
    boxes = KeyPatchDetector(PatchParams()).detect(photo).boxes
    image = torch.from_numpy(photo).permute(2, 0, 1).float() / 127.5 - 1.0  # (3, S, S) in [-1, 1]
    flipped_boxes = flip_boxes(boxes, size)

    assert torch.equal(crop_patches(image.flip(-1), flipped_boxes), crop_patches(image, boxes).flip(-1))
    assert torch.equal(boxes_to_mask(flipped_boxes, size), boxes_to_mask(boxes, size).flip(-1))
    np.testing.assert_array_equal(flip_boxes(flipped_boxes, size), boxes)
    assert torch.equal(flip_boxes(torch.from_numpy(boxes), size), torch.from_numpy(flipped_boxes))


def test_crop_patches_and_mask_values() -> None:
    size = 64
    image = torch.from_numpy(real_photos(size)[0]).permute(2, 0, 1).float() / 127.5 - 1.0
    boxes = np.array([[0, 0, size, size], [10, 20, 30, 28], [40, 40, 60, 60]], np.int32)
    patches = crop_patches(image, boxes)
    assert patches.shape == (3, 3, size, size)
    torch.testing.assert_close(patches[0], image)  # the whole image resized to itself
    # A box resized to S x S keeps the box's mean colour (bilinear upsampling).
    torch.testing.assert_close(patches[1].mean(dim=(1, 2)), image[:, 20:28, 10:30].mean(dim=(1, 2)),
                               atol=0.03, rtol=0)
    mask = boxes_to_mask(boxes[1:], size)
    assert mask.shape == (1, size, size) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert mask.sum() == 20 * 8 + 20 * 20  # disjoint boxes: the union is the sum of areas
    assert mask[0, 20:28, 10:30].all() and mask[0, 40:60, 40:60].all()


def test_random_boxes_follow_the_reference_sizes() -> None:
    reference = np.array([[20, 25], [30, 18], [16, 16]])
    boxes = random_boxes(np.random.default_rng(0), 64, 3000, reference)
    assert boxes.shape == (3000, 4)
    assert_inside(boxes, 64)
    sizes = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
    matches = (sizes[:, None, :] == reference[None]).all(-1)  # (3000, 3)
    assert matches.any(1).all()
    assert np.allclose(matches.mean(0), 1 / 3, atol=0.05)  # every size drawn, about equally often
    # Positions spread over the whole valid range.
    assert boxes[:, 0].min() == 0 and boxes[:, 2].max() == 64
    np.testing.assert_array_equal(random_boxes(np.random.default_rng(0), 64, 3000, reference), boxes)


class PhotoDataset:
    """A minimal stand-in for kpbench.data.ImageDataset over in-memory photos."""

    def __init__(self, images: list[np.ndarray], name: str) -> None:
        self.images = images
        self.manifest = SimpleNamespace(hash=f"photos-{name}-{len(images)}")
        self.preprocess = SimpleNamespace(size=images[0].shape[0])
        self.loaded: list[int] = []
        self.fail_at: int | None = None

    def __len__(self) -> int:
        return len(self.images)

    def load_image(self, index: int) -> np.ndarray:
        if index == self.fail_at:
            raise RuntimeError("interrupted")
        self.loaded.append(index)
        return self.images[index]


def photo_dataset(size: int = 64) -> PhotoDataset:
    photos = real_photos(size)
    return PhotoDataset(photos + [photo[:, ::-1].copy() for photo in photos], "mixed")


def test_prepare_boxes_on_a_folder_matches_detector_and_hits_cache(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for index, photo in enumerate(real_photos(96)[:6]):
        Image.fromarray(photo).save(folder / f"{index}.png")
    dataset = open_dataset(folder, Preprocess(size=64))
    params = PatchParams()

    table = prepare_boxes(dataset, params, tmp_path / "cache", workers=2, progress=False, chunk_size=2)
    detector = KeyPatchDetector(params)
    for index in range(len(dataset)):
        expected = detector.detect(dataset.load_image(index))
        np.testing.assert_array_equal(table.boxes[index], expected.boxes)
        np.testing.assert_array_equal(table.scores[index], expected.scores)
        assert table.relax_level[index] == expected.relax_level
    path = box_cache_path(dataset, params, tmp_path / "cache")
    assert path.exists() and path.name.startswith(dataset.manifest.hash)
    assert not path.with_suffix(".parts").exists()
    assert table.image_size == 64 and table.reference_wh().shape == (len(dataset) * 3, 2)

    # Second call: served from the cache, no image is loaded.
    def no_loading(index: int) -> np.ndarray:
        raise AssertionError(f"image {index} loaded although the boxes are cached")

    cached_only = SimpleNamespace(manifest=dataset.manifest, preprocess=dataset.preprocess,
                                  load_image=no_loading)
    again = prepare_boxes(cached_only, params, tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(again.boxes, table.boxes)
    np.testing.assert_array_equal(again.scores, table.scores)
    np.testing.assert_array_equal(again.relax_level, table.relax_level)


def test_other_counts_detected_in_the_same_pass_equal_their_own_detection(tmp_path: Path) -> None:
    """``also_counts`` reuses one set of proposals per image: each N's table equals detecting with
    that N alone (including images whose filters had to be relaxed), and no image is read twice."""
    dataset = photo_dataset()
    params = PatchParams(n_patches=2, min_area=0.2, max_area=0.25, nms_iou=0.2)  # strict: N=5 relaxes
    table = prepare_boxes(dataset, params, tmp_path, workers=1, progress=False, also_counts=[1, 2, 5])
    assert sorted(dataset.loaded) == list(range(len(dataset)))
    for count in (1, 2, 5):
        dataset.loaded.clear()
        other = dataclasses.replace(params, n_patches=count)
        cached = prepare_boxes(dataset, other, tmp_path, workers=1, progress=False)
        assert dataset.loaded == []  # made in the first pass
        detector = KeyPatchDetector(other)
        for index in range(len(dataset)):
            expected = detector.detect(dataset.images[index])
            np.testing.assert_array_equal(cached.boxes[index], expected.boxes)
            assert cached.relax_level[index] == expected.relax_level
    assert (cached.relax_level > 0).any()  # the N=5 table needed relaxing somewhere
    np.testing.assert_array_equal(table.boxes, prepare_boxes(dataset, params, tmp_path, progress=False).boxes)


def test_cache_is_invalidated_by_any_parameter(tmp_path: Path) -> None:
    dataset = photo_dataset()
    params = PatchParams()
    prepare_boxes(dataset, params, tmp_path, workers=1, progress=False)
    assert len(dataset.loaded) == len(dataset)
    for changed in (dict(nms_iou=0.4), dict(max_aspect=1.5), dict(edge_blur=1.5), dict(n_patches=2),
                    dict(detect_size=128), dict(kappa=1.0)):
        dataset.loaded.clear()
        other = dataclasses.replace(params, **changed)
        assert box_cache_path(dataset, other, tmp_path) != box_cache_path(dataset, params, tmp_path)
        table = prepare_boxes(dataset, other, tmp_path, workers=1, progress=False)
        assert sorted(dataset.loaded) == list(range(len(dataset)))
        assert table.boxes.shape == (len(dataset), other.n_patches, 4)
    dataset.loaded.clear()
    prepare_boxes(dataset, params, tmp_path, workers=1, progress=False)
    assert dataset.loaded == []


def test_interrupted_prepare_resumes_from_finished_chunks(tmp_path: Path) -> None:
    dataset = photo_dataset()
    params = PatchParams()
    dataset.fail_at = 7
    with pytest.raises(RuntimeError, match="interrupted"):
        prepare_boxes(dataset, params, tmp_path / "cache", workers=1, progress=False, chunk_size=3)
    parts = box_cache_path(dataset, params, tmp_path / "cache").with_suffix(".parts")
    assert sorted(path.name for path in parts.iterdir()) == ["000000000-000000003.npz",
                                                             "000000003-000000006.npz"]

    dataset.fail_at = None
    dataset.loaded.clear()
    resumed = prepare_boxes(dataset, params, tmp_path / "cache", workers=1, progress=False, chunk_size=3)
    assert sorted(dataset.loaded) == list(range(6, len(dataset)))  # finished chunks not redone
    assert not parts.exists()

    fresh = prepare_boxes(photo_dataset(), params, tmp_path / "fresh", workers=1, progress=False)
    np.testing.assert_array_equal(resumed.boxes, fresh.boxes)
    np.testing.assert_array_equal(resumed.scores, fresh.scores)


def test_summary_and_contact_sheet(tmp_path: Path) -> None:
    dataset = photo_dataset()
    table = prepare_boxes(dataset, PatchParams(), tmp_path, workers=1, progress=False)
    table.relax_level[1] = GRID_RELAX_LEVEL  # shown as relaxed in the summary
    summary = summarize_boxes(table)
    assert summary.images == len(dataset) and summary.relaxed == {GRID_RELAX_LEVEL: 1}
    assert 5.0 <= summary.area_percent[0] <= summary.area_percent[2] <= 25.0
    assert any("relaxed filters: 1 images" in line for line in summary.lines())

    out = render_contact_sheet(dataset, table, tmp_path / "sheet.png", count=6, columns=3)
    sheet = cv2.imread(str(out))
    tile = 64 * 3  # 64 px images are enlarged 3x
    assert sheet.shape == (2 * (tile + 18 + 6) + 6, 3 * (tile + 6) + 6, 3)
    with pytest.raises(KpbenchError):
        render_contact_sheet(dataset, BoxTable(table.boxes[:3], table.scores[:3], table.relax_level[:3], 64),
                             tmp_path / "bad.png")


# A structured-forest model with valid options and a one-leaf forest that predicts no edges.
TRIVIAL_FOREST = """%YAML:1.0
options:
   stride: 2
   shrinkNumber: 2
   patchSize: 32
   patchInnerSize: 16
   numberOfGradientOrientations: 4
   gradientSmoothingRadius: 0
   regFeatureSmoothingRadius: 2
   ssFeatureSmoothingRadius: 8
   gradientNormalizationRadius: 4
   selfsimilarityGridSize: 5
   numberOfTrees: 1
   numberOfTreesToEvaluate: 1
childs:
   - [ 0 ]
featureIds:
   - [ 0 ]
thresholds:
   - [ 0. ]
edgeBoundaries:
   - [ 0, 0 ]
edgeBins:
   - [ 0 ]
"""


@pytest.mark.parametrize("content", [None, "not a model\n", "%YAML:1.0\n---\nfoo: 1\n",
                                     TRIVIAL_FOREST.replace("numberOfTrees: 1", "numberOfTrees: 0")])
def test_broken_edge_model_is_a_user_error(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "model.yml"
    if content is not None:
        path.write_text(content)
    params = PatchParams(edge_model=str(path))
    with pytest.raises(KpbenchError, match="edge model"):
        KeyPatchDetector(params)
    if content is None:
        with pytest.raises(KpbenchError, match="not found"):
            params.cache_key()


def test_edge_model_runs_and_is_keyed_by_content(tmp_path: Path) -> None:
    model = tmp_path / "a" / "model.yml"
    model.parent.mkdir()
    model.write_text(TRIVIAL_FOREST)
    params = PatchParams(edge_model=str(model))
    found = KeyPatchDetector(params).detect(real_photos(64)[0])
    # This forest sees no edges, so the detector must fall back, not fail.
    assert found.boxes.shape == (3, 4) and found.relax_level == GRID_RELAX_LEVEL

    key = params.cache_key()
    assert key["edge_model"] == sha256_file(model)
    copy = tmp_path / "b" / "renamed.yml"
    copy.parent.mkdir()
    shutil.copy(model, copy)
    assert PatchParams(edge_model=str(copy)).cache_key() == key
    assert PatchParams().cache_key() != key
