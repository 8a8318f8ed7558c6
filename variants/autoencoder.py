"""The full generator without a discriminator, trained by L1 terms only."""

from dataclasses import replace

from kpbench.variant import register_variant

from .full import FULL

AUTOENCODER = register_variant(
    replace(
        FULL,
        name="autoencoder",
        description="Full generator, no discriminator: spatial + appearance + whole-image L1 "
        "reconstruction |G_I(x) - y|_1.",
        discriminator="none",
        fake_kinds=(),
        adversarial_weight=0.0,
        reconstruction_weight=1.0,
    ),
    order=40,
)
