"""Fig. 4(d) of the paper: each patch encoded and decoded to its own mask, masks merged.

The figure is not in the text; the reading kpbench implements: the Siamese encoder runs on each
patch, and the mask decoder runs on each patch's own embedding and maps, so the N masks are
predicted independently of one another; they are merged pixel-wise by a max into M, so the
spatial and appearance losses see one mask. Fig. 4 is about mask prediction only, so the image
decoder stays the full model's doubled U-net: its code is the summed embedding plus z and its
skips are the per-patch mask decoder maps merged by the same max. Order-invariant and defined
for any N, but "it predicts a mask of each input independently, which is not desirable as we aim
to predict masks jointly": a patch cannot use the others to decide where it goes.
"""

from dataclasses import replace

from kpbench.variant import register_variant

from .full import FULL

INDEPENDENT_MASKS = register_variant(
    replace(
        FULL,
        name="independent_masks",
        description="Fig. 4(d): the full model whose mask decoder runs on each patch alone; the N "
        "masks are merged by a pixel-wise max (image decoder: summed code, max-merged skips); "
        "order-invariant, masks not predicted jointly.",
        encoder_fusion="independent",
    ),
    order=80,
)
