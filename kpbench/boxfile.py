"""Key patches from a file: boxes made elsewhere (the authors' CelebA boxes, a landmark or object
detector, annotations) in place of kpbench's EdgeBoxes (``--boxes FILE``).

The file is a CSV with one row per box, in pixels of the source image as it is displayed (EXIF
orientation applied)::

    file,box,x,y,w,h          the header is optional; without one, 5 columns read as
    000002.jpg,0,35.0,129.25,29.53,32.91     file,x,y,w,h and 6 as file,box,x,y,w,h

``file`` is the image's path relative to the data folder (or its bare name where that is unique
in the folder); ``box`` (optional) orders an image's boxes, else the file's row order does, and
the first N are the key patches. Each box goes through exactly the crop and resize of its image
(:meth:`kpbench.data.Preprocess.map_boxes`), is rounded to whole pixels and lands in the same
:class:`~kpbench.boxcache.BoxTable` frame as detected boxes, so the rest of the pipeline (flips
included, :func:`kpbench.patches.flip_boxes`) is unchanged.

Problems are counted and reported once per kind, as one-line warnings:

- rows naming a file that is not in the dataset: ignored;
- zero or negative width or height: the box is dropped;
- a box partly outside the image frame (the source image, or the part the crop keeps): clipped
  to it; one with less than a pixel inside: dropped;
- images with more than N boxes: the first N are used;
- images with fewer than N boxes, or none: left out of every split (``fill="skip"``, the
  default), or completed with kpbench's own EdgeBoxes boxes that overlap the file's least
  (``fill="detect"``; their relax level is recorded as for detection).

The table is cached under ``<cache>/boxes/`` with a key made of the dataset's manifest hash and
the file's content hash (with N and the fill), so editing one number of the file makes a new
table, and a run's name (kpbench.identity) changes with it.
"""

from __future__ import annotations

import csv
import fcntl
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from kpbench.boxcache import BoxTable, Dataset
from kpbench.dataspec import FILL_CHOICES, box_file_id
from kpbench.errors import KpbenchError
from kpbench.io import stable_hash
from kpbench.patches import KeyPatchDetector, PatchParams, box_iou

BOX_FILE_VERSION = 1  # bump when reading or mapping changes the boxes: it enters the cache key
_COLUMNS_5 = ("file", "x", "y", "w", "h")
_COLUMNS_6 = ("file", "box", "x", "y", "w", "h")


class _MappingPreprocess(Protocol):
    @property
    def size(self) -> int: ...

    def map_boxes(self, boxes_xywh: np.ndarray, width: int, height: int) -> np.ndarray: ...


class _BoxFileDataset(Dataset, Protocol):
    """What mapping needs of :class:`kpbench.data.ImageDataset` beyond detection: the files, their
    source sizes and the preprocessing's box mapping."""

    records: list  # ImageRecord: .file
    source: str

    @property
    def preprocess(self) -> _MappingPreprocess: ...

    def source_size(self, index: int) -> tuple[int, int]: ...


class TooFewFileBoxes(KpbenchError):
    """No image has N boxes in the box file (e.g. N = 5 from a file of 3 per image)."""


def box_id_hash(box_id: str) -> str:
    """The content-hash part of a :func:`box_file_id`."""
    return box_id.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class FileBox:
    order: float  # the box column, or the row number
    row: int  # line in the file, for messages
    xywh: tuple[float, float, float, float]


