"""Fig. 4(c) of the paper: a Siamese encoder whose per-patch codes are concatenated in order.

The figure is not in the text; the reading kpbench implements: the full model with the shared
(Siamese) encoder applied to each patch, but each level's N per-patch maps and the N 128-d
embeddings concatenated on channels in input order, (B, N*C, h, w) and (B, N*128), instead of
summed; the decoders widen their inputs accordingly and keep their U-net skips. The paper
rejects it for the same reason as (b): the concatenation makes the embedding depend on the
order of the patches. N is fixed at training time. The patches protocol's
``image_order_dependence`` measures the order dependence.
"""

from dataclasses import replace

from kpbench.variant import register_variant

from .full import FULL

SIAMESE_CONCAT = register_variant(
    replace(
        FULL,
        name="siamese_concat",
        description="Fig. 4(c): the full model with a Siamese encoder whose per-patch maps and "
        "embeddings are concatenated in input order (B, N*C) instead of summed; fixed N, "
        "order-dependent.",
        encoder_fusion="siamese_concat",
    ),
    order=70,
)
