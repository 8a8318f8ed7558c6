"""Detect key patches once per dataset, in parallel, and cache them (``kpbench data prepare``).

The cache file is ``<cache_dir>/boxes/<manifest hash>-<params hash>.npz``: the manifest hash
names the exact images and preprocessing, the params hash every detection parameter (the edge
model by content). While detection runs, each finished chunk of images is saved atomically
under ``<key>.parts/``; an interrupted run resumes from those parts, and the merged table
replaces them when the last chunk is done.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from kpbench.errors import KpbenchError
from kpbench.io import atomic_write, atomic_write_bytes, stable_hash
from kpbench.patches import KeyPatchDetector, PatchParams
from kpbench.runtime import cpu_count

MAX_CHUNK_SIZE = 256  # images per work item and per part file
MIN_CHUNK_SIZE = 8
CHUNKS_PER_WORKER = 16  # enough that the last chunks finish close together


class _Manifest(Protocol):
    @property
    def hash(self) -> str: ...


class _Preprocess(Protocol):
    @property
    def size(self) -> int: ...


class CacheableDataset(Protocol):
    """What a cache keyed by a dataset's manifest needs of :class:`kpbench.data.ImageDataset`."""

    @property
    def manifest(self) -> _Manifest: ...

    @property
    def preprocess(self) -> _Preprocess: ...

    def __len__(self) -> int: ...


class Dataset(CacheableDataset, Protocol):
    """What detection needs from :class:`kpbench.data.ImageDataset` (picklable)."""

    def load_image(self, index: int) -> np.ndarray: ...


@dataclass
class BoxTable:
    """Key patches for every image of a dataset, row i for ``dataset.load_image(i)``."""

    boxes: np.ndarray  # (L, N, 4) int32 x0, y0, x1, y1 (exclusive)
    scores: np.ndarray  # (L, N) float32
    relax_level: np.ndarray  # (L,) int16, see kpbench.patches.Detection
    image_size: int  # S
    # (L,) bool: rows with N boxes. Detection fills every row; a box file may leave images
    # without enough boxes (kpbench.boxfile), which samples then leave out. None: every row.
    usable: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)

    def usable_rows(self) -> np.ndarray:
        """(L,) bool: the rows whose boxes may be used."""
        return np.ones(len(self), dtype=bool) if self.usable is None else self.usable.astype(bool)

    def reference_wh(self) -> np.ndarray:
        """(L' * N, 2) int32 widths and heights of the key boxes of the usable rows: the pool
        for random_boxes."""
        flat = self.boxes[self.usable_rows()].reshape(-1, 4)
        return np.stack([flat[:, 2] - flat[:, 0], flat[:, 3] - flat[:, 1]], axis=1).astype(np.int32)

    def save(self, path: Path, meta: dict) -> Path:
        arrays: dict[str, Any] = dict(boxes=self.boxes, scores=self.scores, relax_level=self.relax_level,
                      image_size=np.int64(self.image_size), meta=np.str_(json.dumps(meta, sort_keys=True)))
        if self.usable is not None:
            arrays["usable"] = self.usable.astype(bool)
        return atomic_write(path, lambda handle: np.savez(handle, **arrays))

    @classmethod
    def load(cls, path: Path) -> BoxTable:
        with np.load(path, allow_pickle=False) as stored:
            return cls(boxes=stored["boxes"], scores=stored["scores"],
                       relax_level=stored["relax_level"], image_size=int(stored["image_size"]),
                       usable=stored["usable"] if "usable" in stored.files else None)

    @staticmethod
    def load_meta(path: Path) -> dict:
        """The ``meta`` a table was saved with."""
        with np.load(path, allow_pickle=False) as stored:
            meta: dict = json.loads(str(stored["meta"]))
        return meta


def box_cache_path(dataset: Dataset, params: PatchParams, cache_dir: Path) -> Path:
    """Where the boxes of ``dataset`` under ``params`` live."""
    key = f"{dataset.manifest.hash}-{stable_hash(params.cache_key())}"
    return Path(cache_dir) / "boxes" / f"{key}.npz"


