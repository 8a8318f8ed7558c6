"""Variants: a frozen spec that names a model's components and loss terms, and a registry.

The training loop reads everything variant-specific from a :class:`VariantSpec`: which generator
(Siamese sum or channel-concatenation encoder, with or without the mask decoder), which
discriminator (none, image only, or conditioned on the patches), which fake images the
discriminator sees (the paper's equation (4) or a subset), and which loss terms with which weights.
Each variant lives in its own file under ``variants/`` (every file there is imported) and
registers itself; an ablation is ``dataclasses.replace(FULL, ...)`` so it reads as a diff against
the full model, the reference variant (:func:`reference_variant`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

from kpbench.choices import Init, choice_values
from kpbench.errors import KpbenchError
from kpbench.plugins import import_package_modules

# How the N patches are combined, after the paper's Fig. 4 (kpbench.nets.PatchGenerator):
#   "sum"            (e) Siamese encoder, every level summed over patches (the paper's choice)
#   "concat"         (b) patches stacked on channels (B, 3N, S, S) into one encoder
#   "siamese_concat" (c) Siamese encoder, per-patch levels concatenated on channels in input order
#   "independent"    (d) Siamese encoder and mask decoder per patch; masks merged by a pixel-wise max
EncoderFusion = Literal["sum", "concat", "siamese_concat", "independent"]
ENCODER_FUSIONS: tuple[str, ...] = ("sum", "concat", "siamese_concat", "independent")
ORDER_INVARIANT_FUSIONS: tuple[str, ...] = ("sum", "independent")  # and defined for any N
DiscriminatorKind = Literal["none", "image", "conditional"]
AppearanceMask = Literal["predicted", "true"]
# Weight initialisation, by name (kpbench.nets.INITIALISERS): "pytorch" is today's PyTorch default
# (the authors' code also used its framework's defaults, but those of PyTorch 0.3/0.4 differ for BN
# and transposed convs: see docs/fidelity.md; "pytorch04" reproduces them); "dcgan" is N(0, 0.02),
# defined in the authors' code but never called.
Initialisation = Literal["pytorch", "dcgan", "pytorch04"]
INITIALISATIONS: tuple[str, ...] = choice_values(Init)

# The discriminator's fake images of equation (4); kpbench.losses.FAKE_KINDS says how each is made.
FakeKind = Literal[
    "generated", "generated_in_mask", "generated_outside_mask", "other_in_mask", "other_outside_mask",
]
EQUATION_4_FAKES: tuple[FakeKind, ...] = get_args(FakeKind)


@dataclass(frozen=True)
class VariantSpec:
    """Components and objective of one model. Generator loss:

        adversarial_weight * BCE(D(G_I(x)), real)
        + lambda(epoch) * (spatial_weight * |G_M(x) - M|_1
                           + appearance_weight * |G_I(x) * A - y * M|_1
                           + reconstruction_weight * |G_I(x) - y|_1)

    with A = G_M(x) (``appearance_mask="predicted"``) or M (``"true"``); L1 terms are summed per
    sample and averaged over the batch. lambda decays geometrically per epoch from
    ``lambda_start`` to ``lambda_end`` (0.64 -> 0.0064: the paper's 1e-2 -> 1e-4 for losses
    summed over a batch of 64, expressed per sample so the balance does not depend on batch size).
    Discriminator loss: BCE(D(y), real) + sum over ``fake_kinds`` of BCE(D(fake), fake).
    """

    name: str
    description: str
    encoder_fusion: EncoderFusion = "sum"
    mask_decoder: bool = True
    discriminator: DiscriminatorKind = "image"
    fake_kinds: tuple[FakeKind, ...] = EQUATION_4_FAKES
    spatial_weight: float = 1.0
    appearance_weight: float = 1.0
    appearance_mask: AppearanceMask = "predicted"
    reconstruction_weight: float = 0.0
    adversarial_weight: float = 1.0
    lambda_start: float = 0.64
    lambda_end: float = 0.0064
    embed_dim: int = 128
    z_dim: int = 128
    init: Initialisation = "pytorch"
    image_skips: bool = True  # the image decoder's U-net skips (False: Fig. 5's "without")

    def __post_init__(self) -> None:
        # Inconsistent specs are programming errors in a variants/ file: fail at import time.
        problems = []
        if self.encoder_fusion not in ENCODER_FUSIONS:
            problems.append(f"encoder_fusion {self.encoder_fusion!r} is not one of "
                            f"{', '.join(ENCODER_FUSIONS)}")
        if self.encoder_fusion == "independent" and not self.mask_decoder:
            problems.append("independent per-patch masks need the mask decoder")
        if self.discriminator not in ("none", "image", "conditional"):
            problems.append(f"discriminator {self.discriminator!r} is not none, image or conditional")
        unknown = set(self.fake_kinds) - set(EQUATION_4_FAKES)
        if unknown:
            problems.append(f"unknown fake kinds {sorted(unknown)}")
        has_d = self.discriminator != "none"
        if has_d != bool(self.fake_kinds) or has_d != (self.adversarial_weight > 0):
            problems.append("a discriminator needs fake kinds and an adversarial weight, and vice versa")
        if not self.mask_decoder and self.spatial_weight > 0:
            problems.append("the spatial loss needs the mask decoder")
        if not self.mask_decoder and self.appearance_weight > 0 and self.appearance_mask == "predicted":
            problems.append("the appearance loss with the predicted mask needs the mask decoder")
        if self.appearance_mask not in ("predicted", "true"):
            problems.append(f"appearance_mask {self.appearance_mask!r} is not predicted or true")
        if self.init not in INITIALISATIONS:
            problems.append(f"init {self.init!r} is not one of {', '.join(INITIALISATIONS)}")
        if not 0 < self.lambda_end <= self.lambda_start:
            problems.append("need 0 < lambda_end <= lambda_start")
        if problems:
            raise ValueError(f"variant {self.name!r}: " + "; ".join(problems))

    @property
    def order_invariant(self) -> bool:
        """The output does not depend on the order of the patches (and any N is accepted)."""
        return self.encoder_fusion in ORDER_INVARIANT_FUSIONS

    @property
    def generator_terms(self) -> dict[str, float]:
        """Active generator loss terms and their weights (lambda-scaled ones are the L1 terms)."""
        weights = {
            "adversarial": self.adversarial_weight,
            "spatial": self.spatial_weight,
            "appearance": self.appearance_weight,
            "reconstruction": self.reconstruction_weight,
        }
        return {name: weight for name, weight in weights.items() if weight > 0}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantSpec:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                   for k, v in data.items() if k in known}
        # spec.json files written before ``init`` existed came from N(0, 0.02)-initialised nets.
        values.setdefault("init", "dcgan")
        return cls(**values)


VARIANTS_PACKAGE = "kpbench.variants"  # the folder of variant files, one variant each

_REGISTRY: dict[str, VariantSpec] = {}
_ORDER: dict[str, float] = {}  # display order by name (``kpbench list``, reports), then registration
_REFERENCE: list[str] = []  # the name of the reference variant, once one registers as such


def register_variant(spec: VariantSpec, *, order: float = math.inf, reference: bool = False) -> VariantSpec:
    """Add ``spec`` to the registry under ``spec.name`` and return it (use at module level).

    ``order`` places it in ``kpbench list`` and in reports (lower first; ties and unordered
    variants by registration). ``reference`` marks the variant the others are ablations of (the
    paper's full model): ``kpbench show`` and reports show every variant as its difference from it.
    """
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ValueError(f"variant {spec.name!r} registered twice with different specs")
    if reference and _REFERENCE and _REFERENCE[0] != spec.name:
        raise ValueError(f"variant {spec.name!r}: {_REFERENCE[0]!r} is already the reference variant")
    _REGISTRY[spec.name] = spec
    _ORDER[spec.name] = order
    if reference and not _REFERENCE:
        _REFERENCE.append(spec.name)
    return spec


def _load_builtin_variants() -> None:
    # Imported lazily: every variant file imports this module to register itself.
    import_package_modules(VARIANTS_PACKAGE)


def list_variants() -> list[VariantSpec]:
    """All registered variants in display order (the reference variant, full, first)."""
    _load_builtin_variants()
    position = {name: index for index, name in enumerate(_REGISTRY)}
    names = sorted(_REGISTRY, key=lambda name: (_ORDER.get(name, math.inf), position[name]))
    return [_REGISTRY[name] for name in names]


def get_variant(name: str) -> VariantSpec:
    _load_builtin_variants()
    if name not in _REGISTRY:
        known = ", ".join(spec.name for spec in list_variants())
        raise KpbenchError(f"unknown variant {name!r}; known variants: {known}")
    return _REGISTRY[name]


def reference_name() -> str:
    """The name of the reference variant (``full``): the base of every variant comparison."""
    _load_builtin_variants()
    if not _REFERENCE:
        raise KpbenchError("no reference variant registered (register_variant(..., reference=True))")
    return _REFERENCE[0]


def reference_variant() -> VariantSpec:
    """The reference variant's spec (see :func:`reference_name`)."""
    return get_variant(reference_name())


def spec_diff(spec: VariantSpec, base: VariantSpec) -> dict[str, tuple[Any, Any]]:
    """Fields where ``spec`` differs from ``base``: ``{field: (base value, spec value)}``,
    ignoring the name and description (``kpbench show VARIANT`` prints this against the
    reference variant)."""
    diff = {}
    for f in fields(VariantSpec):
        if f.name in ("name", "description"):
            continue
        old, new = getattr(base, f.name), getattr(spec, f.name)
        if old != new:
            diff[f.name] = (old, new)
    return diff

