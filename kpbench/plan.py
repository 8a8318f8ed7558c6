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

Cells run one after another in this process (``launcher="local"``), or as jobs through
submitit (``"slurm"``; ``"submitit-local"`` and ``"submitit-debug"`` run the same path on this
machine), each job running ``torchrun`` when a cell has several processes. Nothing here
schedules: submitit and SLURM do.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import time
import tomllib
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from kpbench.choices import EDGEBOXES, Launcher, choice_values
from kpbench.dataspec import DataSpec
from kpbench.errors import KpbenchError, file_error
from kpbench.paths import WorkDir
from kpbench.protocol import ALL, EvalOptions, Evaluation, list_protocols
from kpbench.train import TrainConfig, TrainingInterrupted

LAUNCHERS: tuple[str, ...] = choice_values(Launcher)
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


# --- reading ---------------------------------------------------------------------------------


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
    eval_table = dict(raw.get("eval", {}))
    protocols = _resolve_protocols(path, eval_table.pop("protocols", [ALL]))
    # [eval.<protocol>] tables hold that protocol's own options; other keys are settings by name.
    settings: dict[str, Any] = {}
    for key, value in eval_table.items():
        if isinstance(value, dict):
            settings.update({f"{key}.{option}": option_value for option, option_value in value.items()})
        else:
            settings[key] = value
    try:
        options = EvalOptions().with_settings(settings)
    except KpbenchError as error:  # an unknown name, a wrong type, an unknown bn_mode
        raise _fail(path, f"[eval]: {error}") from None

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


