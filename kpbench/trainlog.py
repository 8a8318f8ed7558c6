"""What a training run reports while it runs: log.jsonl (:class:`RunLogWriter`; read back by
kpbench.report.sources.RunLog), TensorBoard scalars (:class:`TensorBoardLog`, ``--tensorboard``)
and the console (:class:`ProgressView`: a progress bar on a terminal, plain status lines in a log
file). :class:`LogWindow` sums losses and timings between two lines of either.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpbench.errors import KpbenchError
from kpbench.io import atomic_write_text
from kpbench.resume import RunState


class RunLogWriter:
    """log.jsonl, written by the main rank only: one JSON object per line."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def truncate_after(self, step: int) -> None:
        """Drop entries logged after the checkpoint being resumed: those steps are redone."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, entry: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, sort_keys=True) + "\n")


class TensorBoardLog:
    """The log's numbers as TensorBoard scalars (``--tensorboard``): losses, images/s and data
    share per log line, diagnostics when measured. Optional; log.jsonl stays the record."""

    def __init__(self, directory: Path, enabled: bool) -> None:
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise KpbenchError("--tensorboard needs the tensorboard package: pip install tensorboard "
                               f"({error})") from error
        self.writer = SummaryWriter(log_dir=str(directory))

    def add(self, entry: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = int(entry["step"])
        for group in ("losses", "diagnostics"):
            for name, value in entry.get(group, {}).items():
                self.writer.add_scalar(f"{group}/{name}", value, step)
        for name in ("images_per_s", "data_share", "lambda"):
            if name in entry:
                self.writer.add_scalar(f"speed/{name}" if name != "lambda" else "schedule/lambda",
                                       entry[name], step)

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class LogWindow:
    """Loss and timing sums since the last log line."""

    losses: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    data_s: float = 0.0
    compute_s: float = 0.0

    def add(self, losses: dict[str, float], data_s: float, compute_s: float) -> None:
        for name, value in losses.items():
            self.losses[name] = self.losses.get(name, 0.0) + value
        self.steps += 1
        self.data_s += data_s
        self.compute_s += compute_s

    def entry(self, state: RunState, images_per_step: int) -> dict[str, Any]:
        seconds = self.data_s + self.compute_s
        return {
            "step": state.step, "epoch": state.epoch, "lambda": state.lam,
            "losses": {name: value / self.steps for name, value in self.losses.items()},
            "data_s": self.data_s / self.steps, "step_s": seconds / self.steps,
            "data_share": self.data_s / seconds, "images_per_s": images_per_step * self.steps / seconds,
            "time": time.time(),
        }

class ProgressView:
    """The trainer's console output. On a terminal: a rich progress bar whose status shows the
    last step. Otherwise (a log file, a pipe): one plain line every ``every`` steps and at the end,
    with the mean losses, images/s and data share since the previous line, so a background run
    can be followed with ``tail -f``."""

    def __init__(self, enabled: bool, name: str, total: int, done: int, every: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console()
        self.plain = enabled and not self.console.is_terminal
        self.name, self.total, self.every = name, total, every
        self.bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(),
                            TextColumn("{task.fields[status]}"), console=self.console,
                            disable=not enabled or self.plain)
        self.task = self.bar.add_task("train", total=total, completed=done, status="")
        self.window = LogWindow()
        self.started, self.first_step = time.perf_counter(), done

    def __enter__(self) -> ProgressView:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def step(self, step: int, losses: dict[str, float], data_s: float, compute_s: float,
             images_per_step: int, diagnostics: dict[str, float]) -> str:
        """Record one finished step; returns its status text (for a caller's own view)."""
        self.window.add(losses, data_s, compute_s)
        text = _status(losses, images_per_step, data_s + compute_s, diagnostics)
        self.bar.update(self.task, completed=step, status=text)
        if self.plain and (step % self.every == 0 or step == self.total):
            self.console.print(self.line(step, images_per_step, diagnostics), highlight=False, markup=False,
                               soft_wrap=True)
            self.window = LogWindow()
        return text

    def line(self, step: int, images_per_step: int, diagnostics: dict[str, float]) -> str:
        window = self.window
        seconds = window.data_s + window.compute_s
        mean = {name: value / window.steps for name, value in window.losses.items()}
        elapsed = time.perf_counter() - self.started
        remaining = elapsed / max(step - self.first_step, 1) * (self.total - step)
        return (f"{self.name} step {step}/{self.total} | "
                f"{images_per_step * window.steps / max(seconds, 1e-9):.1f} img/s, "
                f"data {window.data_s / max(seconds, 1e-9):.0%} | "
                + _status(mean, 0, 1.0, diagnostics, rate=False)
                + f" | {_clock(elapsed)} elapsed, {_clock(remaining)} left")


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _status(losses: dict[str, float], images: int, seconds: float,
            diagnostics: dict[str, float] | None = None, rate: bool = True) -> str:
    shown = ("d/total", "g/total", "g/adversarial", "g/spatial", "g/appearance", "g/reconstruction")
    text = " ".join(f"{name}={losses[name]:.3g}" for name in shown if name in losses)
    if diagnostics and "mask_iou" in diagnostics:
        text += (f" | held-out IoU {diagnostics['mask_iou']:.2f} (prior {diagnostics['prior_mask_iou']:.2f})"
                 f" cover {diagnostics['mask_coverage']:.2f}")
    return f"{text} {images / max(seconds, 1e-9):.1f} img/s" if rate else text
