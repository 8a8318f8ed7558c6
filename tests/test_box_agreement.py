"""Box agreement: best IoU per reference box, its summary and the random floor."""

from __future__ import annotations

import numpy as np
import pytest

from kpbench.box_agreement import best_ious, compare_boxes, random_like, summarize
from kpbench.errors import KpbenchError

SIZE = 64


def scattered_boxes(images: int, per_image: int, seed: int) -> np.ndarray:
    """(images, per_image, 4) xyxy boxes of 16-26 px sides, uniformly placed in the image."""
    rng = np.random.default_rng(seed)
    sides = rng.integers(16, 27, size=(images, per_image, 2))
    x0 = rng.integers(0, SIZE - sides[..., 0] + 1)
    y0 = rng.integers(0, SIZE - sides[..., 1] + 1)
    return np.stack([x0, y0, x0 + sides[..., 0], y0 + sides[..., 1]], axis=-1)


def test_hand_computed_best_iou() -> None:
    reference = [np.array([[0, 0, 10, 10], [40, 40, 50, 50]])]
    # Against the first box: half overlap sideways 50 / 150, top half 50 / 100 -> best 0.5.
    # The second reference box touches no candidate -> 0.
    candidate = [np.array([[5, 0, 15, 10], [0, 0, 10, 5]])]
    best = best_ious(reference, candidate)
    np.testing.assert_allclose(best[0], [0.5, 0.0])
    summary = summarize(best)
    assert (summary.mean, summary.median, summary.share_found) == pytest.approx((0.25, 0.25, 0.5))
    assert (summary.n_boxes, summary.n_images) == (2, 1)


def test_identical_sources_agree_fully() -> None:
    boxes = scattered_boxes(50, 3, seed=1)
    result = compare_boxes(boxes, boxes, SIZE)
    assert result.agreement.mean == result.agreement.median == result.agreement.share_found == 1.0
    assert result.agreement.n_boxes == 150 and result.agreement.n_images == 50
    assert result.floor.mean < 0.3


def test_candidates_shuffled_across_images_score_about_the_floor() -> None:
    reference = scattered_boxes(600, 3, seed=2)
    shuffled = np.roll(scattered_boxes(600, 3, seed=2), 1, axis=0)  # each image gets its neighbour's boxes
    result = compare_boxes(reference, shuffled, SIZE, seed=3)
    assert result.agreement.mean == pytest.approx(result.floor.mean, abs=0.02)
    assert result.agreement.share_found == pytest.approx(result.floor.share_found, abs=0.03)


def test_random_floor_keeps_counts_sizes_and_frame_and_is_seeded() -> None:
    none = np.zeros((0, 4), np.int64)
    candidate = [np.array([[0, 0, 20, 16], [8, 8, 30, 30]]), none, np.array([[1, 1, 17, 25]])]
    drawn = random_like(candidate, SIZE, seed=5)
    assert [len(boxes) for boxes in drawn] == [2, 0, 1]
    flat = np.concatenate(drawn)
    assert {(int(w), int(h)) for w, h in zip(flat[:, 2] - flat[:, 0], flat[:, 3] - flat[:, 1])} <= {
        (20, 16), (22, 22), (16, 24)}
    assert flat.min() >= 0 and flat[:, 2:].max() <= SIZE
    assert all(np.array_equal(a, b) for a, b in zip(drawn, random_like(candidate, SIZE, seed=5)))


def test_images_without_candidates_count_as_zero_and_bad_input_is_one_line() -> None:
    reference = [np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10]])]
    candidate = [np.array([[0, 0, 10, 10]]), np.zeros((0, 4), np.int64)]
    assert summarize(best_ious(reference, candidate)).mean == 0.5
    with pytest.raises(KpbenchError, match="different images"):
        best_ious(reference, reference[:1])
    with pytest.raises(KpbenchError, match="expected \\(K, 4\\)"):
        best_ious([np.array([0, 0, 10, 10])], reference[:1])
    with pytest.raises(KpbenchError, match="zero or negative"):
        best_ious([np.array([[5, 0, 5, 10]])], reference[:1])
    with pytest.raises(KpbenchError, match="no boxes"):
        random_like([np.zeros((0, 4), np.int64)], SIZE)