def prepare_boxes(
    dataset: Dataset,
    params: PatchParams,
    cache_dir: Path,
    workers: int | None = None,
    progress: bool = True,
    chunk_size: int | None = None,
    also_counts: Sequence[int] = (),
) -> BoxTable:
    """Boxes for every image of ``dataset``: from the cache, or detected over ``workers``
    processes (default: every core this process may use) and cached. ``chunk_size`` images
    make one work item and one resumable part file (default: from the dataset size).

    When detection has to run, the tables for ``also_counts`` (other N, same filters) that are
    not cached yet are made in the same pass: EdgeBoxes' proposals, the expensive part, are
    computed once per image and only the selection of the top N runs per count."""
    path = box_cache_path(dataset, params, cache_dir)
    if path.exists():
        return BoxTable.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time (ranks of one torchrun, cells of a plan on a cluster): the others
    # wait here, then load what it wrote. The kernel drops the lock of a killed builder.
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return BoxTable.load(path)
        extra = [replace(params, n_patches=count) for count in sorted(set(also_counts) - {params.n_patches})]
        extra = [other for other in extra if not box_cache_path(dataset, other, cache_dir).exists()]
        targets = [(other, box_cache_path(dataset, other, cache_dir)) for other in [params, *extra]]
        return _detect_and_save(dataset, targets, workers, progress, chunk_size)[0]


def _detect_and_save(dataset: Dataset, targets: list[tuple[PatchParams, Path]], workers: int | None,
                     progress: bool, chunk_size: int | None) -> list[BoxTable]:
    """Detect for every (params, path) of ``targets`` (the same filters, different N) in one pass
    over the images, resuming from each target's saved parts; returns the tables in order."""
    size = int(dataset.preprocess.size)
    tables = [_empty_table(len(dataset), params.n_patches, size) for params, _ in targets]
    done = np.ones(len(dataset), dtype=bool)
    for table, (_, path) in zip(tables, targets):
        done &= _load_parts(path.with_suffix(".parts"), table)
    workers = workers or cpu_count()
    if chunk_size is None:
        chunk_size = int(np.clip(-(-len(dataset) // (workers * CHUNKS_PER_WORKER)), MIN_CHUNK_SIZE,
                                 MAX_CHUNK_SIZE))
    todo = list(_spans(np.flatnonzero(~done), chunk_size))
    workers = min(workers, max(len(todo), 1))
    all_params = [params for params, _ in targets]

    with (_detections(dataset, all_params, todo, workers) as detected,
          image_progress(progress, "detecting key patches", len(dataset), int(done.sum())) as advance):
        for start, per_count in detected:
            for table, (_, path), (boxes, scores, levels) in zip(tables, targets, per_count):
                stop = start + len(boxes)
                _save_arrays(path.with_suffix(".parts") / f"{start:09d}-{stop:09d}.npz",
                             boxes=boxes, scores=scores, relax_level=levels)
                table.boxes[start:stop], table.scores[start:stop], table.relax_level[start:stop] = (
                    boxes, scores, levels)
            advance(len(per_count[0][0]))

    for table, (params, path) in zip(tables, targets):
        table.save(path, meta={"manifest": dataset.manifest.hash, "params": params.cache_key()})
        shutil.rmtree(path.with_suffix(".parts"), ignore_errors=True)
    return tables


def _empty_table(length: int, count: int, image_size: int) -> BoxTable:
    return BoxTable(boxes=np.zeros((length, count, 4), np.int32),
                    scores=np.zeros((length, count), np.float32),
                    relax_level=np.zeros(length, np.int16), image_size=image_size)


_PART_NAME = re.compile(r"^(\d+)-(\d+)\.npz$")


def _load_parts(parts_dir: Path, table: BoxTable) -> np.ndarray:
    """Copy finished chunks from an interrupted run into ``table``; (L,) bool of rows filled."""
    done = np.zeros(len(table), dtype=bool)
    if not parts_dir.is_dir():
        return done
    for part in sorted(parts_dir.iterdir()):
        match = _PART_NAME.match(part.name)
        if not match:
            continue  # a temp file from a write that was cut short
        start, stop = int(match[1]), int(match[2])
        with np.load(part, allow_pickle=False) as stored:
            boxes = stored["boxes"]
            if stop > len(table) or boxes.shape != (stop - start, *table.boxes.shape[1:]):
                continue
            table.boxes[start:stop] = boxes
            table.scores[start:stop] = stored["scores"]
            table.relax_level[start:stop] = stored["relax_level"]
        done[start:stop] = True
    return done


def _spans(indices: np.ndarray, chunk_size: int) -> Iterator[tuple[int, int]]:
    """Sorted indices -> (start, stop) ranges of consecutive indices, at most chunk_size long."""
    runs = np.split(indices, np.flatnonzero(np.diff(indices) != 1) + 1)
    for run in runs:
        for start in range(0, len(run), chunk_size):
            piece = run[start:start + chunk_size]
            yield int(piece[0]), int(piece[-1]) + 1


def _save_arrays(path: Path, **arrays: Any) -> None:
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


# -- detection: in this process, or one detector per worker process ---------------------------
Found = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes (K, N, 4), scores (K, N), levels (K,)
DetectedSpan = tuple[int, list[Found]]  # start, one Found per requested N


def _detect_span(dataset: Dataset, detector: KeyPatchDetector, counts: list[int],
                 span: tuple[int, int]) -> DetectedSpan:
    start, stop = span
    detections = [detector.detect_counts(dataset.load_image(index), counts) for index in range(start, stop)]
    found = []
    for position in range(len(counts)):
        chosen = [per_image[position] for per_image in detections]
        found.append((np.stack([d.boxes for d in chosen]), np.stack([d.scores for d in chosen]),
                      np.array([d.relax_level for d in chosen], dtype=np.int16)))
    return start, found


_worker_dataset: Dataset | None = None
_worker_detector: KeyPatchDetector | None = None
_worker_counts: list[int] = []


def _init_worker(dataset: Dataset, params: PatchParams, counts: list[int]) -> None:
    # One process per core: library thread pools would only oversubscribe the cores. Detection
    # itself never imports torch; limit it only if the dataset's code brought it in.
    cv2.setNumThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    global _worker_dataset, _worker_detector, _worker_counts
    _worker_dataset, _worker_detector, _worker_counts = dataset, KeyPatchDetector(params), counts


def _worker_detect_span(span: tuple[int, int]) -> DetectedSpan:
    assert _worker_dataset is not None and _worker_detector is not None, "worker not initialised"
    return _detect_span(_worker_dataset, _worker_detector, _worker_counts, span)


@contextmanager
def _detections(dataset: Dataset, all_params: list[PatchParams], spans: list[tuple[int, int]],
                workers: int) -> Iterator[Iterator[DetectedSpan]]:
    """Yields an iterator of detected spans, in completion order; worker processes (if any)
    are running when it is yielded. ``all_params`` differ in ``n_patches`` only."""
    params, counts = all_params[0], [other.n_patches for other in all_params]
    if workers <= 1 or len(spans) <= 1:
        detector = KeyPatchDetector(params)
        yield (_detect_span(dataset, detector, counts, span) for span in spans)
        return
    # Not plain fork: a child forked after OpenCV's thread pool ran in this process can hang in
    # cv2.setNumThreads. A fork server is a fresh process, started once, that preloads this
    # module (when it is importable there, as for an installed kpbench) and forks the workers;
    # spawn is the fallback where fork servers do not exist.
    context: multiprocessing.context.BaseContext
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["__main__", __name__])
    else:
        context = multiprocessing.get_context("spawn")
    # An executor, not multiprocessing.Pool: a Pool replaces a worker that dies while starting
    # (a script without a __main__ guard, which every worker imports, dies there) forever, and
    # the parent waits without end; the executor reports the dead worker (BrokenProcessPool).
    executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                   initargs=(dataset, params, counts))
    try:
        yield _completed([executor.submit(_worker_detect_span, span) for span in spans])
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)  # workers end after their current chunk
        raise
    executor.shutdown(wait=True)


