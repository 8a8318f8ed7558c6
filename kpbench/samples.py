"""Training / evaluation samples: an image with its N patches and true mask, as tensors.

Boxes come from the box cache (detected once per dataset), so loading a sample costs one image
decode and N crops: data workers never run EdgeBoxes. Random choices (horizontal flip, random
patch positions) are pure functions of (seed, epoch, index), so data order and augmentation
repeat exactly on resume and in every worker process.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from kpbench.boxcache import BoxTable, prepare_boxes
from kpbench.data import ImageDataset, Split, make_preprocess, open_dataset
from kpbench.errors import KpbenchError
from kpbench.patches import PATCH_PRESETS, PatchParams, boxes_to_mask, crop_patches, flip_boxes, random_boxes
from kpbench.paths import WorkDir
from kpbench.runtime import derive_seed

PatchSource = Literal["key", "random"]
PATCH_SOURCES: tuple[str, ...] = ("key", "random")


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (S, S, 3) -> float (3, S, S) in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """float (3, S, S) in [-1, 1] -> uint8 (S, S, 3)."""
    scaled = (tensor.detach().float().clamp(-1, 1) + 1.0) * 127.5
    return scaled.round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


@dataclass(frozen=True)
class DataSpec:
    """Everything that decides which samples a run sees; recorded in every run's config."""

    source: str = "builtin"
    size: int = 64
    preset: str = "default"
    crop: int | None = None
    split_seed: int = 0
    test_fraction: float = 0.1
    n_patches: int = 3
    edge_model: str | None = None


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
        return key[: self.n_patches]

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        index = int(self.indices[position])
        rng = np.random.default_rng(derive_seed(self.seed, self.epoch, index))
        boxes = self.boxes_for(index, rng)
        image = image_to_tensor(self.dataset.load_image(index))
        if self.flip and rng.random() < 0.5:
            # Flip image and boxes together; mask and patches are derived from both below.
            image = image.flip(-1)
            boxes = flip_boxes(boxes, self.size)
        boxes_tensor = torch.as_tensor(np.asarray(boxes), dtype=torch.int64)
        return {
            "image": image,
            "patches": crop_patches(image, boxes_tensor),
            "mask": boxes_to_mask(boxes_tensor, self.size),
            "boxes": boxes_tensor,
            "label": torch.tensor(int(self.dataset.labels[index])),
            "index": torch.tensor(index),
        }


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
               workers: int | None = None, progress: bool = False) -> BoxTable:
    """Cached key boxes for the whole dataset (detected on first use)."""
    return prepare_boxes(dataset, patch_params(spec), workdir.cache, workers=workers,
                         progress=progress)


def make_sample_dataset(
    spec: DataSpec,
    split: Split,
    seed: int,
    workdir: WorkDir,
    patch_source: PatchSource = "key",
    flip: bool = True,
    dataset: ImageDataset | None = None,
) -> PatchSampleDataset:
    """The samples of one split, with boxes from the cache (detecting them if needed)."""
    dataset = dataset or open_data(spec)
    boxes = load_boxes(dataset, spec, workdir)
    return PatchSampleDataset(dataset, boxes, dataset.split_indices(split), seed,
                              patch_source=patch_source, flip=flip, n_patches=spec.n_patches)
