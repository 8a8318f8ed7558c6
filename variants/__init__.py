"""The registered variants: the paper's full model, the four ablations of its objective and
components, and the architecture ablations of its Fig. 4 and Fig. 5.

Importing this package registers each one with :mod:`kpbench.variant`, in the order below (the
order ``kpbench list`` shows). Every ablation is a diff against ``variants.full.FULL``
(``dataclasses.replace``), so ``kpbench show VARIANT`` can print exactly what changed.
To add a variant, add a file here and its module name to ``MODULES``.
"""

import importlib

MODULES: tuple[str, ...] = (
    "full", "naive_gan", "nomask", "autoencoder", "cgan",
    "depth_concat", "siamese_concat", "independent_masks", "noskip",
)

for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")
