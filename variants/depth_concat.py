"""Fig. 4(b) of the paper: the N patches depth-concatenated into one encoder.

The figure is not in the text; the reading kpbench implements: the full model (mask U-net,
doubled U-net image decoder, z, the unconditional discriminator on equation (4)'s five fakes, the
same losses) whose part encoder takes the N patches stacked on channels, (B, 3N, S, S), instead
of the Siamese sum. "A straightforward extension of the single input case", which the paper
rejects because the embedding then depends on the order of the patches, while key patches come
in an arbitrary order (sorted by objectness). N is fixed at training time. The patches
protocol's ``image_order_dependence`` measures the order dependence.
"""

from dataclasses import replace

from kpbench.variant import register_variant

from .full import FULL

DEPTH_CONCAT = register_variant(
    replace(
        FULL,
        name="depth_concat",
        description="Fig. 4(b): the full model with the N patches depth-concatenated into one "
        "encoder (B, 3N, S, S) instead of the Siamese sum; fixed N, order-dependent.",
        encoder_fusion="concat",
    ),
    order=60,
)
