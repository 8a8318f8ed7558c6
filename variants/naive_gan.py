"""The full model with the plain GAN loss: D sees only real y against G_I(x)."""

from dataclasses import replace

from kpbench.variant import register_variant

from .full import FULL

NAIVE_GAN = register_variant(
    replace(
        FULL,
        name="naive_gan",
        description="Full model, but the discriminator sees only real images and G_I(x) "
        "(no mixed fakes of equation (4)).",
        fake_kinds=("generated",),
    ),
    order=20,
)