def _resolve_protocols(path: Path, names: Any) -> tuple[str, ...]:
    names = [names] if isinstance(names, str) else list(names)
    known = [protocol.name for protocol in list_protocols()]
    if ALL in names:
        return tuple(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise _fail(path, f"unknown protocol {', '.join(unknown)}; known: {', '.join(known)}, all")
    return tuple(names)


def _seeds(path: Path, value: Any) -> list[int]:
    seeds = [value] if isinstance(value, int) else value
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise _fail(path, f"seeds must be a non-negative integer or a list of them, got {value!r}")
    return sorted(set(seeds))


def _expand(path: Path, index: int, experiment: dict[str, Any], train_table: dict[str, Any],
            datasets: list[DatasetPlan], plan_seeds: list[int]) -> list[Cell]:
    from kpbench.resume import run_dir_for
    from kpbench.train import resolve_spec
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
                    run_dir = run_dir_for(config, resolve_spec(config))
                except (TypeError, ValueError, KpbenchError) as error:
                    raise _fail(path, f"{where}: {error}") from None
                cells.append(Cell(config, run_dir.name, dataset.name, (name,)))
    return cells


# --- cost ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellCost:
    steps: int
    flops_per_step: float  # training FLOPs of one iteration (forward + backward, every update)

    @property
    def flops(self) -> float:
        return self.steps * self.flops_per_step


def _forward_flops(module: Any, *inputs: Any) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        module(*inputs)
    return float(counter.get_total_flops())


def estimate_cost(cell: Cell, train_images: int) -> CellCost:
    """Training FLOPs of a cell, counted on meta tensors (no computation): per iteration,
    (forward + backward ~ 3 forwards) x (g_steps generator passes + the discriminator on the real
    image and each fake in its d_steps and once per generator update)."""
    import torch

    from kpbench.nets import build_networks
    from kpbench.train import resolve_spec

    config = cell.config
    spec = resolve_spec(config)
    s, n, b = config.size, config.n_patches, config.batch_size
    with torch.device("meta"):
        nets = build_networks(spec, s, config.width, n)
        patches, z, image = torch.zeros(b, n, 3, s, s), torch.zeros(b, spec.z_dim), torch.zeros(b, 3, s, s)
        g = _forward_flops(nets.generator, patches, z)
        d = _forward_flops(nets.discriminator, image, patches) if nets.discriminator is not None else 0.0
    d_passes = (config.d_steps * (1 + len(spec.fake_kinds)) + config.g_steps) if d else 0
    per_step = 3.0 * (config.g_steps * g + d_passes * d)
    steps = config.steps if config.steps is not None else config.epochs * max(1, train_images // b)
    return CellCost(steps, per_step)


@dataclass(frozen=True)
class Throughput:
    """Training FLOP/s measured on one device, in the precision the iteration ran in."""

    flops_per_second: float
    device: str  # "cpu", or "cuda (<GPU name>)"
    amp: str  # "off" (float32), "bf16" or "fp16"

    def describe(self) -> str:
        precision = "float32" if self.amp == "off" else f"{self.amp} autocast"
        return f"{self.flops_per_second / 1e9:.1f} GFLOP/s measured on {self.device} in {precision}"


def measure_throughput(cell: Cell, device: str | None) -> Throughput:
    """FLOP/s of this machine on the cell's networks: one timed training iteration (after a
    warm-up) at the cell's batch size (at most 32), divided into its counted FLOPs. At the plan's
    width this takes minutes on a CPU, so a dry run measures only when asked."""
    import torch

    from kpbench.nets import build_networks
    from kpbench.runtime import pick_device
    from kpbench.train import Batch, Trainer, resolve_spec

    config = replace(cell.config, batch_size=min(cell.config.batch_size, 32), steps=1)
    spec = resolve_spec(config)
    target = pick_device(device or config.device)
    s, n, b = config.size, config.n_patches, config.batch_size
    with torch.random.fork_rng(devices=[]):
        nets = build_networks(spec, s, config.width, n)
        nets.generator.to(target)
        if nets.discriminator is not None:
            nets.discriminator.to(target)
        trainer = Trainer(spec, nets.generator, nets.discriminator, config, target)
        real = torch.rand(b, 3, s, s, device=target) * 2 - 1
        batch = Batch(torch.rand(b, n, 3, s, s, device=target) * 2 - 1, real,
                      (torch.rand(b, 1, s, s, device=target) > 0.5).float(),
                      torch.rand(b, spec.z_dim, device=target) * 2 - 1, real.roll(1, 0))
        trainer.iteration(batch, 0.1)  # warm-up
        if target.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        trainer.iteration(batch, 0.1)
        if target.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    flops = estimate_cost(replace(cell, config=config), train_images=b).flops_per_step
    name = f"cuda ({torch.cuda.get_device_name(target)})" if target.type == "cuda" else target.type
    return Throughput(flops / max(seconds, 1e-9), name, trainer.amp)


# --- running ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    cell: Cell
    status: str  # "skipped", "ran", "failed"
    detail: str = ""
    seconds: float = 0.0


def cell_state(cell: Cell, protocols: tuple[str, ...]) -> tuple[bool, list[str], str]:
    """(training finished, protocols still to run, what is there) for a cell's run."""
    from kpbench.runs import describe_run

    info = describe_run(cell.run_dir) if cell.run_dir.exists() else None
    if info is None:
        return False, list(protocols), "not started"
    # The plan's length, which may exceed the stored run's (a longer plan extends its runs).
    config = cell.config
    wanted = config.steps if config.steps is not None else config.epochs * info.steps_per_epoch
    finished = info.finished and info.step >= wanted
    missing = [p for p in protocols if not info.evaluated.get(p, False)] if finished else list(protocols)
    return finished, missing, f"{info.status} at step {info.step}/{info.total_steps}"


@dataclass
class CellWork:
    """What :func:`execute_cell` did: a line for the summary, the wall seconds of its training and
    evaluation, and the evaluation's own timing per protocol (None when nothing was evaluated)."""

    detail: str
    seconds: dict[str, float] = field(default_factory=dict)  # "train", "evaluate"
    evaluation: Evaluation | None = None


def execute_cell(cell: Cell, protocols: tuple[str, ...], options: EvalOptions, processes: int = 1,
                 on_step: Callable[[int, int, str], None] | None = None,
                 say: Callable[[str], None] = lambda text: None,
                 shared: dict[Any, Any] | None = None) -> CellWork:
    """Train (or resume) and evaluate one cell, skipping what is done. ``processes`` > 1 trains
    under torchrun (one process per GPU). ``shared``: the evaluation cache of the cells run
    before in this process (samples, baselines), see :func:`kpbench.protocol.evaluate`."""
    from kpbench.protocol import evaluate
    from kpbench.train import train

    finished, missing, state = cell_state(cell, protocols)
    done, work = [], CellWork("")
    if not finished:
        say(f"{cell.key}: training ({state})")
        started = time.perf_counter()
        if processes > 1:
            _train_with_torchrun(cell.config, processes)
        else:
            train(replace(cell.config, progress=False), on_step=on_step)
        work.seconds["train"] = time.perf_counter() - started
        done.append("trained" if state == "not started" else f"trained (was {state})")
        missing = list(protocols)
    if missing:
        say(f"{cell.key}: evaluating {', '.join(missing)}")
        started = time.perf_counter()
        work.evaluation = evaluate(WorkDir.resolve(cell.config.workdir), missing, options=options,
                                   names=[cell.name], shared=shared)
        work.seconds["evaluate"] = time.perf_counter() - started
        done.append(f"evaluated {', '.join(missing)}")
    work.detail = "; ".join(done) or "already done"
    return work


def _train_with_torchrun(config: TrainConfig, processes: int) -> None:
    """One cell over ``processes`` local processes: torchrun starts them, kpbench.launch trains.
    The key boxes are detected here first, so that no rank waits on a long detection."""
    from kpbench.samples import load_boxes, open_data

    load_boxes(open_data(config.data), config.data, WorkDir.resolve(config.workdir))
    folder = WorkDir.resolve(config.workdir).root / "plan-configs"
    config_path = folder / f"{os.getpid()}-{time.time_ns()}.json"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(replace(config, progress=False).to_dict()))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "kpbench.launch", str(config_path)]
    result = subprocess.run(command, capture_output=True, text=True)
    config_path.unlink(missing_ok=True)
    if result.returncode != 0:
        log = folder.parent / "plan-errors" / f"torchrun-{config_path.stem}.txt"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(result.stdout + result.stderr)
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip().strip("=-")]
        errors = [line for line in lines if "Error" in line or line.startswith("error:")]
        reason = (errors or lines or ["no output"])[-1]
        raise KpbenchError(f"torchrun with {processes} processes exited {result.returncode}: {reason} "
                           f"(all output in {log})")


