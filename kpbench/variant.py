"""Variants: a frozen spec that names a model's components and loss terms, and a registry.

The training loop reads everything variant-specific from a :class:`VariantSpec`: which generator
(Siamese sum or channel-concatenation encoder, with or without the mask decoder), which
discriminator (none, image only, or conditioned on the patches), which fake images the
discriminator sees (the paper's equation (4) or a subset), and which loss terms with which weights.
Each variant lives in its own file under ``variants/`` (every file there is imported) and
registers itself; an ablation is ``dataclasses.replace(FULL, ...)`` so it reads as a diff against
the full model, the reference variant (:func:`reference_variant`).

A variant may also bring its own networks and loss terms (:class:`GeneratorNetwork`,
:class:`DiscriminatorNetwork`, :class:`LossTerm`; the contract is docs/extending.md) and live in
a user's own file outside kpbench (kpbench.plugins): it then records where it came from
(:attr:`VariantSpec.source`), so a run of it can be loaded again.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from kpbench.choices import Init, choice_values
from kpbench.errors import KpbenchError
from kpbench.plugins import (
    FILE_MODULE_PREFIX,
    PluginSource,
    import_package_modules,
    import_source,
    load_user_plugins,
    source_of,
)

if TYPE_CHECKING:
    from torch import Tensor, nn

    from kpbench.losses import LossInputs

# How the N patches are combined, after the paper's Fig. 4 (kpbench.nets.PatchGenerator):
#   "sum"            (e) Siamese encoder, every level summed over patches (the paper's choice)
#   "concat"         (b) patches stacked on channels (B, 3N, S, S) into one encoder
#   "siamese_concat" (c) Siamese encoder, per-patch levels concatenated on channels in input order
#   "independent"    (d) Siamese encoder and mask decoder per patch; masks merged by a pixel-wise max
#   "custom"         not the paper's generator: the variant's own (VariantSpec.generator_network)
EncoderFusion = Literal["sum", "concat", "siamese_concat", "independent", "custom"]
ENCODER_FUSIONS: tuple[str, ...] = ("sum", "concat", "siamese_concat", "independent")  # the paper's
ORDER_INVARIANT_FUSIONS: tuple[str, ...] = ("sum", "independent")  # and defined for any N
CUSTOM = "custom"  # encoder_fusion / discriminator of a variant that brings its own network
# "custom": the variant's own (VariantSpec.discriminator_network), trained on equation (4)'s fakes
DiscriminatorKind = Literal["none", "image", "conditional", "custom"]
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
class NetworkSettings:
    """What a network factory is given: the variant's spec and the run's image side S, channel
    multiplier and number of patches N at training time."""

    spec: VariantSpec
    size: int
    width: float
    n_patches: int


@dataclass(frozen=True)
class GeneratorNetwork:
    """A variant's own generator (docs/extending.md): ``build(settings)`` returns a fresh
    ``nn.Module`` whose ``forward(patches (B, N, 3, S, S), z (B, z_dim))`` returns
    ``(image (B, 3, S, S) in [-1, 1], mask (B, 1, S, S) in [0, 1] or None)`` (or a
    kpbench.nets.GeneratorOutput); with ``encode(patches) -> (B, D)`` the classification
    protocol scores its features. ``order_invariant`` and ``any_n`` are promises that kpbench
    checks on the freshly built network (kpbench.nets.check_generator)."""

    build: Callable[[NetworkSettings], nn.Module]
    order_invariant: bool = False  # the output does not depend on the order of the patches
    any_n: bool = True  # any number of patches N >= 1 works (False: only the training N)

    def to_dict(self) -> dict[str, Any]:
        return {"build": qualified_name(self.build), "order_invariant": self.order_invariant,
                "any_n": self.any_n}


@dataclass(frozen=True)
class DiscriminatorNetwork:
    """A variant's own discriminator: ``build(settings)`` returns a fresh ``nn.Module`` whose
    ``forward(image (B, 3, S, S), patches (B, N, 3, S, S))`` returns logits (B,)."""

    build: Callable[[NetworkSettings], nn.Module]

    def to_dict(self) -> dict[str, Any]:
        return {"build": qualified_name(self.build)}


@dataclass(frozen=True)
class LossTerm:
    """A generator loss term of a variant's own: ``compute(inputs)`` -> a float32 scalar
    (kpbench.losses.LossInputs: the generator's output, real image, true mask, patches, z),
    added to the generator loss times ``weight``, and times lambda(epoch) when ``scaled`` (as the
    paper's L1 terms). Logged as ``g/<name>``."""

    name: str
    weight: float
    compute: Callable[[LossInputs], Tensor]
    scaled: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "scaled": self.scaled,
                "compute": qualified_name(self.compute)}


def qualified_name(function: Callable[..., Any]) -> str:
    """``module:qualname`` of a function or class (how a spec names code it cannot store)."""
    module = str(getattr(function, "__module__", "?"))
    if module.startswith(FILE_MODULE_PREFIX):  # a plug-in file: its name, not the import name
        module = Path(str(getattr(sys.modules.get(module), "__file__", module))).name
    return f"{module}:{getattr(function, '__qualname__', type(function).__qualname__)}"


BUILTIN_TERMS: tuple[str, ...] = ("adversarial", "spatial", "appearance", "reconstruction")
# Fields that hold code (written by name in spec.json, taken from the registered variant on load)
# and where the variant came from; left out of to_dict while unset, so the paper's variants
# read as they did before these fields existed.
CODE_FIELDS: tuple[str, ...] = ("generator_network", "discriminator_network", "loss_terms")


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
    # A variant's own networks and loss terms (docs/extending.md); None / () = the paper's.
    generator_network: GeneratorNetwork | None = None  # needs encoder_fusion="custom"
    discriminator_network: DiscriminatorNetwork | None = None  # needs discriminator="custom"
    loss_terms: tuple[LossTerm, ...] = ()
    # The plug-in module that registered it (register_variant fills it in; None for kpbench's own).
    source: PluginSource | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Inconsistent specs are programming errors in a variants/ file: fail at import time.
        problems = []
        if self.encoder_fusion not in (*ENCODER_FUSIONS, CUSTOM):
            problems.append(f"encoder_fusion {self.encoder_fusion!r} is not one of "
                            f"{', '.join((*ENCODER_FUSIONS, CUSTOM))}")
        if (self.encoder_fusion == CUSTOM) != (self.generator_network is not None):
            problems.append('a generator_network goes with encoder_fusion="custom", and vice versa')
        if self.encoder_fusion == "independent" and not self.mask_decoder:
            problems.append("independent per-patch masks need the mask decoder")
        if self.discriminator not in ("none", "image", "conditional", CUSTOM):
            problems.append(f"discriminator {self.discriminator!r} is not none, image, conditional or custom")
        if (self.discriminator == CUSTOM) != (self.discriminator_network is not None):
            problems.append('a discriminator_network goes with discriminator="custom", and vice versa')
        names = [term.name for term in self.loss_terms]
        clashes = sorted(set(names) & set(BUILTIN_TERMS)) + sorted({n for n in names if names.count(n) > 1})
        if clashes:
            problems.append(f"loss term names {clashes} repeat a built-in or another term")
        if any(term.weight < 0 for term in self.loss_terms):
            problems.append("loss term weights must be >= 0")
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
        """The output does not depend on the order of the patches (the paper's fusions: and any
        N is accepted; a custom generator: as its GeneratorNetwork promises)."""
        if self.generator_network is not None:
            return self.generator_network.order_invariant
        return self.encoder_fusion in ORDER_INVARIANT_FUSIONS

    @property
    def any_n(self) -> bool:
        """Any number of patches works, not only the training N."""
        if self.generator_network is not None:
            return self.generator_network.any_n
        return self.encoder_fusion in ORDER_INVARIANT_FUSIONS

    @property
    def generator_terms(self) -> dict[str, float]:
        """Active generator loss terms and their weights (lambda-scaled ones are the L1 terms)."""
        weights = {
            "adversarial": self.adversarial_weight,
            "spatial": self.spatial_weight,
            "appearance": self.appearance_weight,
            "reconstruction": self.reconstruction_weight,
            **{term.name: term.weight for term in self.loss_terms},
        }
        return {name: weight for name, weight in weights.items() if weight > 0}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists, code is written by name (``module:qualname``), the
        code fields and ``source`` only when set."""
        values: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in (*CODE_FIELDS, "source"):
                if value is None or value == ():
                    continue
                value = [term.to_dict() for term in value] if f.name == "loss_terms" else value.to_dict()
            values[f.name] = list(value) if isinstance(value, tuple) else value
        return values

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantSpec:
        """The spec a spec.json records. Code cannot be stored: a spec with code fields takes
        them from the registered variant of its name, importing its recorded plug-in first when
        it is not registered (a one-line error when that fails)."""
        known = {f.name for f in fields(cls)} - {*CODE_FIELDS, "source"}
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                   for k, v in data.items() if k in known}
        # spec.json files written before ``init`` existed came from N(0, 0.02)-initialised nets.
        values.setdefault("init", "dcgan")
        source = PluginSource.from_dict(data["source"]) if data.get("source") else None
        if any(data.get(name) for name in CODE_FIELDS):
            registered = registered_variant(str(data.get("name")), source)
            values |= {name: getattr(registered, name) for name in CODE_FIELDS}
        return cls(**values, source=source)


VARIANTS_PACKAGE = "kpbench.variants"  # the folder of variant files, one variant each

_REGISTRY: dict[str, VariantSpec] = {}
_ORDER: dict[str, float] = {}  # display order by name (``kpbench list``, reports), then registration
_REFERENCE: list[str] = []  # the name of the reference variant, once one registers as such


def register_variant(spec: VariantSpec, *, order: float = math.inf, reference: bool = False) -> VariantSpec:
    """Add ``spec`` to the registry under ``spec.name`` and return it (use at module level).

    ``order`` places it in ``kpbench list`` and in reports (lower first; ties and unordered
    variants by registration). ``reference`` marks the variant the others are ablations of (the
    paper's full model): ``kpbench show`` and reports show every variant as its difference from it.
    A variant registered from a module outside kpbench's ``variants/`` gets that module as its
    :attr:`VariantSpec.source` (returned spec), which its runs record.
    """
    caller = sys._getframe(1).f_globals.get("__name__", "")
    builtin = caller.startswith(VARIANTS_PACKAGE + ".")
    spec = replace(spec, source=None if builtin else source_of(caller))
    if spec.name in _REGISTRY and _definition(_REGISTRY[spec.name]) != _definition(spec):
        raise ValueError(f"variant {spec.name!r} registered twice with different specs")
    if reference and _REFERENCE and _REFERENCE[0] != spec.name:
        raise ValueError(f"variant {spec.name!r}: {_REFERENCE[0]!r} is already the reference variant")
    _REGISTRY[spec.name] = spec
    _ORDER[spec.name] = order
    if reference and not _REFERENCE:
        _REFERENCE.append(spec.name)
    return spec


def _definition(spec: VariantSpec) -> dict[str, Any]:
    """What makes two registrations the same variant: the fields, and code by its qualified name
    whatever module name it was imported under; not where it came from."""
    values = spec.to_dict()
    values.pop("source", None)
    for name in CODE_FIELDS:
        if name in values:
            value = values[name]
            values[name] = ([_unqualified(item) for item in value] if name == "loss_terms"
                            else _unqualified(value))
    return values


def _unqualified(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v.split(":")[-1] if k in ("build", "compute") else v for k, v in value.items()}


def registered_variant(name: str, source: PluginSource | None) -> VariantSpec:
    """The registered variant ``name`` (e.g. one whose code a recorded spec needs), importing
    the plug-in ``source`` first when it is not registered yet."""
    _load_builtin_variants()
    if name not in _REGISTRY and source is not None:
        import_source(source, f"variant {name!r}")
    if name not in _REGISTRY:
        where = f" (recorded plug-in: {source.file})" if source is not None else ""
        raise KpbenchError(f"variant {name!r} is not registered{where}; load its file with "
                           "`kpbench --plugin FILE`")
    return _REGISTRY[name]


def _load_builtin_variants() -> None:
    # Imported lazily: every variant file imports this module to register itself.
    import_package_modules(VARIANTS_PACKAGE)
    load_user_plugins()


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
        if f.name in ("name", "description", "source"):
            continue
        old, new = getattr(base, f.name), getattr(spec, f.name)
        if f.name in CODE_FIELDS:  # code by name, as spec.json writes it
            old, new = base.to_dict().get(f.name), spec.to_dict().get(f.name)
        if old != new:
            diff[f.name] = (old, new)
    return diff

