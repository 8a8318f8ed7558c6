"""Training / evaluation samples: an image with its N patches and true mask, as tensors.

Images come from the decoded-image cache and boxes from the box cache (both built once per
dataset), so a batch costs one read of a memory-mapped array; the N patches are cut afterwards
in one batched call on the training device (:func:`expand_batch`). Data workers never decode a
file or run EdgeBoxes. Random choices (horizontal flip, random
patch positions) are pure functions of (seed, epoch, index), so data order and augmentation
repeat exactly on resume and in every worker process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from kpbench.box_agreement import AGREEMENT_IOU, AgreementSummary, BoxAgreement, compare_boxes
from kpbench.boxcache import BoxTable, prepare_boxes
from kpbench.data import ImageDataset, Split, make_preprocess, open_dataset
from kpbench.dataspec import PATCH_SOURCES, DataSpec, PatchSource
from kpbench.errors import KpbenchError
from kpbench.imagecache import build_decoded_cache
from kpbench.patches import PATCH_PRESETS, PatchParams, boxes_to_mask, cut_patches, flip_boxes, random_boxes
from kpbench.paths import WorkDir
from kpbench.runtime import derive_seed
from kpbench.seeds import check_seed


class PatchSampleDataset(Dataset):
    """Items: ``image`` (3,S,S), ``patches`` (N,3,S,S), ``mask`` (1,S,S) in {0,1},
    ``boxes`` (N,4) int64, ``label`` and ``index`` (position in the full dataset)."""

    def __init__(
        self,
        dataset: ImageDataset,
        boxes: BoxTable,
        indices: np.ndarray,
        seed: int,
        patch_source: PatchSource = "key",
        flip: bool = True,
        n_patches: int | None = None,
    ) -> None:
        if patch_source not in PATCH_SOURCES:
            raise KpbenchError(f"unknown patch source {patch_source!r}; use key or random")
        if len(indices) == 0:
            raise KpbenchError(f"no images in this split of {dataset.source}")
        self.dataset = dataset
        self.boxes = boxes
        self.indices = np.asarray(indices, dtype=np.int64)
        self.seed = seed
        self.patch_source = patch_source
        self.flip = flip
        self.n_patches = n_patches or boxes.boxes.shape[1]
        self.epoch = 0
        # Random patches copy the size distribution of all key boxes in the dataset.
        self._reference_wh = boxes.reference_wh()

    @property
    def manifest_hash(self) -> str:
        return self.dataset.manifest.hash

    @property
    def size(self) -> int:
        return self.dataset.preprocess.size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def boxes_for(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """(N, 4) boxes of dataset image ``index``: cached key boxes or random ones."""
        if self.patch_source == "random":
            return random_boxes(rng, self.size, self.n_patches, self._reference_wh)
        key = self.boxes.boxes[index]
        if self.n_patches > len(key):
            raise KpbenchError(
                f"{self.n_patches} patches requested but the box cache holds {len(key)} per image; "
                "run `kpbench data prepare` with a larger --patches"
            )
        chosen: np.ndarray = key[: self.n_patches]
        return chosen

    def raw_batch(self, positions: list[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """The CPU half of a batch, cheap enough for the training process itself: ``pixels``
        uint8 (B, S, S, 3) (flipped where the sample is), ``boxes`` (B, N, 4) int64, ``label`` and
        ``index`` (B,). :func:`expand_batch` makes the model's inputs from it on the device."""
        indices = self.indices[np.asarray(positions, dtype=np.int64)]
        pixels = self.dataset.load_images(indices)  # (B, S, S, 3) uint8, one read of the cache
        boxes = np.empty((len(indices), self.n_patches, 4), dtype=np.int64)
        for row, index in enumerate(indices.tolist()):
            # The same draws, in the same order, for every way a sample is read (resume-safe).
            rng = np.random.default_rng(derive_seed(self.seed, self.epoch, index))
            boxes[row] = self.boxes_for(index, rng)
            if self.flip and rng.random() < 0.5:
                pixels[row] = pixels[row, :, ::-1].copy()  # image and boxes flip together
                boxes[row] = flip_boxes(boxes[row], self.size)
        return {
            "pixels": torch.from_numpy(pixels),
            "boxes": torch.from_numpy(boxes),
            "label": torch.from_numpy(self.dataset.labels[indices]),
            "index": torch.from_numpy(indices.copy()),
        }

    def __getitems__(self, positions: list[int]) -> dict[str, torch.Tensor]:
        """A DataLoader's whole batch at once (used instead of ``__getitem__`` per sample)."""
        return self.raw_batch(positions)

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        """One sample as the model sees it: :func:`expand_batch` of a batch of one."""
        batch = expand_batch(self.raw_batch([position]), torch.device("cpu"))
        return {key: value[0] for key, value in batch.items()}


def keep_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A DataLoader ``collate_fn`` for :meth:`PatchSampleDataset.__getitems__`: already a batch."""
    return batch


def expand_batch(raw: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A raw batch -> the model's inputs on ``device``: ``image`` float (B, 3, S, S) in [-1, 1],
    ``patches`` (B, N, 3, S, S), ``mask`` (B, 1, S, S) in {0, 1}, and ``boxes``, ``label``,
    ``index`` as given. Patches are cut in one batched call on the device (uint8 pixels cross
    to the device, not float patches N times larger)."""
    pixels = raw["pixels"].to(device, non_blocking=True)
    image = pixels.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()
    boxes = raw["boxes"].to(device, non_blocking=True)
    return {
        "image": image,
        "patches": cut_patches(image, boxes),
        "mask": boxes_to_mask(boxes, image.shape[-1]),
        "boxes": boxes,
        "label": raw["label"].to(device),
        "index": raw["index"].to(device),
    }


