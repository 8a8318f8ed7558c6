"""No mask prediction network: the image decoder takes skips from the part encoder only."""

from dataclasses import replace

from kpbench.variant import register_variant

from .full import FULL

NOMASK = register_variant(
    replace(
        FULL,
        name="nomask",
        description="No mask decoder: a single U-net image decoder with encoder skips; no spatial "
        "loss; appearance loss with the true mask |G_I(x)*M - y*M|_1.",
        mask_decoder=False,
        spatial_weight=0.0,
        appearance_mask="true",
    ),
    order=30,
)
