"""A pix2pix-style conditional GAN (Isola et al. 2017) on the concatenated patches.

The N patches are stacked on channels into one U-net generator (no Siamese sum, so N is fixed and
order matters; no mask branch); the discriminator sees the image together with the patches. The
U-net keeps the full model's layers and noise input z so the comparison isolates the fusion, the
mask branch and the objective. The L1 reconstruction weight follows the same lambda schedule as
the full model's L1 terms.
"""

from dataclasses import replace

from kpbench.variant import register_variant

from .full import FULL

CGAN = register_variant(
    replace(
        FULL,
        name="cgan",
        description="pix2pix-style: patches concatenated on channels into one U-net generator, "
        "no mask branch, D conditioned on the patches; conditional BCE + L1 reconstruction.",
        encoder_fusion="concat",
        mask_decoder=False,
        discriminator="conditional",
        fake_kinds=("generated",),
        spatial_weight=0.0,
        appearance_weight=0.0,
        reconstruction_weight=1.0,
    ),
    order=50,
)
