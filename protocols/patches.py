"""``patches``: the same trained model fed key patches vs random patches, with its floors.

Random patches have the same count and the same size distribution as the key patches (their
widths and heights are drawn from the dataset's key boxes) but uniform positions, so the
comparison isolates *where* the patches come from. This is a test-time swap: a distribution
shift for a model trained on key patches.

Next to the run, the same rows for two baselines that need no learning (kpbench.baselines):
``baseline:prior_mask`` (mask IoU of the mean training mask) and ``baseline:nearest_neighbour``
(the training image whose patches are closest, with its own mask). Under key patches the run's
``image_dependence`` and ``mask_dependence`` say how much its output changes when each image's
patches are swapped for another image's (~0: the output ignores the input), and
``image_order_dependence`` / ``mask_order_dependence`` how much it changes when its own patches
come in another order (0: order-invariant, as the paper's Siamese sum is by construction and the
depth- and Siamese-concatenation of its Fig. 4(b, c) are not). A grid puts
generated images next to their nearest training images (a memorisation check; not in the paper's
main text).
"""

from __future__ import annotations

import math

import torch

from kpbench import metrics
from kpbench.baselines import (
    NEAREST_NEIGHBOUR,
    PRIOR_MASK,
    NearestNeighbour,
    input_dependence,
    prior_mask_batch,
    swap,
)
from kpbench.grids import draw_boxes, save_grid
from kpbench.metricinfo import register_metric
from kpbench.protocol import (
    EvalContext,
    MetricAccumulator,
    Protocol,
    reconstruction_metrics,
    register_protocol,
)
from kpbench.results import ResultRow

NAME = "patches"
GRID_ROWS = 8

register_metric("image_dependence", "image dependence", "higher", order=60, bounds=(0.0, math.inf))
register_metric("mask_dependence", "mask dependence", "higher", order=70, bounds=(0.0, math.inf))
# Change under a permutation of the patches: 0 for an order-invariant model (the paper's aim).
register_metric("image_order_dependence", "image order dependence", "lower", order=80,
                bounds=(0.0, math.inf))
register_metric("mask_order_dependence", "mask order dependence", "lower", order=90,
                bounds=(0.0, math.inf))


def run(context: EvalContext) -> list[ResultRow]:
    accumulator = MetricAccumulator()
    prior = context.prior_mask()
    neighbour = context.nearest_neighbour()
    for source in ("key", "random"):
        for number, batch in enumerate(context.batches(context.samples("test", patch_source=source))):
            tag = f"{NAME}-{source}-{number}"
            patches, real, true_mask = batch["patches"], batch["image"], batch["mask"]
            ids = batch["sample_id"]  # (B,) dataset indices: the same images for every run
            generated, mask = context.generate(patches, tag=tag)
            accumulator.add(source, reconstruction_metrics(generated, real, mask, true_mask), ids=ids)
            prior_iou = metrics.mask_iou(prior_mask_batch(prior, true_mask), true_mask)
            accumulator.add(source, {"mask_iou": prior_iou}, variant=PRIOR_MASK, ids=ids)
            nn_image, nn_mask = neighbour.by_patches(patches)
            accumulator.add(source, reconstruction_metrics(nn_image, real, nn_mask, true_mask),
                            variant=NEAREST_NEIGHBOUR, ids=ids)
            if source == "key" and len(patches) >= 2:
                # Same z (same tag): only the patches change.
                swapped_image, swapped_mask = context.generate(swap(patches), tag=tag)
                dependence = {"image_dependence": input_dependence(generated, swapped_image, real)}
                if mask is not None and swapped_mask is not None:
                    dependence["mask_dependence"] = input_dependence(mask, swapped_mask, true_mask)
                dependence |= _order_dependence(context, patches, generated, mask, real, true_mask, tag)
                accumulator.add(source, dependence, ids=ids)
            if number == 0:
                _save_grids(context, source, batch, generated, mask, nn_image, neighbour)
    return accumulator.rows(context, NAME)


def _order_dependence(context: EvalContext, patches: torch.Tensor, generated: torch.Tensor,
                      mask: torch.Tensor | None, real: torch.Tensor, true_mask: torch.Tensor,
                      tag: str) -> dict[str, torch.Tensor]:
    """The output's change when each image's own patches come in another order (rolled by one
    slot: every patch moves), on the scale of ``input_dependence`` (0 = order-invariant, 1 = as
    much change as between real images). Same z, so only the order changes. Empty for N < 2."""
    if patches.shape[1] < 2:
        return {}
    permuted_image, permuted_mask = context.generate(patches.roll(1, dims=1), tag=tag)
    values = {"image_order_dependence": input_dependence(generated, permuted_image, real)}
    if mask is not None and permuted_mask is not None:
        values["mask_order_dependence"] = input_dependence(mask, permuted_mask, true_mask)
    return values


def _save_grids(context: EvalContext, source: str, batch: dict[str, torch.Tensor], generated: torch.Tensor,
                mask: torch.Tensor | None, nn_image: torch.Tensor, neighbour: NearestNeighbour) -> None:
    rows = slice(0, GRID_ROWS)
    folder = context.files.grids(NAME)
    columns = [draw_boxes(batch["image"][rows], batch["boxes"][rows]), batch["patches"][rows],
               generated[rows]]
    if mask is not None:
        columns.append(mask[rows])
    columns.append(nn_image[rows])  # the nearest-neighbour baseline's answer
    save_grid(folder / f"{source}.png", columns)
    if source == "key":
        save_grid(folder / "memorisation.png", [generated[rows], neighbour.by_image(generated[rows])])


PROTOCOL = register_protocol(Protocol(
    name=NAME,
    description="Key patches (EdgeBoxes) vs random patches of the same count and size "
    "distribution, fed to the same trained model (a test-time swap). Mask IoU against the mask "
    "of the patches actually used; appearance L1 inside that mask; PSNR/SSIM against the real "
    "image. Floors: the prior mask (mean training mask) and the nearest training image by patch "
    "pixels. Input dependence: the output's change when patches are swapped between images, "
    "relative to the real images' (0 = ignores its input). Order dependence: the same change when "
    "each image's own patches are fed in another order (0 = order-invariant, the reason the paper "
    "gives for its Siamese sum). Grids: real with boxes, patches, "
    "generated, mask, nearest-neighbour answer; memorisation: generated next to the closest "
    "training image.",
    run=run,
    order=10,
    summary=True,
    headline_condition="key",
    report_description=
    "The same trained model fed its key patches (EdgeBoxes) versus random patches of the same "
    "count and size distribution. A model that relies on meaningful parts loses quality with "
    "random ones.",
))
