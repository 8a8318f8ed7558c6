"""kpbench from Python: typed functions for what the command line does.

    from kpbench import api

    api.prepare_data("builtin:200", workdir="work")                    # kpbench data prepare
    run = api.train("full", "builtin:200", steps=30, width=0.0625, batch_size=8, workdir="work")
    api.evaluate(["noise", "patches"], workdir="work", max_samples=16)  # kpbench eval
    rows = api.load_results("work")                                    # every result row (pandas)
    claims = api.load_claims("work")                                   # the paper's claims, judged
    api.report("mine", workdir="work")                                 # kpbench report
    api.export_model(run, "exported")                                  # kpbench export-model
    result = api.generate(run, ["a.png", "b.png", "c.png"], samples=4)  # kpbench generate

Every function takes ``workdir`` as the commands take ``--workdir`` (None: ``KPBENCH_WORKDIR``
or the current folder) and raises :class:`kpbench.errors.KpbenchError` for bad input. The
commands of :mod:`kpbench.cli` that these cover call them, so both paths run the same code.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd
import torch
from PIL import Image

from kpbench.choices import GENERATE_BN_MODE
from kpbench.dataspec import DataSpec
from kpbench.errors import KpbenchError
from kpbench.generate import Generated, generate_from_patches, read_patches
from kpbench.paths import WorkDir
from kpbench.runs import TrainedRun

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from kpbench.protocol import EvalOptions, Evaluation
    from kpbench.report import ReportResult

__all__ = ["Generated", "PreparedData", "data_spec", "evaluate", "export_model", "generate", "load_claims",
           "load_model", "load_results", "prepare_data", "report", "train", "write_generated"]

PathLike = Path | str
T = TypeVar("T", bound="DataclassInstance")


def data_spec(data: str | DataSpec = "builtin", **settings: Any) -> DataSpec:
    """A dataset and how it is preprocessed and patched: a folder or ``builtin[:COUNT]`` with
    :class:`kpbench.samples.DataSpec`'s settings (``size``, ``preset``, ``crop``, ``n_patches``,
    ``edge_model``, ``split_seed``, ``boxes``, ``box_fill``), or a spec with those replaced."""
    spec = data if isinstance(data, DataSpec) else DataSpec(source=data)
    return _replaced(spec, settings, "data setting")


def _replaced(value: T, changes: dict[str, Any], what: str) -> T:
    """``dataclasses.replace`` with a one-line error naming the known fields for unknown ones."""
    known = [field.name for field in fields(value)]
    unknown = sorted(set(changes) - set(known))
    if unknown:
        raise KpbenchError(f"unknown {what} {', '.join(unknown)}; known: {', '.join(known)}")
    return replace(value, **changes)


def _not_in_a_worker_import() -> None:
    """Refuse to start work while multiprocessing prepares a worker process by importing the
    user's script (it marks the process as inheriting then, and refuses to start processes
    itself for the same reason): key-patch detection's workers import the main script, and a
    script without a ``__main__`` guard would start the same work again there. The worker dies
    of this error, and the parent reports it (kpbench.boxcache)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise KpbenchError("kpbench.api was called while a worker process imported your script; put "
                           "the script's code under `if __name__ == \"__main__\":`")


@dataclass(frozen=True)
class PreparedData:
    """What :func:`prepare_data` did: the dataset described, its manifest file and the key-patch
    summary lines that ``kpbench data prepare`` prints."""

    spec: DataSpec
    description: str
    manifest: Path
    box_summary: list[str]


def prepare_data(data: str | DataSpec = "builtin", *, workdir: PathLike | None = None,
                 workers: int | None = None, progress: bool = False,
                 say: Callable[[str], None] | None = None, **settings: Any) -> PreparedData:
    """Index the dataset, write its manifest and detect (or read) its key patches once, cached
    under ``workdir/cache``. ``settings``: see :func:`data_spec`. ``say`` hears what is being
    prepared before detection starts."""
    from kpbench.boxcache import summarize_boxes
    from kpbench.data import check_split_sizes, describe
    from kpbench.samples import load_boxes, open_data

    _not_in_a_worker_import()
    spec = data_spec(data, **settings)
    work = WorkDir.resolve(workdir)
    dataset = open_data(spec)
    check_split_sizes(dataset)
    manifest = dataset.write_manifest(work.cache / "manifests")
    description = describe(dataset)
    if say is not None:
        say(f"dataset: {description}")
        say(f"boxes: {spec.boxes or spec.box_source}" + (f" (id {spec.box_source})" if spec.boxes else ""))
    table = load_boxes(dataset, spec, work, workers=workers, progress=progress)
    return PreparedData(spec, description, manifest,
                        summarize_boxes(table, from_file=spec.boxes is not None).lines())


def train(variant: str = "full", data: str | DataSpec = "builtin", *, seed: int = 0,
          workdir: PathLike | None = None, **settings: Any) -> Path:
    """Train one variant with one seed (or continue it) and return its run folder.
    ``settings``: any :class:`kpbench.config.TrainConfig` field (``steps``, ``epochs``,
    ``batch_size``, ``width``, ``patch_source``, ``init``, ``device``, ``progress``, ...)."""
    from kpbench import train as training
    from kpbench.config import TrainConfig
    from kpbench.variant import get_variant

    _not_in_a_worker_import()
    get_variant(variant)  # an unknown name fails here, with the list of known ones
    config = TrainConfig(variant=variant, data=data_spec(data), seed=seed,
                         workdir=str(WorkDir.resolve(workdir).root))
    return training.train(_replaced(config, settings, "training setting"))


