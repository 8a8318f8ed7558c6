"""``combination``: patches taken from two or three different images.

For test image i, patch j comes from image ``i + (j mod k)`` of the batch (k = 2 or 3 source
images), at its own box. There is no single real image to compare with, so the metrics are
per part: the mask IoU against the union of each part's own box, and the appearance L1 of the
generated image inside each part's box against that part's source image (averaged over parts).
"""

from __future__ import annotations

import torch

from kpbench import metrics
from kpbench.grids import save_grid
from kpbench.patches import boxes_to_mask
from kpbench.protocol import EvalContext, MetricAccumulator, Protocol, register_protocol
from kpbench.results import ResultRow

NAME = "combination"
SOURCE_COUNTS = (2, 3)


def mix_sources(batch_size: int, n_patches: int, sources: int) -> torch.Tensor:
    """(B, N) index of the image each patch is taken from: image (i + j mod k) mod B."""
    rows = torch.arange(batch_size)[:, None]
    offsets = torch.arange(n_patches)[None, :] % sources
    return (rows + offsets) % batch_size


def run(context: EvalContext) -> list[ResultRow]:
    accumulator = MetricAccumulator()
    for sources in SOURCE_COUNTS:
        condition = f"images={sources}"
        for number, batch in enumerate(context.batches(context.samples("test"))):
            size, n = batch["patches"].shape[0], batch["patches"].shape[1]
            if size < sources:
                continue  # a last batch too small to mix this many images
            origin = mix_sources(size, n, sources).to(batch["patches"].device)  # (B, N)
            part = torch.arange(n, device=origin.device)[None, :].expand(size, n)
            patches = batch["patches"][origin, part]  # (B, N, 3, S, S)
            boxes = batch["boxes"][origin, part]  # (B, N, 4), each in its source image's frame
            generated, mask = context.generate(patches, tag=f"{NAME}-{sources}-{number}")
            side = generated.shape[-1]
            part_masks = torch.stack([
                torch.stack([boxes_to_mask(boxes[b, j:j + 1], side) for j in range(n)])
                for b in range(size)
            ]).to(generated.device)  # (B, N, 1, S, S)
            appearance = torch.stack([
                metrics.appearance_l1(generated, batch["image"][origin[:, j]], part_masks[:, j])
                for j in range(n)
            ]).mean(0)  # (B,)
            values = {"appearance_l1": appearance}
            if mask is not None:
                union = part_masks.amax(dim=1)  # (B, 1, S, S)
                values["mask_iou"] = metrics.mask_iou(mask, union)
            accumulator.add(condition, values, ids=batch["sample_id"])
            if number == 0:
                columns = [patches[:8], generated[:8]] + ([mask[:8]] if mask is not None else [])
                save_grid(context.files.grids(NAME) / f"{sources}-images.png", columns)
    return accumulator.rows(context, NAME)


PROTOCOL = register_protocol(Protocol(
    name=NAME,
    description="Patches taken from two or three different images. Per part: mask IoU against "
    "the union of the parts' own boxes, and appearance L1 inside each part's box against the "
    "image it came from. Shows whether the model composes parts it never saw together.",
    run=run,
    order=60,
    report_description=
    "Patches taken from two or three different images and combined into one input: can the "
    "model compose parts it never saw together?",
))
