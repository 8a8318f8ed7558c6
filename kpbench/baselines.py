"""Floors that need no learning, so that every number has something to be read against.

- **prior mask** (:func:`kpbench.diagnostics.prior_mask`): the mean training mask thresholded at
  0.5, the same mask for every input; the floor for mask IoU.
- **nearest neighbour** (:class:`NearestNeighbour`): for a test input, the training image whose
  key patches are closest in raw pixels (each patch average-pooled to 8x8, concatenated in
  objectness order), with that image's own true mask; the floor for the image metrics.
- **input dependence** (:func:`input_dependence`): how much a model's output changes when each
  image's patches are swapped for another image's, relative to how much the real images (and
  true masks) differ. A model that ignores its input scores ~0; robustness to noise means
  something only when this is clearly above 0.
- **memorisation check** (:meth:`NearestNeighbour.by_image`): each generated image next to the
  training image closest to it in pixels (a common GAN check; the paper's main text shows none).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kpbench.samples import PatchSampleDataset, expand_batch, sample_batches

PRIOR_MASK = "baseline:prior_mask"
NEAREST_NEIGHBOUR = "baseline:nearest_neighbour"
FEATURE_SIDE = 8  # raw-pixel features: each patch pooled to 8x8
MEMORISATION_SIDE = 16  # the pixel space of the memorisation check


def patch_pixels(patches: Tensor) -> Tensor:
    """(B, N, 3, S, S) -> (B, N * 3 * 8 * 8) average-pooled pixels, patches in input order."""
    b, n = patches.shape[:2]
    return F.adaptive_avg_pool2d(patches.flatten(0, 1).float(), FEATURE_SIDE).reshape(b, -1)


def swap(tensor: Tensor) -> Tensor:
    """Each item paired with the next one of the batch (a derangement for B >= 2): (B, ...) -> (B, ...)."""
    return tensor.roll(1, 0)


def input_dependence(own: Tensor, swapped: Tensor, real: Tensor) -> Tensor:
    """Per-sample change of the output under a swap of inputs, relative to the real data's:
    mean |own - swapped| / mean |real - swap(real)| over the batch -> (B,).

    ``own``/``swapped``: outputs (B, C, S, S) for each image's own patches and for the next image's;
    ``real``: the matching real images or true masks (B, C, S, S). Normalising by the batch's
    mean real difference keeps the scale comparable across datasets (1 = outputs differ as much
    as the real images do)."""
    change = (own.float() - swapped.float()).abs().flatten(1).mean(1)
    scale = (real.float() - swap(real).float()).abs().flatten(1).mean(1).mean().clamp(min=1e-8)
    return change / scale


@dataclass
class NearestNeighbour:
    """The training split as patch features and small images; queries return training items."""

    samples: PatchSampleDataset  # the training split (no flips)
    features: Tensor  # (M, N * 3 * 8 * 8) patch pixels
    pixels: Tensor  # (M, 3 * 16 * 16) whole images, for the memorisation check

    @classmethod
    def fit(cls, train_samples: PatchSampleDataset, batch_size: int = 64) -> NearestNeighbour:
        features, pixels = [], []
        for batch in sample_batches(train_samples, range(len(train_samples)), batch_size,
                                    torch.device("cpu")):
            features.append(patch_pixels(batch["patches"]))
            pixels.append(image_pixels(batch["image"]))
        return cls(train_samples, torch.cat(features), torch.cat(pixels))

    def _items(self, positions: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
        batch = expand_batch(self.samples.raw_batch(positions.cpu().numpy()), device)
        return batch["image"], batch["mask"]

    def by_patches(self, patches: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N, 3, S, S) -> the training images (B, 3, S, S) whose key patches are closest, and
        their true masks (B, 1, S, S)."""
        return self._items(torch.cdist(patch_pixels(patches.cpu()), self.features).argmin(1), patches.device)

    def by_image(self, images: Tensor) -> Tensor:
        """(B, 3, S, S) -> the closest training images in 16x16 pixels (the memorisation check)."""
        return self._items(torch.cdist(image_pixels(images.cpu()), self.pixels).argmin(1), images.device)[0]


def image_pixels(images: Tensor) -> Tensor:
    """(B, 3, S, S) -> (B, 3 * 16 * 16) average-pooled pixels."""
    return F.adaptive_avg_pool2d(images.float(), MEMORISATION_SIDE).flatten(1)


def prior_mask_batch(prior: Tensor, like: Tensor) -> Tensor:
    """The prior mask (1, S, S) repeated for a batch shaped like ``like`` (B, 1, S, S)."""
    return prior.to(like.device, like.dtype).expand_as(like)
