"""Agreement of two box sources on the same images: best IoU per reference box, and its floor.

For every reference box (for example the authors' CelebA boxes), the best IoU with any candidate
box of the same image (for example kpbench's detector) says whether the candidate found that part.
The floor is the same figure for random boxes with the candidate's sizes, placed uniformly inside
the image (:func:`kpbench.patches.random_boxes`): agreement that position alone does not explain
is the distance above it.

Boxes are int ``(x0, y0, x1, y1)`` in pixels of one square ``size`` x ``size`` frame, x1/y1
exclusive, as :class:`kpbench.boxcache.BoxTable` stores them. A source is one ``(K_i, 4)`` array
per image (an ``(L, K, 4)`` array is read the same way); images may hold different counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kpbench.errors import KpbenchError
from kpbench.patches import box_iou, random_boxes

BoxSource = Sequence[npt.NDArray[np.integer]] | npt.NDArray[np.integer]  # per image (K_i, 4) xyxy
AGREEMENT_IOU = 0.5  # a reference box counts as found at this best IoU or above


@dataclass(frozen=True)
class AgreementSummary:
    """Best IoU per reference box, summarised over all reference boxes of all images."""

    mean: float
    median: float
    share_found: float  # share of reference boxes with best IoU >= AGREEMENT_IOU
    n_boxes: int  # reference boxes
    n_images: int


@dataclass(frozen=True)
class BoxAgreement:
    """A candidate source's agreement with a reference, and random boxes' agreement (the floor)."""

    agreement: AgreementSummary
    floor: AgreementSummary


def _as_images(source: BoxSource, name: str) -> list[npt.NDArray[np.int64]]:
    """A box source -> one (K_i, 4) int64 array per image; a one-line KpbenchError if malformed."""
    images = []
    for index, boxes in enumerate(source):
        array = np.asarray(boxes)
        if array.size == 0:
            images.append(np.zeros((0, 4), np.int64))
            continue
        if array.ndim != 2 or array.shape[1] != 4:
            raise KpbenchError(f"{name} boxes of image {index} have shape {array.shape}; expected (K, 4)")
        if not np.issubdtype(array.dtype, np.integer):
            raise KpbenchError(f"{name} boxes of image {index} are {array.dtype}; expected integer pixels")
        if np.any(array[:, 2] <= array[:, 0]) or np.any(array[:, 3] <= array[:, 1]):
            raise KpbenchError(f"{name} boxes of image {index} have zero or negative size")
        images.append(array.astype(np.int64))
    return images


def best_ious(reference: BoxSource, candidate: BoxSource) -> list[npt.NDArray[np.float64]]:
    """Per image, (K_i,) best IoU of each reference box with the candidate boxes of that image
    (0 where the image has no candidate box)."""
    references, candidates = _as_images(reference, "reference"), _as_images(candidate, "candidate")
    if len(references) != len(candidates):
        raise KpbenchError(f"the box sources cover different images: {len(references)} reference, "
                           f"{len(candidates)} candidate")
    best = []
    for ref_boxes, cand_boxes in zip(references, candidates):
        if len(cand_boxes) == 0:
            best.append(np.zeros(len(ref_boxes), np.float64))
        else:
            best.append(np.array([box_iou(box, cand_boxes).max() for box in ref_boxes], np.float64))
    return best


def summarize(best: Sequence[npt.NDArray[np.float64]]) -> AgreementSummary:
    """Summary of per-image best IoUs (:func:`best_ious`)."""
    flat = np.concatenate([np.asarray(values, np.float64).reshape(-1) for values in best] or [np.zeros(0)])
    if flat.size == 0:
        raise KpbenchError("no reference boxes to compare")
    return AgreementSummary(mean=float(flat.mean()), median=float(np.median(flat)),
                            share_found=float(np.mean(flat >= AGREEMENT_IOU)),
                            n_boxes=int(flat.size), n_images=len(best))


def random_like(candidate: BoxSource, size: int, seed: int = 0) -> list[npt.NDArray[np.int32]]:
    """As many random boxes per image as ``candidate`` has, sizes drawn from the candidate's
    (w, h) pool, placed uniformly inside the ``size`` x ``size`` image (seeded)."""
    candidates = _as_images(candidate, "candidate")
    counts = [len(boxes) for boxes in candidates]
    if sum(counts) == 0:
        raise KpbenchError("the candidate source has no boxes to take sizes from")
    flat = np.concatenate(candidates)
    pool = np.stack([flat[:, 2] - flat[:, 0], flat[:, 3] - flat[:, 1]], axis=1)
    drawn = random_boxes(np.random.default_rng(seed), size, sum(counts), pool)
    return list(np.split(drawn, np.cumsum(counts)[:-1]))


def compare_boxes(reference: BoxSource, candidate: BoxSource, size: int, seed: int = 0) -> BoxAgreement:
    """The candidate's agreement with the reference, and the random floor of matched sizes."""
    return BoxAgreement(agreement=summarize(best_ious(reference, candidate)),
                        floor=summarize(best_ious(reference, random_like(candidate, size, seed))))
