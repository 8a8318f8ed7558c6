"""Datasets: any folder of images, or the built-in procedural dataset.

Both give an :class:`ImageDataset`: a picklable list of records whose ``load_image(i)`` returns
the preprocessed image as uint8 (S, S, 3) RGB, with labels, a deterministic train/test split and
a :class:`Manifest` whose ``hash`` names exactly which data (files, crop, size, split) every later
number came from.

Sources:
    ``DIR``            images under DIR, recursively (jpg, jpeg, png, webp, bmp); labels from a
                       ``labels.csv`` (file,label[,split]) or else from class sub-folders.
    ``builtin[:COUNT]`` procedural "creatures" made of parts (see :mod:`kpbench.builtin`).
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from kpbench.errors import KpbenchError
from kpbench.io import atomic_write_json, stable_hash

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
SUPPORTED_SIZES = (64, 128, 256)
MIN_SOURCE_SIDE = 32  # smaller images carry too little to upsample into S x S; they are skipped
Split = Literal["train", "test", "all"]
EXIF_ORIENTATION = 0x0112
EXIF_TRANSPOSED = frozenset({5, 6, 7, 8})  # orientations that swap width and height


@dataclass(frozen=True)
class Preprocess:
    """How a source image becomes S x S.

    ``crop`` set: centre crop of ``crop`` x ``crop`` source pixels, then resize to ``size``
    (CelebA practice: 108 of the 178 x 218 aligned image). ``crop`` None: resize the short side to
    ``size``, then centre crop.
    """

    size: int = 64
    crop: int | None = None

    def __post_init__(self) -> None:
        if self.size not in SUPPORTED_SIZES:
            raise KpbenchError(f"image size {self.size} not supported; choose one of {SUPPORTED_SIZES}")
        if self.crop is not None and self.crop < MIN_SOURCE_SIDE:
            raise KpbenchError(f"crop {self.crop} is too small; use at least {MIN_SOURCE_SIDE} px")

    def apply(self, image: Image.Image) -> np.ndarray:
        """PIL RGB image -> uint8 (size, size, 3)."""
        width, height = image.size
        side = min(width, height) if self.crop is None else min(self.crop, width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = resize_image(image.crop((left, top, left + side, top + side)), self.size, self.size)
        return np.array(image, dtype=np.uint8)  # a writable copy (torch.from_numpy needs one)

    def map_boxes(self, boxes_xywh: np.ndarray, width: int, height: int) -> np.ndarray:
        """(K, 4) float x, y, w, h in pixels of a ``width`` x ``height`` source image -> (K, 4)
        float x0, y0, x1, y1 in the ``size`` x ``size`` frame :meth:`apply` makes of it: the same
        crop and scale, unclipped (a box may reach outside the frame)."""
        side = min(width, height) if self.crop is None else min(self.crop, width, height)
        left, top = (width - side) // 2, (height - side) // 2
        scale = self.size / side
        boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
        x0, y0 = (boxes[:, 0] - left) * scale, (boxes[:, 1] - top) * scale
        return np.stack([x0, y0, x0 + boxes[:, 2] * scale, y0 + boxes[:, 3] * scale], axis=1)


def resize_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """The resampling every image gets on its way to the S x S frame (Lanczos, with PIL's
    reducing gap for speed on large sources)."""
    return image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)


# Named presets; a preset fixes the crop here and the key-patch filters in
# ``kpbench.patches.PATCH_PRESETS`` (same names); the user still picks the size.
PRESETS: dict[str, int | None] = {
    "default": None,  # resize short side, centre crop
    "celeba": 108,  # the paper's 108 x 108 CelebA crop, centred as in the authors' code
    "celeba-v1": 108,  # the same crop; the presets differ in key-patch detection only
    "celeba-v2": 108,
    "waterfall": None,  # the paper's waterfall setting: tall boxes allowed
}


def make_preprocess(size: int = 64, preset: str = "default", crop: int | None = None) -> Preprocess:
    if preset not in PRESETS:
        raise KpbenchError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    return Preprocess(size=size, crop=crop if crop is not None else PRESETS[preset])


def read_rgb(path: Path) -> Image.Image:
    """Decode any supported file to 8-bit RGB, respecting EXIF orientation.

    Handles grayscale, palette, RGBA (composited on white), and 16-bit images. Raises
    ``OSError``/``ValueError`` subclasses for broken files (callers count and skip them).
    """
    with Image.open(path) as opened:
        opened.load()  # force a full decode so truncated files fail here, not mid-training
        image = ImageOps.exif_transpose(opened)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit integer) grayscale: scale to 8 bits by the type's range.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


@dataclass(frozen=True)
class ImageRecord:
    file: str  # path relative to the dataset root (or "builtin/<index>")
    label: str
    split: str | None = None  # "train"/"test" when the source fixes it, else chosen by seed


@dataclass(frozen=True)
class Manifest:
    """Which data a number came from. ``hash`` covers the file list (names and byte sizes),
    labels, preprocessing and the split."""

    source: str
    kind: str
    num_images: int
    num_train: int
    num_test: int
    preprocess: dict
    split_seed: int
    test_fraction: float
    files_hash: str
    split_hash: str
    skipped: dict = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return stable_hash(
            [self.kind, self.files_hash, self.preprocess, self.split_hash], length=16
        )

    def to_json(self) -> dict:
        return {**asdict(self), "hash": self.hash}


class ImageDataset:
    """Records + preprocessing + split. Subclasses implement :meth:`_load_source`."""

    kind: str = "folder"

    def __init__(
        self,
        source: str,
        records: list[ImageRecord],
        preprocess: Preprocess,
        files_hash: str,
        split_seed: int = 0,
        test_fraction: float = 0.1,
        skipped: dict | None = None,
    ) -> None:
        if not records:
            raise KpbenchError(f"no readable images in {source}")
        self.source = source
        self.records = records
        self._decoded_path: Path | None = None
        self._decoded_array: np.ndarray | None = None
        self.preprocess = preprocess
        self.class_names: list[str] = sorted({record.label for record in records})
        class_index = {name: k for k, name in enumerate(self.class_names)}
        self.labels = np.array([class_index[record.label] for record in records], dtype=np.int64)
        self.is_test = self._assign_split(records, split_seed, test_fraction)
        self.manifest = Manifest(
            source=source,
            kind=self.kind,
            num_images=len(records),
            num_train=int((~self.is_test).sum()),
            num_test=int(self.is_test.sum()),
            preprocess=asdict(preprocess),
            split_seed=split_seed,
            test_fraction=test_fraction,
            files_hash=files_hash,
            split_hash=stable_hash(np.flatnonzero(self.is_test).tolist()),
            skipped=skipped or {},
        )

    @staticmethod
    def _assign_split(records: list[ImageRecord], seed: int, test_fraction: float) -> np.ndarray:
        """(L,) bool test flags: the source's own split where given, else a seeded shuffle."""
        if not 0.0 < test_fraction < 1.0:
            raise KpbenchError(f"test fraction must be in (0, 1), got {test_fraction}")
        given = [record.split for record in records]
        if all(split is not None for split in given):
            return np.array([split == "test" for split in given], dtype=bool)
        order = np.random.default_rng(seed).permutation(len(records))
        num_test = seeded_test_count(len(records), test_fraction)
        is_test = np.zeros(len(records), dtype=bool)
        is_test[order[:num_test]] = True
        return is_test

    def __len__(self) -> int:
        return len(self.records)

    def split_indices(self, split: Split) -> np.ndarray:
        if split == "all":
            return np.arange(len(self))
        if split not in ("train", "test"):
            raise KpbenchError(f"unknown split {split!r}; use train, test or all")
        return np.flatnonzero(self.is_test if split == "test" else ~self.is_test)

    def load_image(self, index: int) -> np.ndarray:
        """uint8 (S, S, 3) RGB: from the decoded cache once attached, else decoded now."""
        if self._decoded_path is None:
            return self.decode(index)
        return np.array(self._decoded()[index])

    def load_images(self, indices: np.ndarray | list[int]) -> np.ndarray:
        """uint8 (B, S, S, 3) RGB of the given dataset indices, in that order."""
        if self._decoded_path is None:
            return np.stack([self.decode(int(index)) for index in indices])
        return self._decoded()[np.asarray(indices, dtype=np.int64)]  # fancy indexing copies

    def source_size(self, index: int) -> tuple[int, int]:
        """(width, height) of image ``index`` before preprocessing, as displayed (EXIF orientation
        applied): the frame that boxes from a file are given in."""
        raise NotImplementedError

    def decode(self, index: int) -> np.ndarray:
        """uint8 (S, S, 3) RGB decoded from the source (file or drawing), never from the cache."""
        return self._load_source(index)

    def attach_decoded(self, path: Path) -> None:
        """Serve images from the decoded cache at ``path`` (see :mod:`kpbench.imagecache`)."""
        self._decoded_path = Path(path)
        self._decoded_array = None

    @property
    def decoded_path(self) -> Path | None:
        return self._decoded_path

    def _decoded(self) -> np.ndarray:
        if self._decoded_array is None:
            from kpbench.imagecache import open_decoded

            assert self._decoded_path is not None, "no decoded cache attached"
            self._decoded_array = open_decoded(self._decoded_path)
        return self._decoded_array

    def __getstate__(self) -> dict:
        # Worker processes map the cache file themselves rather than receive a copy of it.
        return {**self.__dict__, "_decoded_array": None}

    def _load_source(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def write_manifest(self, directory: Path) -> Path:
        """Write the manifest and the exact file list with its split to ``directory``."""
        files = [
            {"file": record.file, "label": record.label, "split": "test" if test else "train"}
            for record, test in zip(self.records, self.is_test)
        ]
        path = Path(directory) / f"manifest-{self.manifest.hash}.json"
        atomic_write_json(path, {**self.manifest.to_json(), "files": files})
        return path


class FolderDataset(ImageDataset):
    kind = "folder"

    def __init__(self, root: Path, preprocess: Preprocess, split_seed: int = 0,
                 test_fraction: float = 0.1) -> None:
        self.root = Path(root)
        records, sizes, skipped = _index_folder(self.root)
        files_hash = stable_hash(
            [[record.file, record.label, record.split, size] for record, size in zip(records, sizes)]
        )
        super().__init__(str(self.root), records, preprocess, files_hash, split_seed,
                         test_fraction, skipped)

    def source_size(self, index: int) -> tuple[int, int]:
        path = self.root / self.records[index].file
        try:
            with Image.open(path) as opened:  # the header only
                width, height = opened.size
                orientation = opened.getexif().get(EXIF_ORIENTATION, 1)
        except (OSError, ValueError, UnidentifiedImageError) as error:
            raise KpbenchError(f"cannot read image {path}: {error}") from error
        return (height, width) if orientation in EXIF_TRANSPOSED else (width, height)

    def _load_source(self, index: int) -> np.ndarray:
        path = self.root / self.records[index].file
        try:
            return self.preprocess.apply(read_rgb(path))
        except (OSError, ValueError, UnidentifiedImageError) as error:
            raise KpbenchError(f"cannot read image {path}: {error}") from error


def _split_name(raw: str) -> str | None:
    """Map split spellings ('train_dataset', 'val', 'TEST') to train/test."""
    text = raw.strip().lower()
    if not text:
        return None
    if "train" in text:
        return "train"
    if "test" in text or "val" in text:
        return "test"
    raise KpbenchError(f"labels.csv: unknown split {raw!r}; use train or test")


def _read_labels_csv(path: Path) -> dict[str, tuple[str, str | None]]:
    """file -> (label, split) from ``labels.csv``; a header row is detected and skipped."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if rows and rows[0][0].strip().lower() in ("file", "filename", "image", "path"):
        rows = rows[1:]
    table: dict[str, tuple[str, str | None]] = {}
    for number, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise KpbenchError(f"{path}: row {number} needs file,label[,split], got {row!r}")
        split = _split_name(row[2]) if len(row) > 2 else None
        table[row[0].strip()] = (row[1].strip(), split)
    return table


def _image_files(root: Path) -> list[Path]:
    """The image files under ``root`` by extension, sorted; none is opened."""
    if not root.exists():
        raise KpbenchError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise KpbenchError(f"{root} is not a folder of images")
    candidates = sorted(
        path for path in root.rglob("*")
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not candidates:
        raise KpbenchError(
            f"no image files (jpg, png, webp, bmp) found under {root}"
        )
    return candidates


def _index_folder(root: Path) -> tuple[list[ImageRecord], list[int], dict]:
    """Find, check and label every image under ``root``.

    Unreadable, truncated or tiny files are skipped and counted (with a warning); an empty folder
    or one with no readable image is a :class:`KpbenchError`.
    """
    candidates = _image_files(root)
    labels_csv = root / "labels.csv"
    labelled = _read_labels_csv(labels_csv) if labels_csv.exists() else None

    records: list[ImageRecord] = []
    sizes: list[int] = []
    broken: list[str] = []
    tiny: list[str] = []
    unlabelled: list[str] = []
    for path in candidates:
        relative = path.relative_to(root).as_posix()
        try:
            with Image.open(path) as opened:
                opened.verify()  # cheap header + structure check; full decode happens on load
            with Image.open(path) as opened:
                width, height = opened.size
                opened.draft("RGB", (width // 4, height // 4))  # fast partial decode for JPEG
                opened.load()
        except (OSError, ValueError, UnidentifiedImageError, SyntaxError):
            broken.append(relative)
            continue
        if min(width, height) < MIN_SOURCE_SIDE:
            tiny.append(relative)
            continue
        if labelled is not None:
            key = relative if relative in labelled else path.name
            if key not in labelled:
                unlabelled.append(relative)
                continue
            label, split = labelled[key]
        else:
            parent = path.parent.relative_to(root).as_posix()
            label, split = ("none" if parent == "." else parent), None
        records.append(ImageRecord(file=relative, label=label, split=split))
        sizes.append(path.stat().st_size)

    skipped = {"broken": len(broken), "too_small": len(tiny), "unlabelled": len(unlabelled)}
    if not records:
        raise KpbenchError(
            f"no readable image under {root}: {len(candidates)} candidate file(s), "
            f"{len(broken)} unreadable, {len(tiny)} too small, {len(unlabelled)} unlabelled"
        )
    for reason, names in (("unreadable or truncated", broken),
                          (f"smaller than {MIN_SOURCE_SIDE} px", tiny),
                          ("missing from labels.csv", unlabelled)):
        if names:
            warnings.warn(
                f"skipped {len(names)} {reason} file(s) under {root} (e.g. {names[0]})",
                stacklevel=3,
            )
    return records, sizes, skipped


class BuiltinDataset(ImageDataset):
    """``count`` creatures drawn by :mod:`kpbench.builtin` (imported on use: it needs OpenCV);
    split by seed like any folder without its own split."""

    kind = "builtin"

    def __init__(self, count: int, preprocess: Preprocess, split_seed: int = 0,
                 test_fraction: float = 0.1) -> None:
        from kpbench.builtin import BUILTIN_PREFIX, BUILTIN_VERSION, render_creature_label

        self.count = count
        labels = [render_creature_label(index) for index in range(count)]
        records = [ImageRecord(file=f"builtin/{index:06d}", label=label)
                   for index, label in enumerate(labels)]
        files_hash = stable_hash([BUILTIN_PREFIX, BUILTIN_VERSION, count])
        source = f"{BUILTIN_PREFIX}:{count}"
        super().__init__(source, records, preprocess, files_hash, split_seed, test_fraction)

    def source_size(self, index: int) -> tuple[int, int]:
        from kpbench.builtin import CANVAS

        return CANVAS, CANVAS

    def _load_source(self, index: int) -> np.ndarray:
        from kpbench.builtin import render_creature

        canvas, _ = render_creature(index)
        return self.preprocess.apply(Image.fromarray(canvas))


def open_dataset(
    source: str | Path,
    preprocess: Preprocess | None = None,
    split_seed: int = 0,
    test_fraction: float = 0.1,
) -> ImageDataset:
    """``source`` is a folder path or ``builtin[:COUNT]``."""
    from kpbench.builtin import BUILTIN_PREFIX, parse_builtin_source

    preprocess = preprocess or Preprocess()
    text = str(source)
    if text == BUILTIN_PREFIX or text.startswith(BUILTIN_PREFIX + ":"):
        count = parse_builtin_source(text)
        return BuiltinDataset(count, preprocess, split_seed, test_fraction)
    return FolderDataset(Path(text), preprocess, split_seed, test_fraction)


def seeded_test_count(num_images: int, test_fraction: float) -> int:
    """How many of ``num_images`` a seeded split puts in the test set."""
    return max(1, round(num_images * test_fraction)) if num_images > 1 else 0


@dataclass(frozen=True)
class SplitCount:
    """A source's split sizes as :func:`open_dataset` would give them, counted without opening it."""

    train: int
    test: int
    # False for a folder: its files were counted, not read, and opening it skips those that
    # turn out unreadable, too small or missing from labels.csv (so these are upper bounds).
    exact: bool


def count_split(source: str | Path, test_fraction: float = 0.1) -> SplitCount:
    """The train / test sizes of ``source`` (a folder or ``builtin[:COUNT]``) from the file
    listing and labels.csv alone, as :func:`open_dataset` would split it (the sizes of a seeded
    split do not depend on the seed): milliseconds, where opening a large folder checks every
    image."""
    from kpbench.builtin import BUILTIN_PREFIX, parse_builtin_source

    if not 0.0 < test_fraction < 1.0:
        raise KpbenchError(f"test fraction must be in (0, 1), got {test_fraction}")
    text = str(source)
    if text == BUILTIN_PREFIX or text.startswith(BUILTIN_PREFIX + ":"):
        count = parse_builtin_source(text)
        test = seeded_test_count(count, test_fraction)
        return SplitCount(count - test, test, exact=True)
    root = Path(text)
    files = _image_files(root)
    labels_csv = root / "labels.csv"
    labelled = _read_labels_csv(labels_csv) if labels_csv.exists() else None
    splits: list[str | None] = []  # of the files that would be records (as _index_folder keys them)
    for path in files:
        if labelled is None:
            splits.append(None)
            continue
        relative = path.relative_to(root).as_posix()
        key = relative if relative in labelled else path.name
        if key in labelled:
            splits.append(labelled[key][1])
    if splits and all(split is not None for split in splits):  # the source's own split
        test = splits.count("test")
    else:
        test = seeded_test_count(len(splits), test_fraction)
    return SplitCount(len(splits) - test, test, exact=False)


def check_split_sizes(dataset: ImageDataset, warn: bool = True) -> None:
    """Refuse ``dataset`` when its train or test split is empty (nothing to train on, or to
    evaluate on); warn (``warn``) when its test split is too small for an interval over test
    images (:data:`kpbench.stats.MIN_TEST_IMAGES_FOR_INTERVAL`)."""
    from kpbench.stats import MIN_TEST_IMAGES_FOR_INTERVAL

    manifest = dataset.manifest
    counts = (f"{manifest.num_images} image{'s' if manifest.num_images != 1 else ''} "
              f"({manifest.num_train} train / {manifest.num_test} test)")
    if manifest.num_train < 1 or manifest.num_test < 1:
        own_split = all(record.split is not None for record in dataset.records)
        remedy = "give both splits files in labels.csv" if own_split else "add images"
        raise KpbenchError(f"{dataset.source} has {counts}: training and evaluation need at least 1 "
                           f"image in each split (2 in all); {remedy}")
    if warn and manifest.num_test < MIN_TEST_IMAGES_FOR_INTERVAL:
        warnings.warn(f"{dataset.source} has {counts}: with fewer than {MIN_TEST_IMAGES_FOR_INTERVAL} "
                      "test images, intervals over them mean little (one gives none); add images for "
                      "numbers to compare", stacklevel=2)


def describe(dataset: ImageDataset) -> str:
    """One paragraph for the CLI: size, split, classes, skipped files, manifest hash."""
    manifest = dataset.manifest
    skipped = {k: v for k, v in manifest.skipped.items() if v}
    parts = [
        f"{manifest.num_images} images ({manifest.num_train} train / {manifest.num_test} test)",
        f"{len(dataset.class_names)} classes",
        f"{dataset.preprocess.size}px",
        f"manifest {manifest.hash}",
    ]
    if skipped:
        parts.append("skipped " + json.dumps(skipped))
    return ", ".join(parts)