def sample_batches(samples: PatchSampleDataset, positions: Sequence[int] | np.ndarray, batch_size: int,
                   device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of the samples at ``positions`` (in that order), expanded on ``device``."""
    positions = np.asarray(positions, dtype=np.int64)
    for start in range(0, len(positions), batch_size):
        yield expand_batch(samples.raw_batch(positions[start:start + batch_size]), device)


def open_data(spec: DataSpec) -> ImageDataset:
    return open_dataset(
        spec.source,
        make_preprocess(spec.size, spec.preset, spec.crop),
        split_seed=spec.split_seed,
        test_fraction=spec.test_fraction,
    )


def patch_params(spec: DataSpec) -> PatchParams:
    """The preset's key-patch filters with the spec's N and edge model."""
    return replace(PATCH_PRESETS[spec.preset], n_patches=spec.n_patches, edge_model=spec.edge_model)


def load_boxes(dataset: ImageDataset, spec: DataSpec, workdir: WorkDir,
               workers: int | None = None, progress: bool = False,
               also_counts: Sequence[int] = ()) -> BoxTable:
    """Cached key boxes for the whole dataset (detected on first use), after attaching its
    decoded-image cache (decoded on first use), which detection then reads from."""
    if dataset.decoded_path is None:
        dataset.attach_decoded(build_decoded_cache(dataset, workdir.cache, progress=progress))
    if spec.boxes is not None:
        from kpbench.boxfile import prepare_file_boxes

        assert spec.boxes_id is not None  # set with boxes (DataSpec.__post_init__)
        return prepare_file_boxes(dataset, Path(spec.boxes), spec.boxes_id, spec.n_patches,
                                  spec.box_fill or "skip", patch_params(spec), workdir.cache)
    return prepare_boxes(dataset, patch_params(spec), workdir.cache, workers=workers,
                         progress=progress, also_counts=also_counts)


def make_sample_dataset(
    spec: DataSpec,
    split: Split,
    seed: int,
    workdir: WorkDir,
    patch_source: PatchSource = "key",
    flip: bool = True,
    dataset: ImageDataset | None = None,
    also_counts: Sequence[int] = (),
) -> PatchSampleDataset:
    """The samples of one split, with boxes from the cache (detecting them if needed, together
    with the boxes for ``also_counts`` patches per image)."""
    dataset = dataset or open_data(spec)
    boxes = load_boxes(dataset, spec, workdir, also_counts=also_counts)
    indices = dataset.split_indices(split)
    in_split = len(indices)
    indices = indices[boxes.usable_rows()[indices]]  # images a box file gave too few boxes: left out
    if len(indices) == 0:
        manifest = dataset.manifest
        why = (f"all {in_split} have fewer than {spec.n_patches} boxes in {spec.boxes}" if in_split else
               f"{manifest.num_train} train / {manifest.num_test} test")
        raise KpbenchError(f"no images in the {split} split of {dataset.source} ({why}); it needs at least "
                           "1 (add images: `kpbench data prepare` checks both splits)")
    return PatchSampleDataset(dataset, boxes, indices, seed,
                              patch_source=patch_source, flip=flip, n_patches=spec.n_patches)


@dataclass(frozen=True)
class SourceComparison:
    """The agreement of two box sources on the images both give N boxes (kpbench.box_agreement)."""

    reference: str  # box sources: "edgeboxes" or a file's id
    candidate: str
    split: str
    images: int  # compared (usable in both sources)
    agreement: BoxAgreement

    def lines(self) -> list[str]:
        def figures(summary: AgreementSummary) -> str:
            return (f"mean {summary.mean:.3f}, median {summary.median:.3f}, "
                    f">= {AGREEMENT_IOU:g}: {100 * summary.share_found:.1f} %")

        found = self.agreement.agreement
        return [f"reference {self.reference}, candidate {self.candidate}: {self.images} images of the "
                f"{self.split} split, {found.n_boxes} reference boxes",
                f"best IoU per reference box: {figures(found)}",
                f"random boxes of the candidate's sizes (floor): {figures(self.agreement.floor)}"]


def compare_box_sources(reference: DataSpec, candidate: DataSpec, workdir: WorkDir, split: Split = "all",
                        seed: int = 0) -> SourceComparison:
    """Load both sources' boxes for the same images in the same frame (the cache, detecting or
    reading the file on first use) and measure the candidate's agreement with the reference."""
    check_seed(seed)
    dataset = open_data(reference)
    tables = [load_boxes(dataset, spec, workdir, progress=True) for spec in (reference, candidate)]
    indices = dataset.split_indices(split)
    indices = indices[tables[0].usable_rows()[indices] & tables[1].usable_rows()[indices]]
    if len(indices) == 0:
        raise KpbenchError(f"no image of the {split} split has boxes in both sources")
    agreement = compare_boxes(tables[0].boxes[indices], tables[1].boxes[indices], tables[0].image_size, seed)
    return SourceComparison(reference.box_source, candidate.box_source, split, len(indices), agreement)
