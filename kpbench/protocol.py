"""Evaluation protocols: a tiny registry and the context every protocol runs in.

A protocol is a named function ``run(context) -> list[ResultRow]`` living in its own file under
``protocols/`` (``protocols/noise.py`` etc.), registered with :func:`register_protocol`; every file
there is found and imported when the registry is first read (no list to extend). The
:class:`Protocol` also says how reports show its rows (order, summary columns, headline
condition, description) and what it adds to a run's provenance.
:func:`evaluate` loads each trained run, builds the context (test samples, options, device),
runs the protocol and replaces ``<run>/results/<protocol>.csv`` with its rows.
"""

from __future__ import annotations

import math
import time
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from kpbench.choices import DEFAULT_BN_MODE
from kpbench.errors import KpbenchError
from kpbench.lock import RunLock
from kpbench.metricinfo import register_metric
from kpbench.paths import RunDir, WorkDir
from kpbench.plugins import PROTOCOLS_PACKAGE, import_package_modules, load_user_plugins
from kpbench.results import ResultRow, write_rows
from kpbench.runs import BN_MODES, TrainedRun
from kpbench.runtime import derive_seed, pick_device

if TYPE_CHECKING:
    from kpbench.baselines import NearestNeighbour
    from kpbench.data import Split
    from kpbench.dataspec import DataSpec, PatchSource
    from kpbench.predictions import OutputsOnlyRun
    from kpbench.samples import PatchSampleDataset

ALL = "all"
T = TypeVar("T")

# Field metadata of an evaluation option that decides which inputs are generated from (test
# images, patch sets, noise, z): predictions made elsewhere are exported with these fixed
# (kpbench.export), so a protocol's own option of that kind says so where it is declared,
# ``sigmas: tuple[float, ...] = request_option((0.0, 0.1))``, and nowhere else.
DECIDES_REQUESTS = "decides_requests"


def request_option(default: T) -> T:
    """A dataclass field default for an option that decides the generated inputs (see
    :data:`DECIDES_REQUESTS`)."""
    return field(default=default, metadata={DECIDES_REQUESTS: True})


@dataclass(frozen=True)
class EvalOptions:
    """Knobs shared by protocols, and each protocol's own options (:attr:`Protocol.options`);
    every row records the sample count it used.

    A protocol reads its own with :meth:`of`; :meth:`with_settings` changes any of them by name
    (the command line's flags and ``--set``, a plan's ``[eval]`` and ``[eval.<protocol>]``).
    """

    max_samples: int = request_option(256)  # test images per condition for the per-sample metrics
    # Generation batch size. With batch statistics (bn_mode "batch") an output depends on the
    # other samples of its batch, so this and the batch order are part of the result (recorded).
    batch_size: int = request_option(32)
    device: str | None = None
    bn_mode: str = DEFAULT_BN_MODE  # batch-norm statistics at generation (kpbench.runs.BN_MODES)
    # Protocol name -> {option: value} of its Protocol.options, only those that differ from the
    # defaults (equal settings give equal options); plain values, so that the options pickle
    # for processes that have not imported a plug-in protocol's file. Filled by with_settings.
    protocols: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.bn_mode not in BN_MODES:
            raise KpbenchError(f"unknown batch-norm mode {self.bn_mode!r}; use {', '.join(BN_MODES)}")
        if self.max_samples < 1 or self.batch_size < 1:
            raise KpbenchError("need max_samples >= 1 and batch_size >= 1")

    def of(self, protocol: str, kind: type[T]) -> T:
        """The options of ``protocol`` (its :attr:`Protocol.options` class ``kind``): as set, or
        ``kind()``'s defaults."""
        return kind(**self.protocols.get(protocol, {}))

    def with_settings(self, settings: Mapping[str, Any] | None = None, /, **more: Any) -> EvalOptions:
        """These options with ``settings`` (and ``more``) changed: a shared one by name
        (``max_samples``), a protocol's own as ``<protocol>.<option>`` (``noise.sigmas``) or by
        the option's name alone (``sigmas``: that option of every protocol declaring it). Values
        are checked against the field types; text is parsed (``"0.1,0.2"`` for a tuple), as the
        command line gives it. An unknown name or a bad value is a :class:`KpbenchError`."""
        changes = {**(settings or {}), **more}
        shared = _shared_option_types()
        shared_changes: dict[str, Any] = {}
        protocol_changes: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if key in shared:
                shared_changes[key] = _coerce(value, shared[key], key)
                continue
            for protocol, option in _option_owners(key):
                protocol_changes.setdefault(protocol, {})[option] = value
        declared = protocol_option_types() if protocol_changes else {}
        protocols = dict(self.protocols)
        for protocol, values in protocol_changes.items():
            kind = declared[protocol]
            types = typing.get_type_hints(kind)
            try:
                updated = replace(self.of(protocol, kind),
                                  **{option: _coerce(value, types[option], f"{protocol}.{option}")
                                     for option, value in values.items()})
            except (TypeError, ValueError) as error:
                raise KpbenchError(f"{protocol} options: {error}") from None
            defaults = kind()
            protocols[protocol] = {item.name: getattr(updated, item.name) for item in fields(kind)
                                   if getattr(updated, item.name) != getattr(defaults, item.name)}
            if not protocols[protocol]:
                del protocols[protocol]
        try:
            return replace(self, **shared_changes, protocols=protocols)
        except (TypeError, ValueError) as error:
            raise KpbenchError(f"evaluation options: {error}") from None

    def setting(self, key: str) -> Any:
        """The value of one setting named as :meth:`with_settings` names it (a bare protocol
        option: that of the first protocol declaring it)."""
        if key in _shared_option_types():
            return getattr(self, key)
        protocol, option = _option_owners(key)[0]
        return getattr(self.of(protocol, protocol_option_types()[protocol]), option)


