"""Training diagnostics on a fixed held-out batch, and the baselines they are read against.

Every ``diagnostics_every`` steps the trainer runs the generator (eval mode, fixed z) on the
first test images and logs, per sample and averaged:

    mask_iou            IoU of the thresholded predicted mask with the true mask
    prior_mask_iou      IoU of the *prior mask* (mean training mask >= 0.5) with the true mask
    mask_coverage       fraction of pixels the predicted mask covers (>= 0.5); true_coverage alike
    spatial_l1          |G_M(x) - M|_1 summed per sample, as the spatial loss
    spatial_l1_empty    the same for an all-zero mask (= the true mask's area)
    spatial_l1_prior    the same for the prior mask
    appearance_l1       |G_I(x) * A - y * M|_1 summed per sample, as the appearance loss

A mask decoder that has learned nothing beats neither the empty nor the prior mask; one whose
IoU stays below the prior's for a sustained stretch has collapsed (:class:`CollapseWatch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from kpbench.losses import l1_per_sample
from kpbench.metrics import mask_iou
from kpbench.patches import boxes_to_mask
from kpbench.runtime import derive_seed

if TYPE_CHECKING:
    from kpbench.samples import PatchSampleDataset

DIAGNOSTIC_SAMPLES = 64  # held-out images in the fixed diagnostic batch
MASK_THRESHOLD = 0.5


def prior_mask(boxes: np.ndarray, size: int) -> Tensor:
    """The mask a model that ignores its input would best predict pixel by pixel: the mean of the
    true masks of ``boxes`` (M, N, 4) thresholded at 0.5 -> (1, size, size) in {0, 1}."""
    masks = torch.stack([boxes_to_mask(image_boxes, size) for image_boxes in boxes])  # (M, 1, S, S)
    return (masks.mean(0) >= MASK_THRESHOLD).float()


def dataset_prior_mask(samples: PatchSampleDataset) -> Tensor:
    """Prior mask of a split's key boxes (no image is decoded: the boxes come from the cache)."""
    boxes = samples.boxes.boxes[samples.indices][:, : samples.n_patches]
    return prior_mask(boxes, samples.size)


@dataclass
class DiagnosticBatch:
    """The fixed inputs: patches (B, N, 3, S, S), image, true mask, z (B, z_dim), prior (1, S, S)."""

    patches: Tensor
    image: Tensor
    mask: Tensor
    z: Tensor
    prior: Tensor

    @classmethod
    def from_samples(cls, test_samples: PatchSampleDataset, train_samples: PatchSampleDataset, seed: int,
                     z_dim: int,
                     count: int = DIAGNOSTIC_SAMPLES) -> DiagnosticBatch:
        from kpbench.samples import expand_batch

        batch = expand_batch(test_samples.raw_batch(np.arange(min(count, len(test_samples)))),
                             torch.device("cpu"))
        z = torch.rand(len(batch["image"]), z_dim, generator=torch.Generator().manual_seed(
            derive_seed(seed, "diagnostics-z"))) * 2 - 1
        return cls(
            patches=batch["patches"],
            image=batch["image"],
            mask=batch["mask"],
            z=z,
            prior=dataset_prior_mask(train_samples),
        )


@torch.no_grad()
def measure(generator: torch.nn.Module, batch: DiagnosticBatch, device: torch.device,
            true_appearance_mask: bool = False) -> dict[str, float]:
    """The diagnostics of ``generator`` on ``batch`` (eval mode; the mode is restored)."""
    was_training = generator.training
    generator.eval()
    try:
        out = generator(batch.patches.to(device), batch.z.to(device))
    finally:
        generator.train(was_training)
    image = out.image.float().cpu()
    mask = batch.mask
    prior = batch.prior.expand_as(mask)
    values: dict[str, float] = {
        "prior_mask_iou": mask_iou(prior, mask).mean().item(),
        "true_coverage": (mask >= MASK_THRESHOLD).float().mean().item(),
        "spatial_l1_empty": l1_per_sample(torch.zeros_like(mask), mask).item(),
        "spatial_l1_prior": l1_per_sample(prior, mask).item(),
    }
    weight = mask
    if out.mask is not None:
        predicted = out.mask.float().cpu()
        values |= {
            "mask_iou": mask_iou(predicted, mask).mean().item(),
            "mask_coverage": (predicted >= MASK_THRESHOLD).float().mean().item(),
            "spatial_l1": l1_per_sample(predicted, mask).item(),
        }
        if not true_appearance_mask:
            weight = predicted
    values["appearance_l1"] = l1_per_sample(image * weight, batch.image * mask).item()
    return values


@dataclass
class CollapseWatch:
    """Warns once when the predicted masks' IoU has stayed below the prior mask's for at least
    ``patience_steps`` steps and ``min_checks`` consecutive diagnostics."""

    patience_steps: int
    min_checks: int = 4
    below_since: int | None = None
    checks_below: int = 0
    warned: bool = False
    history: list[tuple[int, float, float]] = field(default_factory=list)

    def update(self, step: int, values: dict[str, float]) -> str | None:
        """Feed one diagnostics entry; returns a warning message the first time collapse is seen."""
        if "mask_iou" not in values:
            return None
        below = values["mask_iou"] < values["prior_mask_iou"]
        if not below:
            self.below_since, self.checks_below = None, 0
            return None
        if self.below_since is None:
            self.below_since = step
        self.checks_below += 1
        stretch = step - self.below_since
        if (not self.warned and self.checks_below >= self.min_checks
                and stretch >= self.patience_steps):
            self.warned = True
            return (f"mask IoU on the held-out batch has stayed below the prior mask's from step "
                    f"{self.below_since} to {step} ({values['mask_iou']:.3f} vs "
                    f"{values['prior_mask_iou']:.3f}, predicted coverage {values['mask_coverage']:.3f} vs "
                    f"true {values['true_coverage']:.3f}): the masks may have collapsed")
        return None
