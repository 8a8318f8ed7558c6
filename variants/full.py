"""The paper's model (Lee et al., ECCV 2018, Fig. 2 and equations (1)-(4))."""

from kpbench.variant import EQUATION_4_FAKES, VariantSpec, register_variant

FULL = register_variant(
    VariantSpec(
        name="full",
        description="Siamese part encoder summed over patches, mask U-net, doubled U-net image "
        "decoder with z, unconditional D on the five fake kinds of equation (4); "
        "spatial + appearance + adversarial losses.",
        encoder_fusion="sum",
        mask_decoder=True,
        discriminator="image",
        fake_kinds=EQUATION_4_FAKES,
        spatial_weight=1.0,
        appearance_weight=1.0,
        appearance_mask="predicted",
        reconstruction_weight=0.0,
        adversarial_weight=1.0,
    ),
    order=10,
    reference=True,  # the paper's model: every ablation is compared with it
)
