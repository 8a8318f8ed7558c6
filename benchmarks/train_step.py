"""Cost of one training iteration of the full model (1 D + 2 G updates), against a plain version.

    python benchmarks/train_step.py            # width 1 @ batch 64 and width 0.25 @ batch 16
    python benchmarks/train_step.py --quick    # small widths, few iterations (CPU smoke run)
    python benchmarks/train_step.py --setting 1x64 --threads 2 --iterations 8
    python benchmarks/train_step.py --amp bf16 # also time kpbench under bf16 autocast
    python benchmarks/train_step.py --profile  # where an iteration's time goes (torch.profiler)
    python benchmarks/train_step.py --compile  # torch.compile'd networks against eager ones

For each (width, batch) at S = 64 it prints seconds per iteration, images per second (data wait
included), peak memory (RSS on the CPU, max allocated on CUDA), the share of the iteration spent
waiting for data, and the ratio against a plain PyTorch version of the same networks and schedule
that does the authors' per-iteration work (``PlainIteration``). Both run in the same process on
the same batches, alternating which goes first, and the ratio is the median of the per-iteration
ratios, so a machine shared with other jobs biases neither. On CUDA the training loop is also
timed with bf16 and fp16 autocast (``--amp`` picks the modes, on the CPU too).

Target: ours / plain <= 0.80 at width 1 with both in float32 (TARGET_RATIO; printed as met or
missed for every float32 row).

``--profile`` runs torch.profiler over a few iterations of kpbench's Trainer and prints the top ops
by self CPU time and the split of an iteration into generator forward, discriminator forward,
backward and optimiser step. ``--compile`` times the Trainer with ``torch.compile``'d generator and
discriminator against the eager Trainer, alternating, and reports the compile (warm-up) time apart.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial, wraps
from pathlib import Path
from typing import Any, cast

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kpbench.dataspec import DataSpec
from kpbench.distributed import Dist, RankBatchSampler, epoch_order  # noqa: E402
from kpbench.losses import discriminator_loss, generator_loss, make_fakes  # noqa: E402
from kpbench.nets import Generator, build_networks  # noqa: E402
from kpbench.paths import WorkDir  # noqa: E402
from kpbench.runtime import pick_device  # noqa: E402
from kpbench.samples import PatchSampleDataset, expand_batch, keep_batch, make_sample_dataset  # noqa: E402
from kpbench.train import Batch, TrainConfig, Trainer  # noqa: E402
from kpbench.variant import VariantSpec, get_variant  # noqa: E402

SIZE = 64
LAMBDA = 0.64
# kpbench's paper iteration against the plain authors'-work version, both in float32.
TARGET_RATIO = 0.80
WARMUP = 2

Setting = tuple[float, int]  # (width, batch size)


class PlainIteration:
    """The paper iteration (1 D + 2 G updates) with the authors' per-update work: their code
    (hellbell/KeyPatchGan, models/model.py ``forward``, ``backward_D``, ``backward_G``) reruns
    ``forward()`` before every update, with its graph, and keeps no results between updates.

    - 3 generator forwards per iteration: one for the D step, one per G step.
    - D step: D on the real image and on each of the 5 fakes of equation (4), one forward each;
      their ``backward_D`` scores all five but its loss reads only three (generated and the two
      shuffled-y' composites), where kpbench's reads all five: the same forward work either way.
    - Each G step: D on the real image and on the generated one. ``backward_G`` computes
      ``d_real = D(y)`` with D's weights requiring grad, but no loss term reads it: the generator's
      loss is its L1 terms and BCE(D(G_I(x)), 1). It is computed anyway, as there: a forward whose
      graph is built and dropped, and whose BatchNorm running statistics move.
    - The G loss backpropagates into D's weights too (D is not frozen), and D's gradients pile up
      until the next D step clears them.
    - Default (for-each) Adam.
    """

    def __init__(self, spec: VariantSpec, generator: Generator, discriminator: nn.Module,
                 lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999)) -> None:
        self.spec, self.generator, self.discriminator = spec, generator, discriminator
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)

    def __call__(self, batch: Batch, lam: float) -> None:
        g, d, spec = self.generator, self.discriminator, self.spec
        out = g(batch.patches, batch.z)  # with its graph, as forward() before backward_D
        fakes = make_fakes(spec.fake_kinds, out.image.detach(), batch.real, batch.mask, batch.other_real)
        d_loss, _ = discriminator_loss(d(batch.real, batch.patches),
                                       {kind: d(fake, batch.patches) for kind, fake in fakes.items()})
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()
        for _ in range(2):
            out = g(batch.patches, batch.z)
            d(batch.real, batch.patches)  # backward_G's d_real: computed with grad, read by no loss
            g_loss, _ = generator_loss(spec, out, batch.real, batch.mask, lam, d(out.image, batch.patches))
            self.opt_g.zero_grad()
            g_loss.backward()
            self.opt_g.step()


class EndlessBatches(torch.utils.data.Sampler[list[int]]):
    """The training loop's batches of epochs 0, 1, 2, ... without end, for one long-lived loader: a
    loader per epoch would start its worker processes again inside the timed iterations (with the
    default source an epoch is only two batches of 64)."""

    def __init__(self, n: int, batch_size: int) -> None:
        self.n, self.batch_size = n, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for epoch in itertools.count():
            yield from RankBatchSampler(epoch_order(self.n, 0, epoch), self.batch_size, Dist())


def batches(dataset: PatchSampleDataset, batch_size: int, workers: int, device: torch.device,
            channels_last: bool) -> Iterator[Batch]:
    """Endless training batches as the training loop loads them (whole raw batches from worker
    processes, pinned memory on CUDA, patches and masks cut on the device), each paired with the
    previous batch's images as y'. The workers keep epoch 0's flips: the same work, fewer starts."""
    previous = None
    generator = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=EndlessBatches(len(dataset), batch_size),
                                         num_workers=workers,
                                         collate_fn=keep_batch,  # type: ignore[arg-type]  # a whole batch from __getitems__
                                         pin_memory=device.type == "cuda")
    for raw in loader:
        item = expand_batch(raw, device)
        real = item["image"]
        if channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        z = (torch.rand(real.shape[0], 128, generator=generator) * 2 - 1).to(device)
        other_real = previous if previous is not None else real.roll(1, 0)
        yield Batch(item["patches"], real, item["mask"], z, other_real)
        previous = real


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the resident-set high-water mark (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process lifetime peak


def timed(step: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - started


def peak_of(step: Callable[[], object], device: torch.device) -> float:
    reset_peak_memory(device)
    step()
    synchronize(device)
    return peak_memory_mb(device)


IterationFn = Callable[[Batch], object]


@dataclass
class PairedTimes:
    first: list[float]  # seconds per iteration
    second: list[float]  # empty when there is no second contender
    waits: list[float]  # seconds waiting for each batch

    def ratio(self) -> tuple[float, tuple[float, float]]:
        """Median and (min, max) of first / second over the iterations."""
        ratios = sorted(a / b for a, b in zip(self.first, self.second))
        return statistics.median(ratios), (ratios[0], ratios[-1])


Log = Callable[[str], None]


def side_by_side(first: IterationFn, second: IterationFn | None, source: Iterator[Batch], iterations: int,
                 device: torch.device, log: Log | None = None) -> PairedTimes:
    """Times ``first`` (and ``second``) on the same batches, alternating which goes first so that
    drift in machine load hits both alike. ``log`` gets one line per iteration."""
    times = PairedTimes([], [], [])
    for k in range(iterations):
        synchronize(device)
        started = time.perf_counter()
        batch = next(source)
        synchronize(device)
        times.waits.append(time.perf_counter() - started)
        if second is None:
            times.first.append(timed(partial(first, batch), device))
        elif k % 2 == 0:
            times.first.append(timed(partial(first, batch), device))
            times.second.append(timed(partial(second, batch), device))
        else:
            times.second.append(timed(partial(second, batch), device))
            times.first.append(timed(partial(first, batch), device))
        if log is not None:
            log(f"  iteration {k + 1}/{iterations}: {times.first[-1]:.3f} s"
                + (f" against {times.second[-1]:.3f} s" if times.second else ""))
    return times


def fresh_networks(spec: VariantSpec, dataset: PatchSampleDataset, width: float, device: torch.device
                   ) -> tuple[Generator, nn.Module, bool]:
    """Seeded networks on ``device`` in the training loop's memory format (channels-last on CUDA).
    Returns (generator, discriminator, channels_last)."""
    torch.manual_seed(0)
    nets = build_networks(spec, SIZE, width, dataset.n_patches)
    assert nets.discriminator is not None
    channels_last = device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    # Two calls: torch's type stubs have no overload of Module.to taking both.
    return (nets.generator.to(device).to(memory_format=memory_format),
            nets.discriminator.to(device).to(memory_format=memory_format), channels_last)


def setting_name(width: float, batch_size: int) -> str:
    return f"width {width:g}, batch {batch_size}"


# --- ours against the plain iteration ------------------------------------------------------------


@dataclass
class Row:
    setting: str
    amp: str  # kpbench's precision in this row ("off": float32, as plain always is)
    seconds: float  # per iteration, compute only
    images_per_s: float  # data wait included
    peak_mb: float
    data_share: float
    plain_seconds: float | None = None
    ratio: float | None = None
    ratio_spread: tuple[float, float] | None = None


def measure(spec: VariantSpec, dataset: PatchSampleDataset, width: float, batch_size: int, iterations: int,
            warmup: int, workers: int, device: torch.device, amp: str, compare: bool,
            log: Log | None = None) -> Row:
    generator, discriminator, channels_last = fresh_networks(spec, dataset, width, device)
    plain = PlainIteration(spec, copy.deepcopy(generator), copy.deepcopy(discriminator)) if compare else None
    config = TrainConfig(width=width, batch_size=batch_size, amp=amp)  # type: ignore[arg-type]
    trainer = Trainer(spec, generator, discriminator, config, device)
    source = batches(dataset, batch_size, workers, device, channels_last)

    def ours(batch: Batch) -> None:
        trainer.iteration(batch, LAMBDA)

    def theirs(batch: Batch) -> None:
        assert plain is not None
        plain(batch, LAMBDA)

    for _ in range(warmup):
        batch = next(source)
        ours(batch)
        if plain is not None:
            theirs(batch)
    times = side_by_side(ours, theirs if plain is not None else None, source, iterations, device, log)
    peak = peak_of(partial(ours, next(source)), device)
    seconds, wait = statistics.median(times.first), statistics.median(times.waits)
    row = Row(setting_name(width, batch_size) + (f", {amp}" if amp != "off" else ""), amp, seconds,
              batch_size / (seconds + wait), peak, wait / (seconds + wait))
    if times.second:
        row.plain_seconds = statistics.median(times.second)
        row.ratio, row.ratio_spread = times.ratio()
    return row


def run_timing(console: Console, spec: VariantSpec, dataset: PatchSampleDataset, settings: list[Setting],
               iterations: int, workers: int, device: torch.device, amp_modes: list[str],
               log: Log | None = None) -> None:
    console.print(f"{iterations} timed iterations after {WARMUP} warm-up; plain = the authors' per-iteration "
                  "work (3 G forwards, D(real) in every update, D weight grads in G updates, for-each Adam)")
    rows = []
    for width, batch_size in settings:
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        for amp in ("off", *amp_modes):
            if log is not None:
                log(f"{setting_name(width, batch_size)}, amp {amp}:")
            rows.append(measure(spec, dataset, width, batch_size, iterations, WARMUP, workers, device, amp,
                                compare=amp == "off" or device.type == "cpu", log=log))
    table = Table(title="one iteration = 1 D + 2 G updates")
    for column in ("setting", "s/iter", "images/s", "peak MB", "data wait", "plain s/iter",
                   "ours / plain (min-max)"):
        table.add_column(column, justify="right")
    for row in rows:
        ratio, plain_s = "-", "-"
        if row.ratio is not None and row.ratio_spread is not None:
            ratio = f"{row.ratio:.3f} ({row.ratio_spread[0]:.2f}-{row.ratio_spread[1]:.2f})"
            plain_s = f"{row.plain_seconds:.3f}"
        table.add_row(row.setting, f"{row.seconds:.3f}", f"{row.images_per_s:.1f}", f"{row.peak_mb:.0f}",
                      f"{row.data_share:.1%}", plain_s, ratio)
    console.print(table)
    for row in rows:
        if row.ratio is not None and row.amp == "off":
            verdict = "met" if row.ratio <= TARGET_RATIO else "missed"
            console.print(f"target ours / plain <= {TARGET_RATIO:.2f} (same precision), {row.setting}: "
                          f"{verdict} ({row.ratio:.3f})")
    memory = "max allocated" if device.type == "cuda" else "peak RSS of the process"
    console.print(f"peak MB: {memory} during one training-loop iteration; images/s includes data wait; "
                  "plain runs in float32 in every row.")


# --- profile -------------------------------------------------------------------------------------

ITERATION = "paper iteration"
GENERATOR_FORWARD = "generator forward"
DISCRIMINATOR_FORWARD = "discriminator forward"
BACKWARD = "backward"
OPTIMISER_STEP = "optimiser step"
PARTS = (GENERATOR_FORWARD, DISCRIMINATOR_FORWARD, BACKWARD, OPTIMISER_STEP)
LABELS = (ITERATION, *PARTS)


def labelled(function: Callable[..., Any], label: str) -> Callable[..., Any]:
    @wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        with record_function(label):
            return function(*args, **kwargs)

    return run


@contextlib.contextmanager
def labelled_parts(trainer: Trainer) -> Iterator[None]:
    """Profiler labels around the trainer's network forwards, optimiser steps and every backward.
    Instance attributes shadow ``forward`` and ``step``; ``Tensor.backward`` is wrapped while the
    context is open. kpbench's code is not changed."""
    assert trainer.discriminator is not None and trainer.opt_d is not None
    patched: list[tuple[object, str]] = [(trainer.generator, "forward"), (trainer.discriminator, "forward"),
                                         (trainer.opt_g, "step"), (trainer.opt_d, "step")]
    labels = (GENERATOR_FORWARD, DISCRIMINATOR_FORWARD, OPTIMISER_STEP, OPTIMISER_STEP)
    for (owner, name), label in zip(patched, labels):
        setattr(owner, name, labelled(getattr(owner, name), label))
    tensor_backward = torch.Tensor.backward
    torch.Tensor.backward = labelled(tensor_backward, BACKWARD)  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.backward = tensor_backward  # type: ignore[method-assign]
        for owner, name in patched:
            delattr(owner, name)


def run_profile(console: Console, spec: VariantSpec, dataset: PatchSampleDataset, setting: Setting,
                iterations: int, workers: int, device: torch.device) -> None:
    width, batch_size = setting
    generator, discriminator, channels_last = fresh_networks(spec, dataset, width, device)
    trainer = Trainer(spec, generator, discriminator, TrainConfig(width=width, batch_size=batch_size), device)
    source = batches(dataset, batch_size, workers, device, channels_last)
    for _ in range(WARMUP):
        trainer.iteration(next(source), LAMBDA)
    profiled = [next(source) for _ in range(iterations)]  # loaded before profiling starts
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with labelled_parts(trainer), profile(activities=activities) as profiler:
        for batch in profiled:
            with record_function(ITERATION):
                trainer.iteration(batch, LAMBDA)
            synchronize(device)
    events = profiler.key_averages()

    def per_iteration_ms(microseconds: float) -> float:
        return microseconds / iterations / 1000

    console.print(f"profile of kpbench's Trainer, {setting_name(width, batch_size)}, {iterations} iterations "
                  f"after {WARMUP} warm-up, {device}, {torch.get_num_threads()} threads; times per iteration")
    totals = {event.key: event.cpu_time_total for event in events if event.key in LABELS}
    iteration_us = totals.get(ITERATION, 0.0)
    split = Table(title="where an iteration's wall time goes (CPU clock)")
    for column in ("part", "ms", "share"):
        split.add_column(column, justify="right")
    parts = {part: totals.get(part, 0.0) for part in PARTS}
    parts["other (losses, fakes, zero_grad)"] = iteration_us - sum(parts.values())
    for part, microseconds in [*parts.items(), (ITERATION, iteration_us)]:
        split.add_row(part, f"{per_iteration_ms(microseconds):.1f}", f"{microseconds / iteration_us:.1%}")
    console.print(split)

    ops = [event for event in events if event.key not in LABELS and not event.key.startswith("Optimizer.")]
    ops.sort(key=lambda event: event.self_cpu_time_total, reverse=True)
    self_total = sum(event.self_cpu_time_total for event in events)
    top = Table(title="top ops by self CPU time")
    for column in ("op", "self ms", "share", "calls"):
        top.add_column(column, justify="right")
    for event in ops[:12]:
        top.add_row(event.key, f"{per_iteration_ms(event.self_cpu_time_total):.1f}",
                    f"{event.self_cpu_time_total / self_total:.1%}", f"{event.count / iterations:g}")
    console.print(top)
    if device.type == "cuda":
        device_ops = sorted(events, key=lambda event: event.self_device_time_total, reverse=True)
        device_total = sum(event.self_device_time_total for event in events)
        gpu = Table(title="top ops by self CUDA time")
        for column in ("op", "self ms", "share"):
            gpu.add_column(column, justify="right")
        for event in device_ops[:8]:
            gpu.add_row(event.key, f"{per_iteration_ms(event.self_device_time_total):.1f}",
                        f"{event.self_device_time_total / max(device_total, 1e-9):.1%}")
        console.print(gpu)


# --- torch.compile against eager -----------------------------------------------------------------


@dataclass
class CompileRow:
    setting: str
    eager_seconds: float = float("nan")
    compiled_seconds: float = float("nan")
    ratio: float = float("nan")  # compiled / eager, median of the per-iteration ratios
    ratio_spread: tuple[float, float] = (float("nan"), float("nan"))
    first_iteration_seconds: float = float("nan")  # compiles G, D (grad and frozen) and backwards
    compile_seconds: float = float("nan")  # warm-up time beyond what steady iterations take
    error: str | None = None

    @property
    def break_even(self) -> float | None:
        """Iterations after which the compile time is paid back; None if it never is."""
        saved = self.eager_seconds - self.compiled_seconds
        return self.compile_seconds / saved if saved > 0 else None


def compiler_problem() -> str | None:
    """Why torch.compile cannot build CPU kernels here, or None. Inductor needs a C++ compiler."""
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        return "no C++ compiler (g++, c++ or clang++) on PATH: Inductor cannot build CPU kernels"
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.splitlines()
    return None if version else f"{compiler} --version printed nothing"


def inductor_cache(warm: bool) -> contextlib.AbstractContextManager[None]:
    """An empty, temporary Inductor cache (the compile time of a first run on a machine), or the
    on-disk one that earlier runs filled when ``warm``."""
    if warm:
        return contextlib.nullcontext()
    from torch._inductor.utils import fresh_cache

    return fresh_cache()


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:200]


def measure_compiled(spec: VariantSpec, dataset: PatchSampleDataset, width: float, batch_size: int,
                     iterations: int, workers: int, device: torch.device, log: Log | None = None
                     ) -> CompileRow:
    row = CompileRow(setting_name(width, batch_size))
    generator, discriminator, channels_last = fresh_networks(spec, dataset, width, device)
    config = TrainConfig(width=width, batch_size=batch_size)
    eager = Trainer(spec, generator, discriminator, config, device)
    raw_generator, raw_discriminator = copy.deepcopy(generator), copy.deepcopy(discriminator)
    # The compiled wrappers share their parameters with the raw modules, so the optimisers (built
    # from the raw generator and the wrapped discriminator) update what the compiled code reads.
    compiled = Trainer(spec, raw_generator, cast(nn.Module, torch.compile(raw_discriminator)), config,
                       device, generator=cast(nn.Module, torch.compile(raw_generator)))
    source = batches(dataset, batch_size, workers, device, channels_last)

    def run_eager(batch: Batch) -> None:
        eager.iteration(batch, LAMBDA)

    def run_compiled(batch: Batch) -> None:
        compiled.iteration(batch, LAMBDA)

    warmup_seconds = []
    try:
        for _ in range(WARMUP):
            batch = next(source)
            run_eager(batch)
            warmup_seconds.append(timed(partial(run_compiled, batch), device))
    except Exception as error:  # compile errors surface at the first call
        row.error = first_line(error)
        return row
    if log is not None:
        log(f"  compiled warm-up iterations: {', '.join(f'{seconds:.1f} s' for seconds in warmup_seconds)}")
    times = side_by_side(run_compiled, run_eager, source, iterations, device, log)
    row.compiled_seconds, row.eager_seconds = statistics.median(times.first), statistics.median(times.second)
    row.ratio, row.ratio_spread = times.ratio()
    row.first_iteration_seconds = warmup_seconds[0]
    row.compile_seconds = sum(warmup_seconds) - len(warmup_seconds) * row.compiled_seconds
    return row


def run_compile(console: Console, spec: VariantSpec, dataset: PatchSampleDataset, settings: list[Setting],
                iterations: int, workers: int, device: torch.device, warm_cache: bool = False,
                log: Log | None = None) -> None:
    problem = compiler_problem() if device.type == "cpu" else None
    if problem is not None:
        console.print(f"torch.compile skipped: {problem}")
        return
    console.print(f"torch.compile (default mode) of G and D against eager, {iterations} timed iterations "
                  f"after {WARMUP} warm-up, alternating")
    rows = []
    for width, batch_size in settings:
        torch._dynamo.reset()  # each setting pays its own compile
        if log is not None:
            log(f"{setting_name(width, batch_size)}, compiled against eager:")
        with inductor_cache(warm_cache):
            row = measure_compiled(spec, dataset, width, batch_size, iterations, workers, device, log)
        if row.error is not None:
            console.print(f"torch.compile failed at {row.setting}: {row.error}")
            continue
        rows.append(row)
    if not rows:
        return
    table = Table(title="one iteration = 1 D + 2 G updates, kpbench's Trainer")
    for column in ("setting", "eager s/iter", "compiled s/iter", "compiled / eager (min-max)",
                   "1st iteration s", "compile s", "pays back after"):
        table.add_column(column, justify="right")
    for row in rows:
        pays = f"{row.break_even:.0f} iterations" if row.break_even is not None else "never"
        table.add_row(row.setting, f"{row.eager_seconds:.3f}", f"{row.compiled_seconds:.3f}",
                      f"{row.ratio:.3f} ({row.ratio_spread[0]:.2f}-{row.ratio_spread[1]:.2f})",
                      f"{row.first_iteration_seconds:.1f}", f"{row.compile_seconds:.1f}", pays)
    console.print(table)
    cache = "the on-disk Inductor cache of earlier runs" if warm_cache else "an empty Inductor cache"
    console.print(f"compile s: the {WARMUP} warm-up iterations of the compiled Trainer minus {WARMUP} steady "
                  f"ones (Dynamo tracing, Inductor code generation and C++ builds), with {cache}.")


# --- command line --------------------------------------------------------------------------------


def parse_setting(text: str) -> Setting:
    """'1x64' -> (1.0, 64)."""
    width, _, batch_size = text.partition("x")
    try:
        return float(width), int(batch_size)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxBATCH such as 1x64, got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small widths and few iterations")
    parser.add_argument("--setting", type=parse_setting, action="append",
                        help="WIDTHxBATCH to measure, repeatable (default depends on the mode)")
    parser.add_argument("--iterations", type=int,
                        help="timed iterations per setting (default 6, quick 4; profile 3, quick 2)")
    parser.add_argument("--amp", choices=("bf16", "fp16"), action="append",
                        help="also time kpbench under this autocast (default: both on CUDA, none on the CPU)")
    parser.add_argument("--profile", action="store_true",
                        help="profile kpbench's iteration instead of timing it")
    parser.add_argument("--compile", action="store_true",
                        help="time torch.compile'd networks against eager ones instead of ours against plain")
    parser.add_argument("--verbose", action="store_true", help="print every timed iteration as it ends")
    parser.add_argument("--warm-cache", action="store_true",
                        help="--compile: reuse Inductor's on-disk cache (default: an empty one)")
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda[:k]")
    parser.add_argument("--workers", type=int, default=2, help="data loading processes")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--source", default="builtin:160", help="data source (default: built-in, 144 train)")
    parser.add_argument("--workdir", type=Path, help="work dir holding the box cache")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    spec = get_variant("full")
    dataset = make_sample_dataset(DataSpec(source=args.source, size=SIZE), "train", 0,
                                  WorkDir.resolve(args.workdir))
    console = Console(width=120)
    console.print(f"full model, S={SIZE}, N={dataset.n_patches}, {device}, torch {torch.__version__}, "
                  f"{torch.get_num_threads()} threads, {args.workers} data workers")

    timed_iterations = args.iterations or (4 if args.quick else 6)
    log = partial(console.print, highlight=False) if args.verbose else None
    if args.profile:
        setting = (args.setting or [(0.25, 16) if args.quick else (1.0, 64)])[0]
        profiled_iterations = args.iterations or (2 if args.quick else 3)
        run_profile(console, spec, dataset, setting, profiled_iterations, args.workers, device)
    if args.compile:
        settings = args.setting or ([(0.125, 8)] if args.quick else [(0.125, 16), (1.0, 64)])
        run_compile(console, spec, dataset, settings, timed_iterations, args.workers, device, args.warm_cache,
                    log)
    if not (args.profile or args.compile):
        settings = args.setting or ([(0.25, 16), (0.125, 8)] if args.quick else [(1.0, 64), (0.25, 16)])
        amp_modes = args.amp if args.amp is not None else (["bf16", "fp16"] if device.type == "cuda" else [])
        run_timing(console, spec, dataset, settings, timed_iterations, args.workers, device, amp_modes, log)


if __name__ == "__main__":
    main()
