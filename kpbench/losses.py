"""Loss terms of the paper (equations (1)-(4)) and the ablations, one named function each.

Shapes: images (B, 3, S, S) in [-1, 1], masks (B, 1, S, S) in [0, 1], logits (B,).
L1 terms are summed over each sample's pixels and averaged over the batch ("per-sample sums"),
so their weight lambda means the same thing at every batch size (see :func:`lambda_at`).
All terms are computed in float32, also when the networks ran under autocast.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from kpbench.nets import GeneratorOutput
    from kpbench.variant import FakeKind, VariantSpec


def l1_per_sample(a: Tensor, b: Tensor) -> Tensor:
    """sum over (C, H, W) of |a - b|, averaged over the batch -> scalar."""
    return (a.float() - b.float()).abs().flatten(1).sum(1).mean()


def spatial_loss(pred_mask: Tensor, mask: Tensor) -> Tensor:
    """Equation (2): |G_M(x) - M|_1."""
    return l1_per_sample(pred_mask, mask)


def appearance_loss(image: Tensor, weight_mask: Tensor, real: Tensor, mask: Tensor) -> Tensor:
    """Equation (3): |G_I(x) * G_M(x) - y * M|_1. ``weight_mask`` is G_M(x) in the paper; the
    ``nomask`` ablation passes the true mask M, giving |G_I(x) * M - y * M|_1."""
    return l1_per_sample(image.float() * weight_mask.float(), real * mask)


def reconstruction_loss(image: Tensor, real: Tensor) -> Tensor:
    """Whole-image L1 |G_I(x) - y|_1 (autoencoder and cGAN ablations)."""
    return l1_per_sample(image, real)


def bce_real(logits: Tensor) -> Tensor:
    """BCE against label 1 (real), averaged over the batch."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def bce_fake(logits: Tensor) -> Tensor:
    """BCE against label 0 (fake), averaged over the batch."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating generator loss: -log D(G_I(x)) = BCE(D(G_I(x)), real)."""
    return bce_real(fake_logits)


# Equation (4)'s fake images from g = G_I(x), the real y, the true mask M and another real image
# y' from outside the mini-batch, one per kpbench.variant.FakeKind.
FakeMaker = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
FAKE_KINDS: dict[FakeKind, FakeMaker] = {
    "generated": lambda g, y, m, y2: g,
    "generated_in_mask": lambda g, y, m, y2: m * g + (1 - m) * y,
    "generated_outside_mask": lambda g, y, m, y2: (1 - m) * g + m * y,
    "other_in_mask": lambda g, y, m, y2: m * y2 + (1 - m) * y,
    "other_outside_mask": lambda g, y, m, y2: (1 - m) * y2 + m * y,
}


def make_fakes(kinds: tuple[FakeKind, ...], generated: Tensor, real: Tensor, mask: Tensor, other_real: Tensor
               ) -> dict[str, Tensor]:
    """The discriminator's fake images, ``{kind: (B, 3, S, S)}``. Pass ``generated`` detached:
    the discriminator step must not build or reach the generator's graph."""
    mask = mask.to(real.dtype)
    generated = generated.to(real.dtype)
    return {kind: FAKE_KINDS[kind](generated, real, mask, other_real) for kind in kinds}


def discriminator_loss(real_logits: Tensor, fake_logits: dict[str, Tensor]
                       ) -> tuple[Tensor, dict[str, Tensor]]:
    """Equation (4) as a loss to minimise: BCE(D(y), 1) + sum over kinds of BCE(D(fake), 0).
    Returns the total and each term (keys ``real`` and the fake kinds)."""
    parts = {"real": bce_real(real_logits)}
    parts.update({kind: bce_fake(logits) for kind, logits in fake_logits.items()})
    return torch.stack(list(parts.values())).sum(), parts


@dataclass(frozen=True)
class LossInputs:
    """What a variant's own loss term (kpbench.variant.LossTerm) is computed from."""

    out: GeneratorOutput  # image (B, 3, S, S), mask (B, 1, S, S) or None
    real: Tensor  # (B, 3, S, S) in [-1, 1]
    mask: Tensor  # (B, 1, S, S) the true mask M
    patches: Tensor | None  # (B, N, 3, S, S)
    z: Tensor | None  # (B, z_dim)


def generator_loss(
    spec: VariantSpec,
    out: GeneratorOutput,
    real: Tensor,
    mask: Tensor,
    lam: float,
    fake_logits: Tensor | None,
    patches: Tensor | None = None,
    z: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Equation (1) for the generator: the spec's active terms, L1 terms scaled by ``lam``, and
    the variant's own terms (``spec.loss_terms``, scaled by ``lam`` when they say so).
    Returns the weighted total and each term's unweighted value."""
    terms: dict[str, Tensor] = {}
    total = real.new_zeros(())
    own = {term.name: term for term in spec.loss_terms}
    for name, weight in spec.generator_terms.items():
        if name == "adversarial":
            assert fake_logits is not None, "the adversarial term needs D(G_I(x))"
            value = generator_adversarial_loss(fake_logits)
            total = total + weight * value
        elif name in own:
            value = own[name].compute(LossInputs(out, real, mask, patches, z)).float()
            total = total + (lam if own[name].scaled else 1.0) * weight * value
        else:
            value = _l1_term(name, spec, out, real, mask)
            total = total + lam * weight * value
        terms[name] = value
    return total, terms


def _l1_term(name: str, spec: VariantSpec, out: GeneratorOutput, real: Tensor, mask: Tensor) -> Tensor:
    if name == "spatial":
        assert out.mask is not None
        return spatial_loss(out.mask, mask)
    if name == "appearance":
        weight_mask = mask if spec.appearance_mask == "true" else out.mask
        assert weight_mask is not None
        return appearance_loss(out.image, weight_mask, real, mask)
    if name == "reconstruction":
        return reconstruction_loss(out.image, real)
    raise ValueError(f"unknown loss term {name!r}")


def lambda_at(epoch: int, start: float, end: float, decay_epochs: int) -> float:
    """lambda_1 = lambda_2 at ``epoch`` (0-based): geometric from ``start`` at epoch 0 to ``end``
    at epoch ``decay_epochs - 1``, then held at ``end``.

    The paper decays 1e-2 -> 1e-4 per epoch; the authors' code applies that to L1 terms summed over
    the whole batch (``L1Loss(size_average=False)``, ``np.logspace(-2, -4, epochs)``). With
    per-sample sums averaged over the batch that is 64x larger at batch 64: 0.64 -> 0.0064.
    The spec's defaults use the latter and keep it at every batch size, so a small-batch CPU run
    balances L1 and adversarial terms as the paper's batch-64 run does.
    """
    if decay_epochs <= 1:
        return end if epoch > 0 else start
    progress = min(epoch, decay_epochs - 1) / (decay_epochs - 1)
    return start * math.exp(progress * math.log(end / start))
