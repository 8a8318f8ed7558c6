"""Running a plan's cells: each one trained (or resumed) and evaluated, skipping what is done, here
one after another (``launcher="local"``) or as submitit jobs (SLURM, or the same path on this
machine), each job running ``torchrun`` when a cell has several processes; then a report per
dataset. Nothing here schedules: submitit and SLURM do. The plan itself is read by
:mod:`kpbench.plan`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kpbench.choices import Launcher, choice_values
from kpbench.config import TrainConfig
from kpbench.errors import KpbenchError, file_error
from kpbench.paths import WorkDir
from kpbench.plan import Cell, Plan
from kpbench.protocol import EvalOptions, Evaluation
from kpbench.train import TrainingInterrupted

LAUNCHERS: tuple[str, ...] = choice_values(Launcher)


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
        if work.evaluation.skipped:  # the cell's one run could not be loaded: the cell failed
            raise KpbenchError(next(iter(work.evaluation.skipped.values())))
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
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # A live view on a terminal; without one (a log file) it would leave its last frame behind,
    # so it is off and a plain line is printed ten times per cell instead.
    console = Console(markup=False, highlight=False, soft_wrap=True)
    plain = progress and not console.is_terminal
    view = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[status]}"), console=console, disable=not progress or plain)
    shared: dict[Any, Any] = {}  # evaluation work that does not depend on the weights, across cells
    with view:
        overall = view.add_task(f"plan {plan.name}", total=len(todo), status="")
        current = view.add_task("", total=1, status="", visible=False)

        position = {"index": 0}

        def on_step(step: int, total: int, status: str) -> None:
            view.update(current, completed=step, total=total, status=status)
            if plain and (step == total or step % max(1, total // 10) == 0):
                console.print(f"[{position['index']}/{len(todo)}] step {step}/{total} {status}")

        for index, cell in enumerate(todo, 1):
            position["index"] = index
            view.update(current, description=f"  {cell.name}", completed=0, total=1, status="", visible=True)
            started = time.perf_counter()
            def say_cell(text: str, number: str = f"[{index}/{len(todo)}]") -> None:
                console.print(f"{number} {text}")

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
        except KpbenchError as error:
            result.report_errors[dataset.name] = str(error)
        result.stages[f"report {dataset.name}"] = time.perf_counter() - started

