"""Agreement of kpbench's key patches with the authors' CelebA boxes, and detection time per image.

For each patch preset named, on the same images of one split of CelebA-6k, it detects the key
boxes and prints their agreement with the authors' published boxes (best IoU of each authors'
box with kpbench's boxes of the same image: mean, median, share >= 0.5), the same figures for
random boxes of kpbench's sizes (the floor, :mod:`kpbench.box_agreement`), and the detector's
time per image. The presets are timed side by side: each image goes through every preset before
the next image, so load from other processes hits them alike. ``--detail`` adds where the
disagreement is: best IoU per authors' box slot and per authors' box size, and the centre offset
of the best-matching kpbench box.

    python benchmarks/boxes.py ../shared/data/celeba-6k                       # celeba, test split
    python benchmarks/boxes.py ../shared/data/celeba-6k --presets celeba-v1 celeba-v2 --detail

DIR holds ``images/``, ``labels.csv`` (file, identity, split) and ``authors_boxes.csv`` (file,
box, x, y, w, h in source pixels of the 178x218 image; see SOURCE.txt there). The boxes are
mapped into the S-px frame by kpbench's own box-file mapping (``Preprocess.map_boxes`` and
``kpbench.boxfile.to_whole_pixels``), the mapping training on ``--boxes`` uses.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kpbench.box_agreement import AgreementSummary, best_ious, compare_boxes  # noqa: E402
from kpbench.boxfile import read_box_file, to_whole_pixels  # noqa: E402
from kpbench.data import Preprocess, make_preprocess, read_rgb  # noqa: E402
from kpbench.patches import PATCH_PRESETS, KeyPatchDetector, box_iou  # noqa: E402

SIZE = 64  # the S of the CelebA runs


def read_authors_boxes(path: Path) -> dict[str, np.ndarray]:
    """file -> (K, 4) float x, y, w, h in source pixels, in box-index order (kpbench's box-file
    reader, the one ``--boxes`` uses)."""
    return {file: np.array([box.xywh for box in boxes]) for file, boxes in read_box_file(path).items()}


def to_frame(preprocess: Preprocess, xywh: np.ndarray, width: int, height: int) -> np.ndarray:
    """(K, 4) x, y, w, h in source pixels -> (K, 4) int xyxy in the S-px frame, mapped and rounded
    exactly as ``kpbench data prepare --boxes`` maps them (so the figures here equal
    ``kpbench data compare-boxes``'s on the same images)."""
    _, clipped = to_whole_pixels(preprocess.map_boxes(xywh, width, height), preprocess.size)
    return clipped.astype(np.int64)


def split_files(labels: Path, split: str) -> list[str]:
    with open(labels, newline="", encoding="utf-8") as handle:
        return sorted(row["file"] for row in csv.DictReader(handle) if row["split"].startswith(split))


def line(name: str, summary: AgreementSummary) -> str:
    return f"{name:<22} {summary.mean:>6.3f} {summary.median:>7.3f} {summary.share_found:>9.1%}"


def centre(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) xyxy -> (..., 2) centre x, y."""
    centres: np.ndarray = (boxes[..., :2] + boxes[..., 2:]) / 2
    return centres


def detail(reference: np.ndarray, candidate: np.ndarray) -> None:
    """Where kpbench's boxes miss the authors': per slot, per authors' box size, centre offsets."""
    best = np.array(best_ious(reference, candidate))  # (L, 3)
    print(f"    best IoU per authors' slot: {', '.join(f'{v:.3f}' for v in best.mean(axis=0))}")
    side = np.sqrt((reference[..., 2] - reference[..., 0]) * (reference[..., 3] - reference[..., 1]))
    edges = np.quantile(side, [0, 1 / 3, 2 / 3, 1])
    third = np.clip(np.searchsorted(edges, side, side="right") - 1, 0, 2)  # the size tercile of each box
    for index, (low, high) in enumerate(zip(edges[:-1], edges[1:])):
        chosen = third == index
        print(f"    authors' boxes of side {low:4.1f}-{high:4.1f} px: best IoU {best[chosen].mean():.3f} "
              f"({chosen.sum()} boxes)")
    # The kpbench box that matches each authors' box best, and the offset of its centre.
    offsets = [centre(cand_boxes[np.argmax(box_iou(box, cand_boxes))]) - centre(box)
               for ref_boxes, cand_boxes in zip(reference, candidate) for box in ref_boxes]
    offset = np.array(offsets)
    print(f"    centre of best match minus authors' centre: dx {offset[:, 0].mean():+.1f} "
          f"(|dx| median {np.median(np.abs(offset[:, 0])):.1f}), dy {offset[:, 1].mean():+.1f} "
          f"(|dy| median {np.median(np.abs(offset[:, 1])):.1f}) px")
    candidate_side = np.sqrt(np.prod(candidate[..., 2:] - candidate[..., :2], axis=-1)).mean(axis=0)
    print(f"    kpbench mean side per slot {', '.join(f'{v:.1f}' for v in candidate_side)} px; "
          f"authors' {', '.join(f'{v:.1f}' for v in side.mean(axis=0))} px")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="CelebA-6k folder: images/, labels.csv, authors_boxes.csv")
    parser.add_argument("--presets", nargs="+", default=["celeba"], choices=sorted(PATCH_PRESETS))
    parser.add_argument("--split", default="test", choices=["train", "test"])
    parser.add_argument("--limit", type=int, default=None, help="only the first LIMIT images of the split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random floor")
    parser.add_argument("--detail", action="store_true", help="per slot, per size and centre offsets")
    args = parser.parse_args()

    files = split_files(args.root / "labels.csv", args.split)[: args.limit]
    authors = read_authors_boxes(args.root / "authors_boxes.csv")
    missing = [file for file in files if file not in authors]
    if missing:
        sys.exit(f"{len(missing)} images of the split have no authors' boxes, e.g. {missing[0]}")
    cv2.setNumThreads(1)  # time per image on one core, as data prepare's workers run
    detectors = {name: KeyPatchDetector(PATCH_PRESETS[name]) for name in args.presets}
    boxes: dict[str, list[np.ndarray]] = {name: [] for name in args.presets}
    seconds = dict.fromkeys(args.presets, 0.0)
    references = []
    for file in files:
        source = read_rgb(args.root / "images" / file)
        for name, detector in detectors.items():
            preprocess = make_preprocess(SIZE, name)
            if preprocess.crop is None:
                sys.exit(f"preset {name} has no centre crop; the authors' boxes need one")
            image = preprocess.apply(source)
            start = time.perf_counter()
            boxes[name].append(detector.detect(image).boxes)
            seconds[name] += time.perf_counter() - start
        references.append(to_frame(preprocess, authors[file], *source.size))

    reference = np.array(references)
    print(f"{len(files)} {args.split} images, {reference.shape[1]} authors' boxes each, S={SIZE}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at end")
    print(f"{'best IoU with authors':<22} {'mean':>6} {'median':>7} {'>= 0.5':>9} {'ms/image':>9}")
    for name in args.presets:
        candidate = np.array(boxes[name])
        result = compare_boxes(reference, candidate, SIZE, seed=args.seed)
        print(f"{line(f'preset {name}', result.agreement)} {1000 * seconds[name] / len(files):>9.2f}")
        print(line("  random, same sizes", result.floor))
        if args.detail:
            detail(reference, candidate)


if __name__ == "__main__":
    main()
