"""``num_patches``: N = 1..5 key patches at test time.

The part encoder sums features over patches, so a model trained with N = 3 accepts any N. Key
boxes are taken in objectness order from a cache detected with the largest N. Variants that
cannot take another N (``cgan`` concatenates patches on channels) report why instead of a value,
and so does an N larger than a box file gives any image (kpbench.boxfile).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kpbench.boxfile import TooFewFileBoxes
from kpbench.errors import KpbenchError
from kpbench.protocol import (
    EvalContext,
    MetricAccumulator,
    Protocol,
    reconstruction_metrics,
    register_protocol,
    request_option,
)
from kpbench.results import ResultRow

NAME = "num_patches"


@dataclass(frozen=True)
class NumPatchesOptions:
    max_patches: int = request_option(5)  # N = 1..max_patches

    def __post_init__(self) -> None:
        if self.max_patches < 1:
            raise KpbenchError(f"num_patches needs max_patches >= 1, got {self.max_patches}")


def condition_name(count: int) -> str:
    return f"N={count}"


def run(context: EvalContext) -> list[ResultRow]:
    accumulator = MetricAccumulator()
    rows: list[ResultRow] = []
    trained_n = context.data_spec.n_patches
    counts = list(range(1, context.options.of(NAME, NumPatchesOptions).max_patches + 1))
    for count in counts:
        if count != trained_n and not context.run.supports_variable_n:
            for metric in context.reconstruction_metric_names:
                rows.append(context.row(NAME, condition_name(count), metric, math.nan, 0,
                                        note=f"{context.variant} takes exactly N={trained_n} patches"))
            continue
        try:
            samples = context.samples("test", n_patches=count, also_counts=counts)  # one detection pass
        except TooFewFileBoxes as error:  # a box file with fewer boxes per image than N
            for metric in context.reconstruction_metric_names:
                rows.append(context.row(NAME, condition_name(count), metric, math.nan, 0, note=str(error)))
            continue
        for number, batch in enumerate(context.batches(samples)):
            generated, mask = context.generate(batch["patches"], tag=f"{NAME}-{number}")
            accumulator.add(condition_name(count),
                            reconstruction_metrics(generated, batch["image"], mask, batch["mask"]),
                            ids=batch["sample_id"])
    return accumulator.rows(context, NAME) + rows


PROTOCOL = register_protocol(Protocol(
    name=NAME,
    description="The number of key patches given at test time, N = 1..5, for a model trained "
    "with a fixed N. The true mask is the union of the N boxes used, so mask IoU measures "
    "whether every given part is placed.",
    run=run,
    options=NumPatchesOptions,
    order=50,
    headline_condition="N=3",
    report_description=
    "N = 1..5 input patches at test time. The summed part encoder accepts any N; a model with "
    "a fixed input layout cannot.",
))
