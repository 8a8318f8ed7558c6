"""What a plan's cells cost to train: FLOPs counted on meta tensors (no computation), and, on
request, this machine's FLOP/s measured on one real iteration (``kpbench run PLAN --dry-run``)."""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from kpbench.plan import Cell, Plan

if TYPE_CHECKING:
    from kpbench.config import TrainConfig


@dataclass(frozen=True)
class CellCost:
    steps: int
    flops_per_step: float  # training FLOPs of one iteration (forward + backward, every update)
    # The steps come from epochs over a count of training images that opening the data may lower
    # (a folder's files counted, not read: kpbench.data.count_split).
    approximate: bool = False

    @property
    def flops(self) -> float:
        return self.steps * self.flops_per_step


def _forward_flops(module: Any, *inputs: Any) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        module(*inputs)
    return float(counter.get_total_flops())


def estimate_cost(cell: Cell, train_images: int, images_exact: bool = True) -> CellCost:
    """Training FLOPs of a cell, counted on meta tensors (no computation): per iteration,
    (forward + backward ~ 3 forwards) x (g_steps generator passes + the discriminator on the real
    image and each fake in its d_steps and once per generator update). ``images_exact``: whether
    ``train_images`` is the opened dataset's count (else the steps of an epoch-long run are
    marked approximate)."""
    config = cell.config
    # Counted once per network setup: cells that differ in seed (or data) cost the same.
    per_step = _flops_per_iteration(replace(config, seed=0, data=replace(config.data, source="")))
    if config.steps is not None:
        return CellCost(config.steps, per_step)
    return CellCost(config.epochs * max(1, train_images // config.batch_size), per_step,
                    approximate=not images_exact)


@functools.cache
def _flops_per_iteration(config: TrainConfig) -> float:
    import torch

    from kpbench.nets import build_networks
    from kpbench.train import resolve_spec

    spec = resolve_spec(config)
    s, n, b = config.size, config.n_patches, config.batch_size
    with torch.device("meta"):
        nets = build_networks(spec, s, config.width, n)
        patches, z, image = torch.zeros(b, n, 3, s, s), torch.zeros(b, spec.z_dim), torch.zeros(b, 3, s, s)
        g = _forward_flops(nets.generator, patches, z)
        d = _forward_flops(nets.discriminator, image, patches) if nets.discriminator is not None else 0.0
    d_passes = (config.d_steps * (1 + len(spec.fake_kinds)) + config.g_steps) if d else 0
    return 3.0 * (config.g_steps * g + d_passes * d)


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


def describe_cost(plan: Plan) -> list[tuple[Cell, CellCost]]:
    """Each cell's training cost (see :func:`estimate_cost`); the number of training images per
    dataset comes from its file listing (kpbench.data.count_split), not from opening it, which
    reads every image of a folder."""
    from kpbench.data import SplitCount, count_split

    counts: dict[tuple[str, float], SplitCount] = {}
    costs = []
    for cell in plan.cells:
        key = (cell.config.data.source, cell.config.data.test_fraction)
        if key not in counts:
            counts[key] = count_split(*key)
        count = counts[key]
        costs.append((cell, estimate_cost(cell, count.train, images_exact=count.exact)))
    return costs


def format_flops(flops: float) -> str:
    """``flops`` in the largest unit that keeps it at 1 or more (GFLOP up to PFLOP), 3 digits."""
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops / 1e9:.3g} GFLOP"


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