def evaluate(protocols: str | Sequence[str] = "all", *, workdir: PathLike | None = None,
             variants: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
             runs: Sequence[str] | None = None, boxes: str | None = None,
             options: EvalOptions | None = None, on_progress: Callable[[str], None] | None = None,
             **option_changes: Any) -> Evaluation:
    """Run evaluation protocols (names, or "all") on the trained runs of ``workdir`` (or only
    those of ``variants``, ``seeds`` or run folder names ``runs``); rows go to each run's
    ``results/``. ``option_changes``: shared :class:`kpbench.protocol.EvalOptions` fields
    (``max_samples``, ``bn_mode``, ``device``, ...) and protocols' own options by name
    (``fid_samples``, ``extractor``, ...; :meth:`~kpbench.protocol.EvalOptions.with_settings`).
    A run that cannot be loaded (no checkpoint, a plug-in that cannot be imported, in use) is
    skipped with a warning and listed in the result's ``skipped`` (run folder -> why), the others
    evaluated; runs not named in ``runs`` whose training has not started are left out
    (``not_started``). Bad options, protocols or data still raise :class:`KpbenchError`."""
    from kpbench import protocol

    _not_in_a_worker_import()
    names = [protocols] if isinstance(protocols, str) else list(protocols)
    chosen = (options or protocol.EvalOptions()).with_settings(option_changes)
    return protocol.evaluate(WorkDir.resolve(workdir), names, list(variants) if variants else None,
                             list(seeds) if seeds else None, chosen, on_progress=on_progress,
                             names=list(runs) if runs else None, boxes=boxes)


def report(name: str = "latest", *, workdir: PathLike | None = None, title: str | None = None,
           include_images: bool = True) -> ReportResult:
    """Write ``reports/NAME/`` (index.html, results.csv, results.md) from every result row."""
    from kpbench.report import build_report

    return build_report(WorkDir.resolve(workdir), name, title=title, include_images=include_images)


def load_results(workdir: PathLike | None = None) -> pd.DataFrame:
    """Every result row of the work dir's runs: :data:`kpbench.results.COLUMNS`, ``run`` (the
    run folder) and ``label`` (the run as reports name it: its variant and the settings that
    tell it apart from the other runs, e.g. ``full-random``)."""
    from kpbench.report.aggregation import label_runs
    from kpbench.results import read_rows

    runs_root = WorkDir.resolve(workdir).runs
    rows = read_rows(runs_root)
    labelled, _ = label_runs(rows, runs_root)
    return rows.assign(label=labelled["variant"].to_numpy())


CLAIM_COLUMNS = ("claim", "verdict", "primary", "difference", "reason", "power", "p_value", "holm_level",
                 "evidence")


def load_claims(workdir: PathLike | None = None) -> pd.DataFrame:
    """The paper's claims judged on the work dir's rows, as the report judges them: one row per
    claim (:data:`CLAIM_COLUMNS`; ``evidence`` holds each test as a dict)."""
    from kpbench.report.aggregation import judge_claims, label_runs
    from kpbench.results import read_rows, read_samples

    runs_root = WorkDir.resolve(workdir).runs
    rows = read_rows(runs_root)
    if rows.empty:
        raise KpbenchError(f"no result rows under {runs_root}: evaluate first")
    rows, _ = label_runs(rows, runs_root)
    samples, _ = label_runs(read_samples(runs_root), runs_root)
    results, error = judge_claims(rows, samples)
    if error:
        raise KpbenchError(f"the claims cannot be judged on these rows: {error}")
    return pd.DataFrame([{"claim": result.claim, "verdict": str(result.verdict), "primary": result.primary,
                          "difference": result.difference, "reason": result.reason, "power": result.power,
                          "p_value": result.p_value, "holm_level": result.holm_level,
                          "evidence": result.evidence} for result in results], columns=list(CLAIM_COLUMNS))


def load_model(model: PathLike, device: str | torch.device | None = "cpu") -> TrainedRun:
    """A trained generator from a run folder or an exported folder (:mod:`kpbench.modelcard`)."""
    from kpbench.modelcard import load_model as load

    return load(model, device)


def export_model(run: PathLike, out: PathLike) -> Path:
    """Write a run's generator (safetensors) and its card (JSON) to the folder ``out``; returns
    the card's path."""
    from kpbench.modelcard import export_model as export

    return export(run, out)


def generate(model: PathLike | TrainedRun, patches: Sequence[PathLike | Image.Image], *,
             samples: int = 1, seed: int = 0, bn_mode: str = GENERATE_BN_MODE,
             device: str | None = "cpu") -> Generated:
    """``samples`` images (and masks) from patch images (files or PIL images, any size, prepared
    as training prepares patches: :mod:`kpbench.generate`) with a run folder, an exported folder
    or a loaded model. The same seed gives the same images."""
    from kpbench.seeds import check_seed

    check_seed(seed)  # before the model loads
    loaded = model if isinstance(model, TrainedRun) else load_model(model, device)
    return generate_from_patches(loaded, read_patches(patches, loaded), samples=samples, seed=seed,
                                 bn_mode=bn_mode)


def write_generated(result: Generated, out: PathLike) -> list[Path]:
    """Write :func:`generate`'s images to ``out`` (PNG) and its masks to ``<stem>.mask.png``."""
    from kpbench.generate import write_generated as write

    return write(result, Path(out))

