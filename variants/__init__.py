"""The registered variants: the paper's full model, the four ablations of its objective and
components, and the architecture ablations of its Fig. 4 and Fig. 5.

Every module in this folder is imported when the variant registry is first read
(:func:`kpbench.variant.list_variants`), and registers its variant with
:func:`kpbench.variant.register_variant`, which also gives its place in ``kpbench list`` (``order``).
Every ablation is a diff against ``kpbench.variants.full.FULL`` (``dataclasses.replace``), the reference
variant, so ``kpbench show VARIANT`` can print exactly what changed; a file imports it relatively
(``from .full import FULL``), the one spelling that both Python (``kpbench.variants.full``) and
the type checker (``variants.full``, pyproject.toml) resolve. To add a variant, add a file here:
nothing else lists it.
"""
