"""``patches``: the same trained model fed key patches vs random patches.

Random patches have the same count and the same size distribution as the key patches (their
widths and heights are drawn from the dataset's key boxes) but uniform positions, so the
comparison isolates *where* the patches come from.
"""

from __future__ import annotations

from kpbench.grids import draw_boxes, save_grid
from kpbench.protocol import (
    EvalContext,
    MetricAccumulator,
    Protocol,
    reconstruction_metrics,
    register_protocol,
)
from kpbench.results import ResultRow

NAME = "patches"


def run(context: EvalContext) -> list[ResultRow]:
    accumulator = MetricAccumulator()
    for source in ("key", "random"):
        for number, batch in enumerate(context.batches(context.samples("test", patch_source=source))):
            generated, mask = context.generate(batch["patches"], tag=f"{NAME}-{source}-{number}")
            accumulator.add(source, reconstruction_metrics(generated, batch["image"], mask, batch["mask"]))
            if number == 0:
                columns = [draw_boxes(batch["image"][:8], batch["boxes"][:8]), batch["patches"][:8],
                           generated[:8]]
                if mask is not None:
                    columns.append(mask[:8])
                save_grid(context.run_dir / "results" / NAME / f"{source}.png", columns)
    return accumulator.rows(context, NAME)


PROTOCOL = register_protocol(Protocol(
    name=NAME,
    description="Key patches (EdgeBoxes) vs random patches of the same count and size "
    "distribution, fed to the same trained model. Mask IoU against the mask of the patches "
    "actually used; appearance L1 inside that mask; PSNR/SSIM against the real image.",
    run=run,
))