@dataclass
class PlanResult:
    outcomes: list[Outcome]
    reports: dict[str, Path]  # dataset -> report html
    report_errors: dict[str, str]
    # Wall seconds per stage, in order: "data <dataset>" (key patches detected once), "train
    # <cell>" and "evaluate <cell>" for each cell run here, "report <dataset>".
    stages: dict[str, float] = field(default_factory=dict)
    evaluation: Evaluation = field(default_factory=Evaluation)  # every cell's, per protocol
    summaries: dict[str, Any] = field(default_factory=dict)  # dataset -> the report's summary table

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def add(self, outcome: Outcome, work: CellWork | None) -> None:
        """Record a cell's outcome and, when it ran here, its stages and evaluation timing."""
        self.outcomes.append(outcome)
        if work is None:
            return
        for stage, seconds in work.seconds.items():
            self.stages[f"{stage} {outcome.cell.key}"] = seconds
        if work.evaluation is not None:
            self.evaluation.written.update(work.evaluation.written)
            for name, seconds in work.evaluation.seconds.items():
                self.evaluation.seconds[name] = self.evaluation.seconds.get(name, 0.0) + seconds


def run_plan(plan: Plan, launcher: str = "local", say: Callable[[str], None] = print,
             progress: bool = True) -> PlanResult:
    """Every cell (train, evaluate), then a report per dataset. A failing cell is recorded and
    the rest go on; Ctrl-C stops the plan (the running cell's checkpoint is kept)."""
    if launcher not in LAUNCHERS:
        raise KpbenchError(f"unknown launcher {launcher!r}; use {', '.join(LAUNCHERS)}")
    for dataset in plan.datasets:
        if dataset.skipped:
            say(f"dataset {dataset.name}: skipped, {dataset.skipped}")
    result = PlanResult([], {}, {})
    todo = []
    for cell in plan.cells:
        finished, missing, _ = cell_state(cell, plan.protocols)
        if finished and not missing:
            result.add(Outcome(cell, "skipped", "finished and evaluated"), None)
        else:
            todo.append(cell)
    say(f"plan {plan.name}: {len(plan.cells)} cells, {len(result.outcomes)} already done, {len(todo)} to "
        f"run ({launcher})")
    processes = int(plan.launcher.get("processes_per_cell", 1))
    if launcher == "local":
        _prepare_data(plan, todo, result, say, progress)
        _run_local(plan, todo, processes, result, progress)
    else:
        _run_submitit(plan, todo, launcher, processes, result, say)
    order = {cell.key: index for index, cell in enumerate(plan.cells)}
    result.outcomes.sort(key=lambda o: order[o.cell.key])
    usable = {o.cell.dataset for o in result.outcomes if o.status != "failed"}
    _reports(plan, usable, result, say)
    return result


