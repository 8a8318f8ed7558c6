"""Fig. 5 of the paper: the full model without the image decoder's skip connections.

The figure is not in the text; the reading kpbench implements, from section 3.4 ("a doubled
U-net ... skip connections from both the part encoding network and mask generation network ...
Figure 5 shows generated images with and without the skip connections"): the image decoder
loses every skip, from the encoder and from the mask decoder, and decodes from cat(E, z) alone;
the mask decoder keeps its own U-net skips (the paper's Fig. 5 concerns image generation).
Everything else is the full model. The paper reports sharper, more realistic images and better
kept patch appearance with the skips.
"""

from dataclasses import replace

from kpbench.variant import register_variant

from .full import FULL

NOSKIP = register_variant(
    replace(
        FULL,
        name="noskip",
        description="Fig. 5: the full model whose image decoder has no skip connections (decodes "
        "from E and z alone); the mask decoder keeps its U-net.",
        image_skips=False,
    ),
    order=90,
)