def _completed(futures: list[Future[DetectedSpan]]) -> Iterator[DetectedSpan]:
    """The results of ``futures`` in completion order; a worker that died is a one-line error."""
    try:
        for future in as_completed(futures):
            yield future.result()
    except BrokenProcessPool:
        raise KpbenchError(
            "a key-patch detection worker process died (killed, out of memory, or it could not start: "
            "the workers import the main script, so a script that calls kpbench must keep its code "
            "under `if __name__ == \"__main__\":`); finished chunks are saved and a rerun resumes, "
            "also with one worker (--workers 1)") from None


@contextmanager
def image_progress(show: bool, label: str, total: int, completed: int) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(count)`` for a pass over a dataset's images: a rich progress bar on a
    terminal when ``show``, else a no-op (in a log file a bar would only leave its last frame)."""
    console = Console()
    if not show or not console.is_terminal:
        yield lambda count: None
        return
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=total, completed=completed)
        yield lambda count: bar.advance(task, count)


# -- reporting ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BoxSummary:
    images: int
    boxes_per_image: int
    image_size: int
    relaxed: dict[int, int]  # relax level (> 0) -> number of images that needed it
    width: tuple[float, float, float]  # min, median, max in px
    height: tuple[float, float, float]
    area_percent: tuple[float, float, float]  # of the image area
    aspect: tuple[float, float, float]  # w / h
    # Boxes read from a box file (kpbench.boxfile): no filter was relaxed for them; ``filled``
    # images had boxes completed by the detector (--fill detect). None: detected boxes.
    filled: int | None = None

    def lines(self) -> list[str]:
        relaxed = sum(self.relaxed.values())
        levels = ", ".join(f"level {level}: {count}" for level, count in sorted(self.relaxed.items()))
        if self.filled is None:
            origin = f"relaxed filters: {relaxed} images" + (f" ({levels})" if relaxed else "")
        else:
            origin = f"boxes from the file: {self.images - self.filled} images" + (
                f"; completed by the detector: {self.filled} (relaxed filters: {relaxed})"
                if self.filled else "")

        def span(name: str, values: tuple[float, float, float], unit: str = "") -> str:
            low, median, high = values
            return f"{name} {low:g}-{high:g}{unit} (median {median:g}{unit})"

        return [
            f"{self.images} images x {self.boxes_per_image} boxes at {self.image_size}px",
            origin,
            ", ".join([span("width", self.width, "px"), span("height", self.height, "px"),
                       span("area", self.area_percent, "%"), span("w/h", self.aspect)]),
        ]


def summarize_boxes(table: BoxTable, from_file: bool = False) -> BoxSummary:
    """Relaxation counts and box-size statistics, for the CLI to print. ``from_file``: the table
    came from a box file, whose detector-completed rows have a score of 0 on the added boxes."""
    width_height = table.reference_wh().astype(np.float64)
    width, height = width_height[:, 0], width_height[:, 1]
    levels, counts = np.unique(table.relax_level[table.usable_rows()], return_counts=True)

    def stats(values: np.ndarray) -> tuple[float, float, float]:
        low, median, high = np.percentile(values, [0, 50, 100])
        return round(float(low), 2), round(float(median), 2), round(float(high), 2)

    return BoxSummary(
        images=int(table.usable_rows().sum()), boxes_per_image=table.boxes.shape[1],
        image_size=table.image_size,
        relaxed={int(level): int(count) for level, count in zip(levels, counts) if level > 0},
        width=stats(width), height=stats(height),
        area_percent=stats(100.0 * width * height / table.image_size**2), aspect=stats(width / height),
        filled=int((table.scores[table.usable_rows()] == 0).any(axis=1).sum()) if from_file else None,
    )


# Box colours (RGB) by patch number; numbers past the list reuse it.
_BOX_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180),
                (70, 240, 240))
_TILE_MIN_SIDE = 192  # small images are enlarged so boxes and numbers stay legible
_CAPTION_HEIGHT = 18
_MARGIN = 6


def render_contact_sheet(dataset: Dataset, table: BoxTable, out_png: Path, count: int = 24,
                         columns: int = 6) -> Path:
    """Write a PNG grid of ``count`` images (spread evenly over the dataset) with their key
    boxes drawn and numbered 1..N; relaxed detections are marked in the caption."""
    if len(table) != len(dataset):
        raise KpbenchError(f"box table has {len(table)} rows but the dataset has {len(dataset)} images")
    indices = np.unique(np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int))
    tiles = [_draw_tile(dataset.load_image(int(index)), table, int(index)) for index in indices]
    tile_h, tile_w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    columns = min(columns, len(tiles))
    sheet = np.full((rows * (tile_h + _MARGIN) + _MARGIN, columns * (tile_w + _MARGIN) + _MARGIN, 3),
                    255, np.uint8)
    for position, tile in enumerate(tiles):
        row, column = divmod(position, columns)
        top, left = _MARGIN + row * (tile_h + _MARGIN), _MARGIN + column * (tile_w + _MARGIN)
        sheet[top:top + tile_h, left:left + tile_w] = tile
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise KpbenchError(f"could not encode the contact sheet for {out_png}")
    return atomic_write_bytes(out_png, encoded.tobytes())


def _draw_tile(image: np.ndarray, table: BoxTable, index: int) -> np.ndarray:
    """uint8 (S, S, 3) RGB -> enlarged copy with numbered boxes and a caption strip below."""
    scale = max(1, -(-_TILE_MIN_SIDE // image.shape[0]))
    canvas = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    usable = bool(table.usable_rows()[index])  # a box file may leave an image without N boxes
    for number, (x0, y0, x1, y1) in enumerate(table.boxes[index].tolist() if usable else [], start=1):
        colour = _BOX_COLOURS[(number - 1) % len(_BOX_COLOURS)]
        top_left, bottom_right = (x0 * scale, y0 * scale), (x1 * scale - 1, y1 * scale - 1)
        cv2.rectangle(canvas, top_left, bottom_right, colour, 2)
        label_origin = (top_left[0] + 3, top_left[1] + 14)
        cv2.putText(canvas, str(number), label_origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3,
                    cv2.LINE_AA)
        cv2.putText(canvas, str(number), label_origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1,
                    cv2.LINE_AA)
    caption = np.full((_CAPTION_HEIGHT, canvas.shape[1], 3), 255, np.uint8)
    level = int(table.relax_level[index])
    text = f"#{index}" + (f"  relaxed (level {level})" if level else "") + ("" if usable else "  no boxes")
    cv2.putText(caption, text, (2, _CAPTION_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0) if not level and usable else (200, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([canvas, caption])