def read_box_file(path: Path) -> dict[str, list[FileBox]]:
    """file name -> its boxes in order. Malformed rows are a one-line :class:`KpbenchError`."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [(number, row) for number, row in enumerate(csv.reader(handle), start=1)
                    if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise KpbenchError(f"cannot read box file {path}: {error}") from None
    if not rows:
        raise KpbenchError(f"box file {path} is empty")
    columns: tuple[str, ...] = _COLUMNS_6 if len(rows[0][1]) == 6 else _COLUMNS_5
    header = [cell.strip().lower() for cell in rows[0][1]]
    if not _is_number(rows[0][1][-1]):  # a header row names the columns
        missing = [name for name in _COLUMNS_5 if name not in header]
        if missing:
            raise KpbenchError(f"box file {path}: the header {','.join(header)} lacks "
                               f"{', '.join(missing)}; expected file,x,y,w,h or file,box,x,y,w,h")
        columns = tuple(header)
        rows = rows[1:]
    elif len(rows[0][1]) not in (5, 6):
        raise KpbenchError(f"box file {path}: row 1 has {len(rows[0][1])} columns; expected "
                           "file,x,y,w,h or file,box,x,y,w,h")
    position = {name: columns.index(name) for name in _COLUMNS_6 if name in columns}
    boxes: dict[str, list[FileBox]] = {}
    for number, row in rows:
        if len(row) != len(columns):
            raise KpbenchError(f"box file {path}: row {number} has {len(row)} columns, the file "
                               f"{len(columns)} ({','.join(columns)})")
        try:
            xywh = tuple(float(row[position[name]]) for name in ("x", "y", "w", "h"))
            order = float(row[position["box"]]) if "box" in position else float(number)
        except ValueError:
            raise KpbenchError(f"box file {path}: row {number} has a value that is not a number: "
                               f"{','.join(row)}") from None
        if not all(np.isfinite(xywh)) or not np.isfinite(order):
            raise KpbenchError(f"box file {path}: row {number} has a value that is not finite")
        name = row[position["file"]].strip().replace("\\", "/").removeprefix("./")
        boxes.setdefault(name, []).append(FileBox(order, number, xywh))  # type: ignore[arg-type]
    for listed in boxes.values():
        listed.sort(key=lambda box: (box.order, box.row))
    return boxes


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass
class BoxFileProblems:
    """Counts of each kind of problem, with one example each (kpbench.boxfile's docstring)."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, kind: str, example: str, count: int = 1) -> None:
        self.counts[kind] += count
        self.examples.setdefault(kind, example)

    def lines(self, n_patches: int, fill: str) -> list[str]:
        """One line per kind that occurred, in a fixed order."""
        left_out = "left out" if fill == "skip" else "completed with EdgeBoxes boxes"
        texts = {
            "unknown_file": "row(s) name a file that is not in the dataset: ignored",
            "bad_size": "box(es) with zero or negative width or height: dropped",
            "clipped": "box(es) partly outside the image frame: clipped to it",
            "outside": "box(es) with less than a pixel inside the image frame: dropped",
            "too_many": f"image(s) with more than {n_patches} boxes: the first {n_patches} used",
            "too_few": f"image(s) with fewer than {n_patches} boxes: {left_out}",
            "no_boxes": f"image(s) without boxes in the file: {left_out}",
        }
        return [f"{self.counts[kind]} {text} (e.g. {self.examples[kind]})"
                for kind, text in texts.items() if self.counts[kind]]

    def to_json(self) -> dict:
        return {kind: [count, self.examples[kind]] for kind, count in sorted(self.counts.items())}

    @classmethod
    def from_json(cls, values: dict) -> BoxFileProblems:
        problems = cls()
        for kind, (count, example) in values.items():
            problems.add(kind, str(example), int(count))
        return problems


def _dataset_keys(dataset: _BoxFileDataset) -> dict[str, int]:
    """Every name a row may use for an image -> its index: the relative path, and the bare file
    name where no other image has it."""
    keys = {record.file: index for index, record in enumerate(dataset.records)}
    names = Counter(Path(record.file).name for record in dataset.records)
    for index, record in enumerate(dataset.records):
        name = Path(record.file).name
        if names[name] == 1:
            keys.setdefault(name, index)
    return keys


def to_whole_pixels(frame: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, 4) float xyxy boxes in the ``size``-px frame (:meth:`Preprocess.map_boxes`) -> the
    boxes rounded to whole pixels (x1/y1 exclusive) and the same clipped to the frame, both (K, 4)
    float. The one rounding of file boxes: training, ``compare-boxes`` and benchmarks/boxes.py."""
    whole = np.floor(frame + 0.5)
    return whole, np.clip(whole, 0, size)


def map_file_boxes(dataset: _BoxFileDataset, listed: dict[str, list[FileBox]], n_patches: int,
                   problems: BoxFileProblems) -> tuple[list[np.ndarray], np.ndarray]:
    """Per dataset image, the (K_i, 4) int32 boxes of the file in the image frame (at most N,
    clipped; dropped ones counted), and (L,) the number of usable boxes before the cut to N."""
    size = int(dataset.preprocess.size)
    keys = _dataset_keys(dataset)
    per_image: list[list[FileBox]] = [[] for _ in range(len(dataset))]
    for name, boxes in listed.items():
        index = keys.get(name)
        if index is None:
            problems.add("unknown_file", name, len(boxes))
            continue
        per_image[index].extend(boxes)
    mapped: list[np.ndarray] = []
    found = np.zeros(len(dataset), dtype=np.int64)
    for index, boxes in enumerate(per_image):
        file = dataset.records[index].file
        if not boxes:
            mapped.append(np.zeros((0, 4), np.int32))
            continue
        boxes = sorted(boxes, key=lambda box: (box.order, box.row))
        xywh = np.array([box.xywh for box in boxes], dtype=np.float64)  # (K, 4)
        positive = (xywh[:, 2] > 0) & (xywh[:, 3] > 0)
        if not positive.all():
            problems.add("bad_size", f"{file} row {boxes[int(np.argmin(positive))].row}",
                         int((~positive).sum()))
        rows = [box.row for box, keep in zip(boxes, positive) if keep]
        frame = dataset.preprocess.map_boxes(xywh[positive], *dataset.source_size(index))  # (K', 4)
        whole, clipped = to_whole_pixels(frame, size)
        inside = (clipped[:, 2] - clipped[:, 0] >= 1) & (clipped[:, 3] - clipped[:, 1] >= 1)
        cut = inside & (clipped != whole).any(axis=1)
        if (~inside).any():
            problems.add("outside", f"{file} row {rows[int(np.argmin(inside))]}", int((~inside).sum()))
        if cut.any():
            problems.add("clipped", f"{file} row {rows[int(np.argmax(cut))]}", int(cut.sum()))
        kept = clipped[inside].astype(np.int32)
        found[index] = len(kept)
        if len(kept) > n_patches:
            problems.add("too_many", file)
        mapped.append(kept[:n_patches])
    return mapped, found


def _fill_from_detector(image: np.ndarray, given: np.ndarray, detector: KeyPatchDetector,
                        n_patches: int) -> tuple[np.ndarray, int]:
    """``given`` (K, 4) file boxes, K < N, completed to (N, 4) with EdgeBoxes boxes: those that
    overlap the given ones below the preset's NMS IoU first, in detection order; the relax level
    of the detection."""
    detection = detector.detect(image)
    candidates = detection.boxes
    if len(given):
        overlap = np.max([box_iou(box, candidates) for box in given], axis=0)
        order = np.argsort(overlap >= detector.params.nms_iou, kind="stable")
        candidates = candidates[order]
    filled = np.concatenate([given, candidates[: n_patches - len(given)]]).astype(np.int32)
    return filled, int(detection.relax_level)


def table_from_file(dataset: _BoxFileDataset, path: Path, n_patches: int, fill: str,
                    detect_params: PatchParams) -> tuple[BoxTable, BoxFileProblems]:
    """The BoxTable of ``dataset`` from the box file ``path`` (N boxes per usable row)."""
    if fill not in FILL_CHOICES:
        raise KpbenchError(f"unknown fill {fill!r}; use {' or '.join(FILL_CHOICES)}")
    problems = BoxFileProblems()
    mapped, _ = map_file_boxes(dataset, read_box_file(path), n_patches, problems)
    size = int(dataset.preprocess.size)
    table = BoxTable(boxes=np.zeros((len(dataset), n_patches, 4), np.int32),
                     scores=np.ones((len(dataset), n_patches), np.float32),
                     relax_level=np.zeros(len(dataset), np.int16), image_size=size,
                     usable=np.zeros(len(dataset), dtype=bool))
    detector = KeyPatchDetector(detect_params) if fill == "detect" else None
    for index, boxes in enumerate(mapped):
        if len(boxes) < n_patches:
            problems.add("no_boxes" if len(boxes) == 0 else "too_few", dataset.records[index].file)
            if detector is None:
                continue
            boxes, level = _fill_from_detector(dataset.load_image(index), boxes, detector, n_patches)
            table.scores[index, len(mapped[index]):] = 0.0  # detected, not from the file
            table.relax_level[index] = level
        table.boxes[index] = boxes
        table.usable[index] = True  # type: ignore[index]
    if not table.usable_rows().any():
        raise TooFewFileBoxes(f"no image of {dataset.source} has {n_patches} boxes in {path}"
                           + (f" ({'; '.join(problems.lines(n_patches, fill))})" if problems.counts else ""))
    return table, problems


def file_box_cache_path(dataset: Dataset, box_id: str, n_patches: int, fill: str,
                        detect_params: PatchParams, cache_dir: Path) -> Path:
    """Where the table of ``dataset`` from the box file named ``box_id`` lives: keyed by the
    manifest, the file's content hash, N, the fill (and, filling by detection, its parameters)."""
    key = {"box_file": box_id_hash(box_id), "n_patches": n_patches, "fill": fill,
           "detector": detect_params.cache_key() if fill == "detect" else None,
           "version": BOX_FILE_VERSION}
    return Path(cache_dir) / "boxes" / f"{dataset.manifest.hash}-file-{stable_hash(key)}.npz"


def prepare_file_boxes(dataset: _BoxFileDataset, path: Path, box_id: str, n_patches: int, fill: str,
                       detect_params: PatchParams, cache_dir: Path,
                       warn: Callable[[str], None] | None = None) -> BoxTable:
    """The cached table of ``dataset`` from the box file (made on first use; the file must still
    hold the content ``box_id`` names). Each kind of problem is reported through ``warn``
    (default: a :class:`UserWarning`) as one line, also when the table comes from the cache."""
    cache = file_box_cache_path(dataset, box_id, n_patches, fill, detect_params, cache_dir)
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not cache.exists():
                found = box_file_id(path)
                if box_id_hash(found) != box_id_hash(box_id):
                    raise KpbenchError(f"box file {path} has changed since this run was set up (content "
                                       f"{box_id_hash(found)}, the run's {box_id_hash(box_id)}); restore it, "
                                       "or use the new file for a new run")
                table, problems = table_from_file(dataset, Path(path), n_patches, fill, detect_params)
                table.save(cache, meta={"manifest": dataset.manifest.hash, "box_file": str(path),
                                        "box_id": box_id, "fill": fill,
                                        "problems": problems.to_json()})
    meta = BoxTable.load_meta(cache)
    for line in BoxFileProblems.from_json(meta.get("problems", {})).lines(n_patches, fill):
        (warn or _warn)(f"box file {Path(meta.get('box_file', path)).name}: {line}")
    return BoxTable.load(cache)


def _warn(text: str) -> None:
    warnings.warn(text, stacklevel=3)