def request_settings() -> tuple[str, ...]:
    """The settings that decide the generated inputs, named as :meth:`EvalOptions.with_settings`
    names them: the shared ones (``max_samples``), then every registered protocol's own
    (``noise.sigmas``), from the fields marked with :func:`request_option`."""
    shared = [item.name for item in fields(EvalOptions) if item.metadata.get(DECIDES_REQUESTS)]
    own = [f"{protocol}.{item.name}" for protocol, kind in protocol_option_types().items()
           for item in fields(kind) if item.metadata.get(DECIDES_REQUESTS)]
    return (*shared, *own)


def protocol_option_types() -> dict[str, type[Any]]:
    """Protocol name -> its options class, for the protocols that declare one."""
    return {protocol.name: protocol.options for protocol in _load_registry().values()
            if protocol.options is not None}


def _shared_option_types() -> dict[str, Any]:
    return {name: kind for name, kind in typing.get_type_hints(EvalOptions).items() if name != "protocols"}


def _option_owners(key: str) -> list[tuple[str, str]]:
    """(protocol, option) pairs that ``key`` (``<protocol>.<option>`` or ``<option>``) names."""
    declared = protocol_option_types()
    protocol, dot, option = key.partition(".")
    if dot:
        if protocol not in declared:
            having = ", ".join(declared) or "none"
            raise KpbenchError(f"unknown evaluation option {key!r}: no protocol {protocol!r} with options "
                               f"(protocols with options: {having})")
        known = [item.name for item in fields(declared[protocol])]
        if option not in known:
            raise KpbenchError(f"unknown option {option!r} of protocol {protocol}; known: {', '.join(known)}")
        return [(protocol, option)]
    owners = [(name, key) for name, kind in declared.items() if key in {item.name for item in fields(kind)}]
    if not owners:
        known = [*_shared_option_types(), *(f"{name}.{item.name}" for name, kind in declared.items()
                                            for item in fields(kind))]
        raise KpbenchError(f"unknown evaluation option {key}; known: {', '.join(known)}")
    return owners


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """``value`` as type ``kind`` (a field's type), parsing text; a one-line error otherwise."""
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if type(None) in arguments and (value is None or (isinstance(value, str)
                                                          and value.strip().lower() in ("", "none"))):
            return None
        inner = [argument for argument in arguments if argument is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        items = [part for part in value.split(",") if part.strip()] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise KpbenchError(f"{key} takes a list, got {value!r}")
        return tuple(_coerce(item, arguments[0], key) for item in items)
    text = value.strip() if isinstance(value, str) else None
    if kind is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in ("true", "false", "yes", "no", "1", "0"):
            return text.lower() in ("true", "yes", "1")
    elif kind in (int, float):
        if text is not None:
            try:
                return kind(text)
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and kind(value) == value:
            return kind(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
    else:
        return value
    raise KpbenchError(f"{key} takes {getattr(kind, '__name__', kind)}, got {value!r}")


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol and how reports show its rows.

    ``run`` is None for a row source that ``kpbench eval`` does not run (the user study's rows
    come from ``kpbench study analyze``): such a protocol only tells reports how to show them.
    """

    name: str
    description: str  # one paragraph, shown by ``kpbench list`` (and in reports, unless report_description)
    run: Callable[[EvalContext], list[ResultRow]] | None
    # --- reports ---
    order: float = math.inf  # sections and summary columns by order, then name
    summary: bool = False  # its headline metrics are summary columns
    # The summary's metrics of this protocol; None: every metric but within-run spreads (``*_std``).
    summary_metrics: tuple[str, ...] | None = None
    headline_condition: str | None = None  # the summary's condition; None: the first one its rows list
    heading: str | None = None  # the report section's heading; None: the name
    report_description: str | None = None  # the report's paragraph; None: ``description``
    # --- provenance ---
    # What ``results/provenance.json`` records for this protocol (merged into the record), e.g.
    # the feature extractor FID used; called after every protocol of an evaluation has run.
    provenance: Callable[[EvalContext], dict[str, Any]] | None = None
    # It reads a network's internals (the part encoder), not only its outputs: not available for
    # predictions made elsewhere (kpbench.predictions), and not exported for them.
    needs_model: bool = False
    # --- options ---
    # Its own options: a frozen dataclass declared in its file, whose defaults run it; filled from
    # ``--set <name>.<option>=VALUE`` and a plan's ``[eval.<name>]`` (EvalOptions.with_settings),
    # read with ``context.options.of(name, TheOptions)``.
    options: type[Any] | None = None

    @property
    def evaluates(self) -> bool:
        """Whether ``kpbench eval`` runs it (False for rows written elsewhere)."""
        return self.run is not None


_REGISTRY: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    if protocol.name in _REGISTRY:
        raise ValueError(f"protocol {protocol.name!r} registered twice")
    _REGISTRY[protocol.name] = protocol
    return protocol


def _load_registry() -> dict[str, Protocol]:
    import_package_modules(PROTOCOLS_PACKAGE)  # every protocol file registers its protocol
    load_user_plugins()  # and those of the user's own files (kpbench.plugins)
    return _REGISTRY


def reported_protocols() -> list[Protocol]:
    """Every registered protocol, including row sources that ``kpbench eval`` does not run, in
    report order (:attr:`Protocol.order`, then name)."""
    return sorted(_load_registry().values(), key=lambda protocol: (protocol.order, protocol.name))


def protocol_info(name: str) -> Protocol | None:
    """The registered protocol (evaluated or not) called ``name``, None for rows of an unknown one."""
    return _load_registry().get(name)


def list_protocols() -> list[Protocol]:
    """The protocols ``kpbench eval`` runs, in file-name order."""
    return [protocol for protocol in _load_registry().values() if protocol.evaluates]


def get_protocol(name: str) -> Protocol:
    registry = {protocol.name: protocol for protocol in list_protocols()}
    if name not in registry:
        known = ", ".join([*registry, ALL])
        raise KpbenchError(f"unknown protocol {name!r}; known protocols: {known}")
    return registry[name]


@dataclass
class EvalContext:
    """What a protocol sees: one trained run, its test samples, options and helpers."""

    workdir: WorkDir
    run_dir: Path
    run: TrainedRun | OutputsOnlyRun  # a trained network, or outputs made elsewhere (kpbench.predictions)
    options: EvalOptions
    device: torch.device
    # What :meth:`shared` built, by (data spec with N aside, key): shared by every run's context
    # of one evaluation (opened datasets, test samples, baselines), so that opening a folder,
    # which indexes and checks every file, happens once per evaluation, not once per protocol.
    shared_cache: dict[Any, Any] = field(default_factory=dict)
    # Evaluate on key patches from this box source (a box file, or "edgeboxes") instead of the
    # run's own: a distribution-shift evaluation, whose rows carry :attr:`box_shift`.
    boxes: str | None = None
    # Per-sample values of each protocol run on this context (SAMPLE_COLUMNS), written with its rows.
    sample_values: dict[str, Any] = field(default_factory=dict)
    variant: str = field(init=False)
    seed: int = field(init=False)
    _data_spec: DataSpec = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.variant = self.run.spec.name
        self.seed = int(self.run.config.seed)
        own = self.run.config.data
        self._data_spec = own if self.boxes is None else own.with_boxes(self.boxes, own.box_fill)
        if self._data_spec.box_source == own.box_source:
            self._data_spec = own

    @property
    def box_shift(self) -> str:
        """``""`` on the run's own box source; else ``@boxes-<stem>.<hash4>`` or ``@edgeboxes``, the
        suffix of the conditions and result files of an evaluation on another box source."""
        from kpbench.choices import EDGEBOXES
        from kpbench.identity import box_source_text

        if self._data_spec.box_source == self.run.config.data.box_source:
            return ""
        return "@" + (box_source_text(self._data_spec.boxes_id) if self._data_spec.boxes_id else EDGEBOXES)

    @property
    def files(self) -> RunDir:
        """Where this run's files live (results, grids, provenance)."""
        return RunDir(self.run_dir)

    # --- data -------------------------------------------------------------------------
    @property
    def data_spec(self) -> DataSpec:
        """The run's data, with the key patches of the evaluated box source."""
        return self._data_spec

    def samples(self, split: Split = "test", patch_source: PatchSource = "key", n_patches: int | None = None,
                also_counts: Sequence[int] = ()) -> PatchSampleDataset:
        """Deterministic (no flip) samples of ``split``, built once per evaluation and shared by
        every run with the same data and seed (random patches depend on the seed). Boxes for
        ``also_counts`` patches per image are detected in the same pass when detection runs."""

        from kpbench.samples import make_sample_dataset, open_data

        dataset = self.shared(("dataset",), lambda: open_data(self.data_spec))
        spec = self.data_spec if n_patches is None else replace(self.data_spec, n_patches=n_patches)
        seed = derive_seed(self.seed, "eval")
        return self.shared(
            ("samples", split, patch_source, spec.n_patches, seed),
            lambda: make_sample_dataset(spec, split, seed, self.workdir, patch_source=patch_source,
                                        flip=False, dataset=dataset,
                                        also_counts=also_counts),
        )

    def shared(self, key: tuple, build: Callable[[], T]) -> T:
        """``build()`` once per evaluation for this data (any N) and ``key``, shared by every run's
        context: for what does not depend on the trained weights (baselines, raw-pixel scores,
        the samples themselves). ``key`` must name everything else the result depends on."""
        from dataclasses import replace

        full_key = (replace(self.data_spec, n_patches=0), *key)
        if full_key not in self.shared_cache:
            self.shared_cache[full_key] = build()
        value: T = self.shared_cache[full_key]
        return value

    def prior_mask(self) -> torch.Tensor:
        """The prior mask (1, S, S): mean training mask of the key boxes, thresholded at 0.5."""
        from kpbench.diagnostics import dataset_prior_mask

        return self.shared(("prior_mask", self.data_spec.n_patches),
                           lambda: dataset_prior_mask(self.samples("train")))

    def nearest_neighbour(self) -> NearestNeighbour:
        """The nearest-neighbour baseline over the training split (built once per dataset)."""
        from kpbench.baselines import NearestNeighbour

        return self.shared(("nearest_neighbour", self.data_spec.n_patches),
                           lambda: NearestNeighbour.fit(self.samples("train")))

    def batches(self, samples: PatchSampleDataset, limit: int | None = None,
                spread: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of at most ``limit`` (default ``options.max_samples``) samples: the first ones,
        or with ``spread`` a seeded random subset (in dataset order), so that a capped sample of
        a dataset stored class by class still covers every class."""
        limit = min(self.options.max_samples if limit is None else limit, len(samples))
        positions: Sequence[int] = range(limit)
        if spread and limit < len(samples):
            rng = np.random.default_rng(derive_seed(self.seed, "subset"))
            positions = np.sort(rng.choice(len(samples), size=limit, replace=False)).tolist()
        from kpbench.samples import sample_batches

        # Each batch also carries "sample_id" (B,): the images' dataset indices, on the CPU, so
        # that per-sample values can be paired across runs (MetricAccumulator.add(ids=...)).
        ids = samples.indices[np.asarray(positions, dtype=np.int64)]
        offset = 0
        for batch in sample_batches(samples, positions, self.options.batch_size, self.device):
            size = len(batch["patches"])
            batch["sample_id"] = torch.as_tensor(ids[offset:offset + size])
            offset += size
            yield batch

    def noise_generator(self, tag: str) -> torch.Generator:
        """A seeded generator so that z and added noise repeat across re-runs."""
        generator = torch.Generator(device="cpu")
        generator.manual_seed(derive_seed(self.seed, "eval", tag) % 2**63)
        return generator

    def generate(self, patches: torch.Tensor, tag: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """patches (B, N, 3, S, S) -> image (B, 3, S, S), mask (B, 1, S, S) or None."""
        # The tag also names the request, so that stored outputs can be served for it.
        return self.run.generate(patches, rng=self.noise_generator(tag), key=tag)

    @property
    def predicts_mask(self) -> bool:
        return self.run.spec.mask_decoder

    @property
    def reconstruction_metric_names(self) -> tuple[str, ...]:
        """The names :func:`reconstruction_metrics` returns for this run (with a real image)."""
        return (("mask_iou",) if self.predicts_mask else ()) + ("appearance_l1", "psnr", "ssim")

    # --- rows -------------------------------------------------------------------------
    def row(self, protocol: str, condition: str, metric: str, value: float, n: int,
            extractor: str = "", note: str = "", ci: tuple[float, float] = (math.nan, math.nan),
            variant: str | None = None) -> ResultRow:
        """A row of this run (or of a baseline, ``variant="baseline:<name>"``)."""
        return ResultRow(variant or self.variant, self.seed, protocol, condition, metric, float(value),
                         int(n), extractor, note, float(ci[0]), float(ci[1]))

    def sample_row(self, protocol: str, condition: str, metric: str, values: np.ndarray,
                   extractor: str = "", note: str = "", variant: str | None = None) -> ResultRow:
        """The mean of per-sample ``values`` with its seeded 95 % bootstrap interval."""
        from kpbench.stats import bootstrap_ci

        values = np.asarray(values, dtype=np.float64)
        seed = derive_seed(self.seed, "bootstrap", protocol, condition, metric, variant or self.variant)
        finite = values[np.isfinite(values)]
        mean = float(finite.mean()) if len(finite) else math.nan
        return self.row(protocol, condition, metric, mean, len(finite), extractor, note,
                        bootstrap_ci(finite, seed), variant)


# The per-sample metrics every reconstruction protocol reports (computed in kpbench.metrics).
register_metric("mask_iou", "mask IoU", "higher", order=10, bounds=(0.0, 1.0))
register_metric("appearance_l1", "appearance L1", "lower", order=20, bounds=(0.0, 2.0))  # pixels in [-1, 1]
register_metric("psnr", "PSNR", "higher", order=30)
register_metric("ssim", "SSIM", "higher", order=40, bounds=(-1.0, 1.0))
# plain L1 of the whole image, in older result files
register_metric("l1", "L1", "lower", order=50, bounds=(0.0, 2.0))


def reconstruction_metrics(
    generated: torch.Tensor,
    real: torch.Tensor | None,
    pred_mask: torch.Tensor | None,
    true_mask: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Per-sample metrics used by every protocol: name -> (B,) values.

    Mask IoU where the variant predicts a mask; appearance L1 inside the true mask and
    PSNR/SSIM of the whole image where a real image exists.
    """
    from kpbench import metrics

    values: dict[str, torch.Tensor] = {}
    if pred_mask is not None:
        values["mask_iou"] = metrics.mask_iou(pred_mask, true_mask)
    if real is not None:
        values["appearance_l1"] = metrics.appearance_l1(generated, real, true_mask)
        values["psnr"] = metrics.psnr(generated, real)
        values["ssim"] = metrics.ssim(generated, real)
    return values


class MetricAccumulator:
    """Collects per-sample metric values per (variant or baseline, condition) and turns them into
    mean rows with bootstrap intervals, keeping the values themselves (keyed by sample id) for
    paired comparisons."""

    def __init__(self) -> None:
        self._values: dict[tuple[str | None, str, str], list[np.ndarray]] = {}
        self._ids: dict[tuple[str | None, str, str], list[np.ndarray | None]] = {}

    def add(self, condition: str, values: dict[str, torch.Tensor], variant: str | None = None,
            ids: torch.Tensor | np.ndarray | None = None, repeat: int = 0) -> None:
        """``variant``: None for the run itself, ``baseline:<name>`` for a baseline's values;
        ``ids`` (B,): the samples' dataset indices (``batch["sample_id"]``), ``repeat`` the z draw:
        without ids the values make a row but are not kept."""
        keys = None if ids is None else np.asarray(ids, dtype=np.int64)
        for metric, tensor in values.items():
            key = (variant, condition, metric)
            self._values.setdefault(key, []).append(tensor.detach().cpu().numpy())
            self._ids.setdefault(key, []).append(
                None if keys is None else np.stack([keys, np.full_like(keys, repeat)], axis=1))

    def rows(self, context: EvalContext, protocol: str) -> list[ResultRow]:
        """The rows; the per-sample values go to ``context.sample_values[protocol]``."""
        import pandas as pd

        from kpbench.results import SAMPLE_COLUMNS

        frames = []
        for (variant, condition, metric), chunks in self._values.items():
            ids = self._ids[(variant, condition, metric)]
            if any(chunk is None for chunk in ids):
                continue
            keys = np.concatenate([chunk for chunk in ids if chunk is not None])  # (M, 2)
            frames.append(pd.DataFrame({
                "variant": variant or context.variant, "condition": condition, "metric": metric,
                "extractor": "", "sample": keys[:, 0], "repeat": keys[:, 1],
                "value": np.concatenate(chunks).astype(np.float64)}))
        context.sample_values[protocol] = (pd.concat(frames, ignore_index=True) if frames
                                           else pd.DataFrame(columns=list(SAMPLE_COLUMNS)))
        return [context.sample_row(protocol, condition, metric, np.concatenate(chunks), variant=variant)
                for (variant, condition, metric), chunks in self._values.items()]


def find_runs(workdir: WorkDir, variants: list[str] | None, seeds: list[int] | None,
              names: list[str] | None = None) -> list[Path]:
    """Run folders under ``workdir/runs`` matching the filters (all when None): variant and seed
    come from each run's config.json, whatever the folder is called; ``names`` are folder names."""
    from kpbench.runs import list_runs
    from kpbench.variant import get_variant

    for name in variants or []:
        get_variant(name)  # unknown names fail here with the list of known variants
    if not workdir.runs.is_dir():
        raise KpbenchError(f"no runs under {workdir.runs}; train one with `kpbench train --variant full`")
    infos = list_runs(workdir.runs)
    unknown = sorted(set(names or []) - {info.name for info in infos})
    if unknown:
        raise KpbenchError(f"no run named {', '.join(unknown)} under {workdir.runs}; "
                           "`kpbench runs` lists them")
    chosen = [info.run_dir for info in infos
              if (not variants or info.variant in variants) and (not seeds or info.seed in seeds)
              and (not names or info.name in names)]
    if not chosen:
        wanted = f" for variants {variants}" if variants else ""
        wanted += f" seeds {seeds}" if seeds else ""
        raise KpbenchError(
            f"no trained runs{wanted} under {workdir.runs}; train with `kpbench train --variant NAME`"
        )
    return chosen


@dataclass
class Evaluation:
    """What :func:`evaluate` did: the result files per run, and wall seconds per protocol summed
    over runs (``load`` covers loading each run's weights and writing its provenance); the runs
    it could not load (skipped, the others evaluated), those it left out because their training
    has not started, and the protocols that gave no value at all for some runs."""

    written: dict[Path, list[Path]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    # Run -> why it could not be loaded (no checkpoint, a plug-in that cannot be imported, in use
    # by another process): one line that says what to do. Its protocols did not run.
    skipped: dict[Path, str] = field(default_factory=dict)
    # Runs chosen by a filter (not named) without a checkpoint yet (`kpbench runs`: "not
    # started"): nothing to evaluate, left out without counting as a failure.
    not_started: list[Path] = field(default_factory=list)
    # Protocol (with its box-source suffix) -> run -> the rows' note, where every row of the
    # protocol for that run is NaN (no Inception weights, no labels): a gap the CSV note explains.
    empty: dict[str, dict[Path, str]] = field(default_factory=dict)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def timing_lines(self) -> list[str]:
        total = sum(self.seconds.values())
        runs = max(len(self.written), 1)
        return [f"{name:<16} {seconds:7.1f} s  {seconds / runs:6.1f} s/run  {seconds / max(total, 1e-9):4.0%}"
                for name, seconds in sorted(self.seconds.items(), key=lambda item: -item[1])]

    def skipped_summary(self) -> str | None:
        """One line for the runs that could not be loaded (None when there were none)."""
        if not self.skipped:
            return None
        names = [run_dir.name for run_dir in self.skipped]
        shown = ", ".join(names[:SHOWN_RUNS]) + (f" and {len(names) - SHOWN_RUNS} more"
                                                 if len(names) > SHOWN_RUNS else "")
        return (f"evaluated {_runs(len(self.written))}; skipped {len(names)} that could not be loaded: "
                f"{shown} (each said why above)")

    def empty_lines(self) -> list[str]:
        """One line per protocol that gave no value for some runs: how many, and why (its notes)."""
        return [f"{protocol}: no values for {_runs(len(notes))} ("
                f"{'; '.join(dict.fromkeys(note or 'no note' for note in notes.values()))})"
                for protocol, notes in self.empty.items()]


SHOWN_RUNS = 5  # runs named in a one-line summary; the rest are counted


def _runs(count: int) -> str:
    return f"{count} run{'s' if count != 1 else ''}"


def _not_started(run_dir: Path) -> bool:
    """Whether the run's training has not started: no checkpoint, and nobody training it now."""
    from kpbench.runs import describe_run

    info = describe_run(run_dir)
    return info is not None and info.status == "not started"


def evaluate(
    workdir: WorkDir,
    protocol_names: list[str],
    variants: list[str] | None = None,
    seeds: list[int] | None = None,
    options: EvalOptions | None = None,
    on_progress: Callable[[str], None] | None = None,
    names: list[str] | None = None,
    boxes: str | None = None,
    shared: dict[Any, Any] | None = None,
) -> Evaluation:
    """Run protocols on matching runs. Work that does not depend on a run's weights (samples,
    baselines, raw-pixel and random-encoder scores) is done once and shared across runs, and
    across calls that pass the same ``shared`` dict (the plan runner's cells, one per call).
    ``boxes`` (a box file or "edgeboxes"): evaluate on that box source's key patches; for runs
    trained on another, rows go to ``results/<protocol>@<source>.csv`` with the conditions
    suffixed the same way (:attr:`EvalContext.box_shift`), beside the run's own rows."""
    options = options or EvalOptions()
    if ALL in protocol_names:
        protocols = list_protocols()
    else:
        protocols = [get_protocol(name) for name in protocol_names]
    device = pick_device(options.device)
    outcome = Evaluation()

    cache: dict[Any, Any] = {} if shared is None else shared  # EvalContext.shared_cache of every run
    notices: dict[str, None] = {}  # why a run skipped a protocol, each said once
    chosen = find_runs(workdir, variants, seeds, names)
    # Runs chosen by a filter whose training has not started are left out (asking for every run
    # means every trained one); a run named with ``names`` is evaluated, or skipped as unloadable.
    outcome.not_started = [run_dir for run_dir in chosen if run_dir.name not in (names or [])
                           and _not_started(run_dir)]
    if outcome.not_started:
        left_out = [run_dir.name for run_dir in outcome.not_started]
        if len(left_out) == len(chosen):
            raise KpbenchError(f"nothing to evaluate: the training of {', '.join(left_out)} has not started "
                               "(no checkpoint yet); train first (`kpbench runs` shows each run's status)")
        warnings.warn(f"left out {_runs(len(left_out))} whose training has not started (no checkpoint yet): "
                      f"{', '.join(left_out)}", stacklevel=2)
    for run_dir in chosen:
        if run_dir in outcome.not_started:
            continue
        with ExitStack() as held:
            # A run that cannot be loaded is skipped with its reason and the others evaluated;
            # errors once it is loaded (options, weights, data shared by the runs) stop everything.
            try:
                # Not while it trains, nor under another evaluation.
                held.enter_context(RunLock(run_dir, "eval"))
                with outcome.timed("load"):
                    # The one place where the batch-norm mode is applied: every protocol's generator.
                    run = load_evaluated_run(run_dir, device).with_bn_mode(options.bn_mode)
            except KpbenchError as error:
                outcome.skipped[run_dir] = str(error)
                warnings.warn(f"skipped run {run_dir.name}: {error}", stacklevel=2)
                continue
            context = EvalContext(workdir, run_dir, run, run.evaluation_options(options), device,
                                  cache, boxes)
            shift = context.box_shift
            ran = []
            for protocol in protocols:
                reason = run.unavailable(protocol, shift)
                if reason is not None:
                    notices.setdefault(reason)
                    continue
                if on_progress:
                    on_progress(f"{run_dir.name}: {protocol.name}{shift}")
                assert protocol.run is not None  # list_protocols and get_protocol give runnable ones
                with outcome.timed(protocol.name):
                    rows = protocol.run(context)
                if shift:
                    rows = [replace(row, condition=f"{row.condition}{shift}") for row in rows]
                if not any(math.isfinite(row.value) for row in rows):
                    outcome.empty.setdefault(protocol.name + shift, {})[run_dir] = next(
                        (row.note for row in rows if row.note), "no rows" if not rows else "")
                samples = context.sample_values.pop(protocol.name, None)
                if shift and samples is not None and len(samples):
                    samples = samples.assign(condition=samples["condition"].astype(str) + shift)
                outcome.written.setdefault(run_dir, []).append(
                    write_rows(run_dir, protocol.name + shift, rows, samples))
                ran.append(protocol.name)
            if ran:
                with outcome.timed("load"):
                    write_provenance(context, ran)
    for notice in [*notices, *outcome.empty_lines()]:
        warnings.warn(notice, stacklevel=2)
    return outcome


def load_evaluated_run(run_dir: Path, device: torch.device) -> TrainedRun | OutputsOnlyRun:
    """The run of ``run_dir`` as evaluation uses it: a trained network (kpbench.runs.load_run), or
    the outputs a program made elsewhere (kpbench.predictions.load_prediction_run)."""
    from kpbench.predictions import is_prediction_run, load_prediction_run
    from kpbench.runs import load_run

    return load_prediction_run(run_dir, device) if is_prediction_run(run_dir) else load_run(run_dir, device)


def write_provenance(context: EvalContext, protocol_names: list[str]) -> Path:
    """Record what the rows of ``context.run_dir`` came from in ``results/provenance.json``:
    data (manifest hash, side, split sizes), the training (or the predictions' files), device,
    package versions, how each protocol's images were generated (``generation``: batch-norm mode,
    batch size) and what each protocol that ran adds (:attr:`Protocol.provenance`: FID its
    feature extractor and weights hash). Earlier entries are kept."""
    import json

    from kpbench.io import atomic_write_json
    from kpbench.runtime import package_versions

    path = context.files.provenance
    record = json.loads(path.read_text()) if path.is_file() else {}
    dataset = context.samples("test").dataset  # already opened by the protocols
    record["data" + context.box_shift] = {
        "source": context.data_spec.source,
        "manifest_hash": dataset.manifest.hash,
        "image_side": context.data_spec.size,
        "preset": context.data_spec.preset,
        "train_images": dataset.manifest.num_train,
        "test_images": dataset.manifest.num_test,
        "patches_per_image": context.data_spec.n_patches,
        # "edgeboxes" or the box file's id (<stem>.<content hash>), and where that file was
        "boxes": context.data_spec.box_source,
        "box_file": context.data_spec.boxes,
    }
    for origin in ("training", "predictions"):  # what the run is now replaces what it was
        record.pop(origin, None)
    record.update(context.run.origin())  # its training, or the predictions made elsewhere
    device = str(context.device)
    if context.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(context.device)})"
    record["device"] = device
    record["versions"] = {package: found or "not installed" for package, found in package_versions().items()}
    # How the rows of each protocol that ran were generated (kept per protocol: a later
    # evaluation of other protocols with other settings does not relabel these rows).
    generation = {"bn_mode": context.run.bn_mode, "batch_size": context.options.batch_size}
    record.setdefault("generation", {}).update({name: generation for name in protocol_names})
    for name in protocol_names:
        protocol = protocol_info(name)
        if protocol is not None and protocol.provenance is not None:
            record.update(protocol.provenance(context))
    return atomic_write_json(path, record)
