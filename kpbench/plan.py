"""Experiment plans: a TOML file of datasets, variants, conditions and seeds -> cells, each one
run (train, then evaluate), then one report per dataset. ``kpbench run PLAN`` executes it.

    name = "paper-cpu"
    extends = "other.toml"       # optional: that plan's settings, these replacing them key by key
    seeds = [0, 1, 2]
    plugins = ["my_variant.py"]  # optional: variant files of your own (docs/extending.md)
    [train]                      # TrainConfig fields for every cell (steps, width, batch_size, ...)
    steps = 400
    [eval]                       # EvalOptions settings, and the protocols ("all" or names)
    protocols = ["all"]
    [eval.noise]                 # a protocol's own options (also flat in [eval]: sigmas = [...])
    sigmas = [0.0, 0.1]
    [datasets.builtin]           # DataSpec fields; a dataset without ``source`` takes the folder
    source = "builtin:1200"      #   given on the command line: --data NAME=PATH
    [datasets.builtin.boxes]     # named box files (kpbench.boxfile) for the ``boxes`` setting
    mine = "boxes/builtin.csv"   #   (a path relative to the current folder, like ``source``)
    [[experiments]]              # cells = variants x every list-valued setting x seeds
    name = "random-patches"
    variants = ["full"]
    patch_source = ["key", "random"]
    boxes = ["edgeboxes", "mine"]  # box sources by name; "edgeboxes" (the default) is kpbench's

A cell is a run identity (kpbench.identity): experiments that ask for the same run share it.
Each dataset gets its own work dir, ``<workdir>/<dataset>/``. A cell whose run is finished and
evaluated with every protocol of the plan is skipped; an interrupted one resumes from its
checkpoint; one that fails is reported and the others go on.

This module reads and checks plan files, without torch: :mod:`kpbench.runner` runs the cells
(here, or as submitit jobs) and :mod:`kpbench.cost` estimates what they cost to train. Only
resolving the ``[eval]`` protocols and their options reads the protocol registry, whose files
import torch.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kpbench.choices import EDGEBOXES
from kpbench.config import TrainConfig
from kpbench.dataspec import DataSpec
from kpbench.errors import KpbenchError
from kpbench.paths import WorkDir

if TYPE_CHECKING:
    from kpbench.protocol import EvalOptions

TRAIN_FIELDS = ({f.name for f in fields(TrainConfig)}
                - {"variant", "seed", "data", "workdir", "restart", "progress"})
DATA_FIELDS = {f.name for f in fields(DataSpec)} - {"boxes_id"}  # the id is made from the file
EXPERIMENT_KEYS = {"name", "variants", "datasets", "seeds"}
TUPLE_FIELDS = {"betas"}  # TrainConfig fields whose value is a list in TOML


@dataclass(frozen=True)
class DatasetPlan:
    name: str
    spec: DataSpec | None  # None: no source given (``skipped`` says why)
    workdir: WorkDir
    skipped: str = ""
    box_files: dict[str, str] = field(default_factory=dict)  # [datasets.NAME.boxes]: name -> file
    box_fill: str | None = None  # for the cells on a box file, unless [train] or the experiment says


@dataclass(frozen=True)
class Cell:
    """One run of the plan: its config (work dir included) and the experiments that want it."""

    config: TrainConfig
    name: str  # the run's folder name
    dataset: str
    experiments: tuple[str, ...]

    @property
    def run_dir(self) -> Path:
        return WorkDir.resolve(self.config.workdir).runs / self.name

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.name}"


@dataclass(frozen=True)
class Plan:
    name: str
    source: Path
    datasets: list[DatasetPlan]
    cells: list[Cell]
    protocols: tuple[str, ...]  # resolved names (no "all")
    eval_options: EvalOptions
    launcher: dict[str, Any] = field(default_factory=dict)  # [launcher] table: submitit parameters



def _fail(path: Path, message: str) -> KpbenchError:
    return KpbenchError(f"plan {path}: {message}")


def _check_keys(path: Path, where: str, table: dict[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise _fail(path, f"unknown setting{plural} {', '.join(unknown)} in {where}; "
                    f"known: {', '.join(sorted(allowed))}")


def shipped_plans_folder() -> Path:
    """The plans that come with kpbench: ``plans/`` beside the package in a source checkout,
    ``kpbench/plans/`` in an installed wheel (pyproject.toml's package-dir)."""
    package = Path(__file__).resolve().parent
    inside = package / "plans"
    return inside if inside.is_dir() else package.parent / "plans"


def shipped_plan(name: str) -> Path:
    """The shipped plan file called ``name`` (``demo`` -> plans/demo.toml)."""
    path = shipped_plans_folder() / f"{name}.toml"
    if not path.is_file():
        raise KpbenchError(f"no shipped plan {name!r}; shipped: {', '.join(shipped_plan_names())}")
    return path


def shipped_plan_names() -> list[str]:
    return sorted(path.stem for path in shipped_plans_folder().glob("*.toml"))


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied: tables merge key by key, any other value replaces."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_plan_file(path: Path, extended_by: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The plan's TOML tables, on top of those of the plan it ``extends`` (a path relative to
    its own folder)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if extended_by:
            raise _fail(extended_by[-1], f"extends {path}, which does not exist") from None
        shipped = shipped_plans_folder() / f"{path}.toml"
        if path.parent == Path(".") and not path.suffix and shipped.is_file():  # kpbench run demo
            return _read_plan_file(shipped)
        raise KpbenchError(f"no plan file {path} (shipped plans, usable by name: "
                           f"{', '.join(shipped_plan_names())})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise _fail(path, f"not valid TOML ({error})") from None
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise _fail(path, f"extends must name a plan file, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in (p.resolve() for p in (*extended_by, path)):
        raise _fail(path, f"extends {base}, which extends it back")
    return _merged(_read_plan_file(base_path, (*extended_by, path)), raw)


def load_plan(path: Path | str, workdir: Path | str | None = None,
              data: dict[str, str] | None = None, overrides: dict[str, Any] | None = None) -> Plan:
    """Read and check a plan file (or a shipped plan by name: ``demo``). ``workdir`` defaults to
    ``./kpbench-<plan name>``; ``data`` maps dataset names to sources given on the command line
    (they override the file's); ``overrides`` replaces settings as an ``extends`` plan would
    (``{"train": {"steps": 10}}``)."""
    path = Path(path)
    raw = _merged(_read_plan_file(path), overrides or {})
    _check_keys(path, "the plan", raw, {"name", "description", "seeds", "train", "eval", "datasets",
                                         "experiments", "launcher", "plugins"})
    _load_plugins(path, raw.get("plugins", []))
    name = str(raw.get("name") or path.stem)
    root = Path(workdir) if workdir is not None else Path(f"kpbench-{name}")
    data = dict(data or {})

    datasets = _read_datasets(path, raw.get("datasets", {}), root, data)
    unknown_data = sorted(set(data) - {d.name for d in datasets})
    if unknown_data:
        raise _fail(path, f"--data names {', '.join(unknown_data)}, which the plan does not have; its "
                    f"datasets: {', '.join(d.name for d in datasets)}")

    train_table = raw.get("train", {})
    _check_keys(path, "[train]", train_table, TRAIN_FIELDS | DATA_FIELDS)
    protocols, options = _read_eval(path, raw.get("eval", {}))

    seeds = _seeds(path, raw.get("seeds", [0]))
    experiments = raw.get("experiments") or []
    if not experiments:
        raise _fail(path, "no [[experiments]]: say which variants and conditions to run")
    cells: dict[str, Cell] = {}
    for index, experiment in enumerate(experiments):
        for cell in _expand(path, index, experiment, train_table, datasets, seeds):
            previous = cells.get(cell.key)
            if previous is None:
                cells[cell.key] = cell
            elif previous.config != cell.config:  # same run, other length or execution settings
                new_values = cell.config.to_dict()
                differences = [f"{k}: {v!r} vs {new_values[k]!r}"
                               for k, v in previous.config.to_dict().items() if new_values[k] != v]
                askers = f"{', '.join(previous.experiments)} and {', '.join(cell.experiments)}"
                raise _fail(path, f"run {cell.key} is asked for by {askers} with different settings "
                            f"({'; '.join(differences)}); give them one value (these settings are "
                            "not part of a run's identity)")
            else:
                cells[cell.key] = replace(previous, experiments=previous.experiments + cell.experiments)
    launcher = raw.get("launcher", {})
    return Plan(name, path, datasets, list(cells.values()), protocols, options, launcher)


def _load_plugins(path: Path, plugins: Any) -> None:
    """``plugins = ["my_variant.py", "mypackage.variants"]``: variant (or protocol) files of the
    user's own (a path relative to the current folder, like ``source``), imported before the
    experiments name their variants, and named to every process the plan starts."""
    from kpbench.plugins import add_plugin

    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise _fail(path, f"plugins must be a list of .py files or module names, got {plugins!r}")
    for reference in plugins:
        try:
            add_plugin(reference)
        except KpbenchError as error:
            raise _fail(path, str(error)) from None


def _read_datasets(path: Path, table: dict[str, Any], root: Path, data: dict[str, str]) -> list[DatasetPlan]:
    if not table:
        table = {"builtin": {"source": "builtin"}}
    datasets = []
    for name, values in table.items():
        if not isinstance(values, dict):
            raise _fail(path, f"[datasets.{name}] must be a table")
        _check_keys(path, f"[datasets.{name}]", values, DATA_FIELDS)
        values = dict(values)
        box_files, box_fill = values.pop("boxes", {}), values.pop("box_fill", None)
        if not isinstance(box_files, dict) or not all(isinstance(v, str) for v in box_files.values()):
            raise _fail(path, f"[datasets.{name}.boxes] must be a table of box files by name "
                        '(authors = "authors_boxes.csv"); choose one with boxes = "NAME" in [train] '
                        "or an experiment")
        if EDGEBOXES in box_files:
            raise _fail(path, f"[datasets.{name}.boxes]: {EDGEBOXES!r} names kpbench's own detector")
        source = data.get(name, values.get("source"))
        workdir = WorkDir.resolve(root / name)
        if not source:
            datasets.append(DatasetPlan(name, None, workdir,
                                        f"no folder given (kpbench run {path} --data {name}=PATH)",
                                        box_files, box_fill))
            continue
        try:
            spec = DataSpec(**(values | {"source": str(source)}))
        except TypeError as error:
            raise _fail(path, f"[datasets.{name}]: {error}") from None
        datasets.append(DatasetPlan(name, spec, workdir, box_files=box_files, box_fill=box_fill))
    return datasets


def _box_file(path: Path, where: str, dataset: DatasetPlan, box_source: Any) -> str | None:
    """The file of the box source named ``box_source`` for ``dataset`` (None: EdgeBoxes)."""
    if box_source == EDGEBOXES:
        return None
    if not isinstance(box_source, str) or box_source not in dataset.box_files:
        names = ", ".join([EDGEBOXES, *dataset.box_files])
        raise _fail(path, f"{where}: no box source {box_source!r} for dataset {dataset.name} (named in "
                    f"[datasets.{dataset.name}.boxes]: {names})")
    return dataset.box_files[box_source]


def _read_eval(path: Path, table: dict[str, Any]) -> tuple[tuple[str, ...], EvalOptions]:
    """The ``[eval]`` table's protocols (resolved names, no "all") and options, checked against
    the protocol registry: the one part of reading a plan that imports the protocol files (and
    with them torch)."""
    from kpbench.protocol import ALL, EvalOptions, list_protocols

    table = dict(table)
    names = table.pop("protocols", [ALL])
    names = [names] if isinstance(names, str) else list(names)
    known = [protocol.name for protocol in list_protocols()]
    unknown = [] if ALL in names else [n for n in names if n not in known]
    if unknown:
        raise _fail(path, f"unknown protocol {', '.join(unknown)}; known: {', '.join(known)}, all")
    protocols = tuple(known) if ALL in names else tuple(names)
    # [eval.<protocol>] tables hold that protocol's own options; other keys are settings by name.
    settings: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            settings.update({f"{key}.{option}": option_value for option, option_value in value.items()})
        else:
            settings[key] = value
    try:
        return protocols, EvalOptions().with_settings(settings)
    except KpbenchError as error:  # an unknown name, a wrong type, an unknown bn_mode
        raise _fail(path, f"[eval]: {error}") from None


def _seeds(path: Path, value: Any) -> list[int]:
    from kpbench.seeds import check_seed

    seeds = [value] if isinstance(value, int) else value
    if not isinstance(seeds, list) or not seeds:
        raise _fail(path, f"seeds must be a seed or a list of them, got {value!r}")
    try:
        return sorted({check_seed(seed) for seed in seeds})
    except KpbenchError as error:
        raise _fail(path, str(error)) from None


def _expand(path: Path, index: int, experiment: dict[str, Any], train_table: dict[str, Any],
            datasets: list[DatasetPlan], plan_seeds: list[int]) -> list[Cell]:
    from kpbench.identity import run_name
    from kpbench.variant import get_variant

    name = str(experiment.get("name", f"experiment {index + 1}"))
    where = f"experiment {name!r}"
    _check_keys(path, where, experiment, EXPERIMENT_KEYS | TRAIN_FIELDS | DATA_FIELDS - {"source"})
    variants = experiment.get("variants")
    if not variants:
        raise _fail(path, f"{where} names no variants")
    try:
        for variant in variants:
            get_variant(variant)
    except KpbenchError as error:
        raise _fail(path, f"{where}: {error}") from None
    wanted = experiment.get("datasets", [d.name for d in datasets])
    unknown = sorted(set(wanted) - {d.name for d in datasets})
    if unknown:
        raise _fail(path, f"{where} uses unknown datasets {', '.join(unknown)}")
    seeds = _seeds(path, experiment["seeds"]) if "seeds" in experiment else plan_seeds
    settings = {k: v for k, v in experiment.items() if k not in EXPERIMENT_KEYS}
    # Every list-valued setting is a condition axis; the cells are the product. A setting whose
    # value is itself a list (betas) is an axis only as a list of lists.
    axes = {k: v if isinstance(v, list) and (k not in TUPLE_FIELDS or all(isinstance(x, list) for x in v))
            else [v] for k, v in settings.items()}
    cells = []
    for dataset in (d for d in datasets if d.name in wanted and d.spec is not None):
        assert dataset.spec is not None
        for values in itertools.product(*axes.values()):
            chosen = train_table | dict(zip(axes, values))
            data_values = {k: v for k, v in chosen.items() if k in DATA_FIELDS - {"boxes", "box_fill"}}
            try:
                data = replace(dataset.spec, **data_values).with_boxes(
                    _box_file(path, where, dataset, chosen.get("boxes", EDGEBOXES)),
                    chosen.get("box_fill", dataset.box_fill))
            except KpbenchError as error:
                raise _fail(path, f"{where}: {error}") from None
            train_values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                            for k, v in chosen.items() if k in TRAIN_FIELDS}
            for variant, seed in itertools.product(variants, seeds):
                try:
                    config = TrainConfig(variant=variant, seed=seed, data=data,
                                         workdir=str(dataset.workdir.root), **train_values)
                    # The run's folder name, as training names it (kpbench.resume.run_dir_for).
                    run = run_name(config.to_dict(), get_variant(variant).init)
                except (TypeError, ValueError, KpbenchError) as error:
                    raise _fail(path, f"{where}: {error}") from None
                cells.append(Cell(config, run, dataset.name, (name,)))
    return cells

