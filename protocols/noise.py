"""``noise``: Gaussian noise of increasing sigma added to the input patches.

Two settings, as in the paper's robustness figure: noise on all N patches, and on one patch only
(the first). Patches live in [-1, 1]; noisy patches are clipped back to that range. The noise is
seeded, so a re-run gives the same rows.
"""

from __future__ import annotations

import torch

from kpbench.protocol import (
    EvalContext,
    MetricAccumulator,
    Protocol,
    reconstruction_metrics,
    register_protocol,
)
from kpbench.results import ResultRow

NAME = "noise"
TARGETS = ("all", "one")


def add_noise(patches: torch.Tensor, sigma: float, target: str, generator: torch.Generator) -> torch.Tensor:
    """patches (B, N, 3, S, S) -> noisy copy; ``target`` "all" or "one" (patch 0 only)."""
    noise = torch.randn(patches.shape, generator=generator).to(patches.device) * sigma
    if target == "one":
        noise[:, 1:] = 0
    return (patches + noise).clamp(-1.0, 1.0)


def condition_name(target: str, sigma: float) -> str:
    return f"{target} sigma={sigma:g}"


def run(context: EvalContext) -> list[ResultRow]:
    accumulator = MetricAccumulator()
    samples = context.samples("test")
    for target in TARGETS:
        for sigma in context.options.sigmas:
            condition = condition_name(target, sigma)
            for number, batch in enumerate(context.batches(samples)):
                noisy = add_noise(batch["patches"], sigma, target,
                                  context.noise_generator(f"{NAME}-{condition}-{number}"))
                # Same z for every sigma: only the input noise changes along the curve.
                generated, mask = context.generate(noisy, tag=f"{NAME}-{number}")
                accumulator.add(condition, reconstruction_metrics(generated, batch["image"], mask,
                                                                  batch["mask"]))
    return accumulator.rows(context, NAME)


PROTOCOL = register_protocol(Protocol(
    name=NAME,
    description="Gaussian noise of increasing sigma (on the [-1, 1] pixel scale) added to all "
    "input patches, or to one patch only. A robust model degrades gracefully as sigma grows.",
    run=run,
))