def _prepare_data(plan: Plan, todo: list[Cell], result: PlanResult, say: Callable[[str], None],
                  progress: bool) -> None:
    """Decode each dataset the cells to run use and detect its key patches, for every N up to
    the evaluation's ``max_patches`` in one pass: otherwise training detects its own N and the
    evaluation of other N detects again. A dataset that cannot be prepared is said here and
    fails in its cells, which record why."""
    from kpbench.samples import load_boxes, open_data

    counts = range(1, int(plan.eval_options.setting("num_patches.max_patches")) + 1)
    prepared: set[Any] = set()
    for cell in todo:
        spec = cell.config.data
        key = (cell.config.workdir, replace(spec, n_patches=0))  # one detection serves every N
        if key in prepared:
            continue
        prepared.add(key)
        say(f"{cell.dataset}: decoding {spec.source} and detecting key patches")
        started = time.perf_counter()
        try:
            load_boxes(open_data(spec), spec, WorkDir.resolve(cell.config.workdir), progress=progress,
                       also_counts=counts)
        except KpbenchError as error:
            say(f"{cell.dataset}: {error}")
        stage = f"data {cell.dataset}"
        result.stages[stage] = result.stages.get(stage, 0.0) + time.perf_counter() - started


def _run_local(plan: Plan, todo: list[Cell], processes: int, result: PlanResult, progress: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    view = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[status]}"), disable=not progress)
    shared: dict[Any, Any] = {}  # evaluation work that does not depend on the weights, across cells
    with view:
        overall = view.add_task(f"plan {plan.name}", total=len(todo), status="")
        current = view.add_task("", total=1, status="", visible=False)

        # Without a terminal (a log file) the live view draws nothing: print a plain line ten
        # times per cell instead.
        plain = progress and not view.console.is_terminal
        position = {"index": 0}

        def on_step(step: int, total: int, status: str) -> None:
            view.update(current, completed=step, total=total, status=status)
            if plain and (step == total or step % max(1, total // 10) == 0):
                view.console.print(f"[{position['index']}/{len(todo)}] step {step}/{total} {status}",
                                   highlight=False, markup=False, soft_wrap=True)

        for index, cell in enumerate(todo, 1):
            position["index"] = index
            view.update(current, description=f"  {cell.name}", completed=0, total=1, status="", visible=True)
            started = time.perf_counter()
            def say_cell(text: str, number: str = f"[{index}/{len(todo)}]") -> None:
                view.console.print(f"{number} {text}", highlight=False, markup=False)

            try:
                work = execute_cell(cell, plan.protocols, plan.eval_options, processes, on_step,
                                    say=say_cell, shared=shared)
                result.add(Outcome(cell, "ran", work.detail, time.perf_counter() - started), work)
            except TrainingInterrupted:
                raise
            except KpbenchError as error:
                result.add(Outcome(cell, "failed", str(error), time.perf_counter() - started), None)
            except Exception as error:  # a bug or a crash in one cell must not stop the others
                known = file_error(error, action="open") if isinstance(error, OSError) else None
                detail = str(known) if known else f"{type(error).__name__}: {error} ({_save_traceback(cell)})"
                result.add(Outcome(cell, "failed", detail, time.perf_counter() - started), None)
            view.update(overall, completed=index)


def _save_traceback(cell: Cell) -> str:
    path = WorkDir.resolve(cell.config.workdir).root / "plan-errors" / f"{cell.name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(traceback.format_exc())
    return f"traceback in {path}"


def _run_submitit(plan: Plan, todo: list[Cell], launcher: str, processes: int, result: PlanResult,
                  say: Callable[[str], None]) -> None:
    try:
        import submitit
    except ImportError:
        raise KpbenchError("the slurm launcher needs submitit: pip install submitit") from None
    if not todo:
        return
    cluster = {"slurm": "slurm", "submitit-local": "local", "submitit-debug": "debug"}[launcher]
    folder = plan.datasets[0].workdir.root.parent / "submitit"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    parameters = {k: v for k, v in plan.launcher.items() if k != "processes_per_cell"}
    if cluster != "debug":
        parameters.setdefault("timeout_min", 24 * 60)
    if cluster == "slurm" and processes > 1:
        parameters.setdefault("gpus_per_node", processes)
    executor.update_parameters(**parameters)
    # Each job runs the local launcher's cell logic (skip, resume, evaluate) in a fresh process.
    jobs = [(cell, executor.submit(execute_cell, cell, plan.protocols, plan.eval_options, processes))
            for cell in todo]
    say(f"submitted {len(jobs)} jobs ({cluster}); logs in {folder}")
    for cell, job in jobs:
        started = time.perf_counter()
        try:
            work: CellWork = job.result()
            result.add(Outcome(cell, "ran", f"{work.detail} (job {job.job_id})",
                               time.perf_counter() - started), work)
        except Exception as error:  # submitit re-raises the job's exception, or a FailedJobError
            last = str(error).strip().splitlines()
            result.add(Outcome(cell, "failed", f"job {job.job_id}: {last[-1] if last else error}",
                               time.perf_counter() - started), None)
        say(f"{cell.key}: {result.outcomes[-1].status}")


def _reports(plan: Plan, datasets: set[str], result: PlanResult, say: Callable[[str], None]) -> None:
    """A report per dataset in ``datasets`` (those with at least one cell that did not fail)."""
    from kpbench.report import build_report

    for dataset in plan.datasets:
        if dataset.name not in datasets:
            continue
        started = time.perf_counter()
        try:
            report = build_report(dataset.workdir, plan.name,
                                  title=f"kpbench plan {plan.name}: {dataset.name}")
            result.reports[dataset.name] = report.html
            result.summaries[dataset.name] = report.summary
            say(f"report ({dataset.name}): {report.html}")
        except KpbenchError as error:
            result.report_errors[dataset.name] = str(error)
        result.stages[f"report {dataset.name}"] = time.perf_counter() - started


def describe_cost(plan: Plan) -> list[tuple[Cell, CellCost]]:
    """Each cell's training cost (see :func:`estimate_cost`); the number of training images per
    dataset comes from opening it (a folder is indexed, nothing is detected)."""
    from kpbench.samples import open_data

    images: dict[str, int] = {}
    costs = []
    for cell in plan.cells:
        if cell.dataset not in images:
            dataset = open_data(cell.config.data)
            images[cell.dataset] = len(dataset.split_indices("train"))
        costs.append((cell, estimate_cost(cell, images[cell.dataset])))
    return costs


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
