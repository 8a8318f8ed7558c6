"""``noise``: Gaussian noise of increasing sigma added to the input patches.

Two settings: noise on all N patches, and on one patch only (the first). A ``swapped`` condition
gives each image another image's patches: the level a metric falls to when the input carries no
information about the image, against which robustness is read (a model whose output ignores its
input looks perfectly "robust"). Patches live in [-1, 1]; noisy patches are clipped back to
that range. The noise is seeded, so a re-run gives the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kpbench.baselines import swap
from kpbench.protocol import (
    EvalContext,
    MetricAccumulator,
    Protocol,
    reconstruction_metrics,
    register_protocol,
    request_option,
)
from kpbench.results import ResultRow

NAME = "noise"
TARGETS = ("all", "one")
SWAPPED = "swapped"


@dataclass(frozen=True)
class NoiseOptions:
    # Noise standard deviations on [-1, 1] patches.
    sigmas: tuple[float, ...] = request_option((0.0, 0.05, 0.1, 0.2, 0.4, 0.8))


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
    batches = list(context.batches(context.samples("test")))  # cut once, used by every condition
    # The floor of the curves: each image given the next image's patches (no noise). Noise that
    # brings a metric down to this level has destroyed all the information the input carried.
    for number, batch in enumerate(batches):
        generated, mask = context.generate(swap(batch["patches"]), tag=f"{NAME}-{number}")
        accumulator.add(SWAPPED, reconstruction_metrics(generated, batch["image"], mask, batch["mask"]),
                        ids=batch["sample_id"])
    clean: dict[int, dict[str, torch.Tensor]] = {}  # sigma 0 is the same input for every target
    for target in TARGETS:
        for sigma in context.options.of(NAME, NoiseOptions).sigmas:
            condition = condition_name(target, sigma)
            for number, batch in enumerate(batches):
                if sigma == 0 and number in clean:
                    accumulator.add(condition, clean[number], ids=batch["sample_id"])
                    continue
                noisy = add_noise(batch["patches"], sigma, target,
                                  context.noise_generator(f"{NAME}-{condition}-{number}"))
                # Same z for every sigma: only the input noise changes along the curve.
                generated, mask = context.generate(noisy, tag=f"{NAME}-{number}")
                values = reconstruction_metrics(generated, batch["image"], mask, batch["mask"])
                accumulator.add(condition, values, ids=batch["sample_id"])
                if sigma == 0:
                    clean[number] = values
    return accumulator.rows(context, NAME)


PROTOCOL = register_protocol(Protocol(
    name=NAME,
    description="Gaussian noise of increasing sigma (on the [-1, 1] pixel scale) added to all "
    "input patches, or to one patch only. 'swapped' gives each image another image's patches: "
    "the floor where the input says nothing about the image. A robust model degrades gradually "
    "from sigma 0 towards that floor; one that sits at the floor at sigma 0 ignores its input.",
    run=run,
    options=NoiseOptions,
    order=40,
    report_description=
    "Gaussian noise of increasing sigma added to the input patches (all of them, or one "
    "only). Read them against the swapped-input floor: a curve that starts at the floor "
    "belongs to a model that ignores its input, not to a robust one.",
))
