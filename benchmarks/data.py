"""Data loading: the decoded-image cache with batched patch cutting against decoding every image.

    python benchmarks/data.py                                  # built-in images
    python benchmarks/data.py --source ../shared/data/celeba-6k --preset celeba
    python benchmarks/data.py --demo                           # also the demo's stage breakdown

For each source it prints training samples per second (image, N patches, mask: what one training
batch needs) two ways, timed alternately in the same process over the same batches:

    files   each image decoded from its source (JPEG decode + crop + resize, or the built-in
            drawing) and its patches cut one sample at a time: the path before the cache
    cache   one read of the memory-mapped uint8 cache per batch, patches cut for the whole
            batch in one call (kpbench.samples.expand_batch)

and the ratio (median of per-round ratios, with its range). ``--demo`` runs ``kpbench demo`` in a
temporary folder (or ``--workdir``) and prints its wall time per stage, with each stage's share.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kpbench.cli import demo_overrides  # noqa: E402
from kpbench.dataspec import DataSpec
from kpbench.paths import WorkDir  # noqa: E402
from kpbench.plan import load_plan, shipped_plan  # noqa: E402
from kpbench.runner import run_plan  # noqa: E402
from kpbench.samples import PatchSampleDataset, expand_batch, make_sample_dataset  # noqa: E402

CPU = torch.device("cpu")


def per_sample_from_files(samples: PatchSampleDataset, positions: np.ndarray) -> None:
    """The slow path: decode each image from its source and cut its patches on its own."""
    for position in positions.tolist():
        index = int(samples.indices[position])
        samples.dataset.decode(index)  # what reading the image cost before the cache
        expand_batch(samples.raw_batch([position]), CPU)


def batched_from_cache(samples: PatchSampleDataset, positions: np.ndarray) -> None:
    expand_batch(samples.raw_batch(positions), CPU)


def measure(samples: PatchSampleDataset, batch_size: int, rounds: int) -> tuple[float, float, list[float]]:
    """Samples/s of both paths (medians over rounds) and the per-round speed-up."""
    rng = np.random.default_rng(0)
    files_s, cache_s = [], []
    for round_number in range(rounds + 1):  # round 0 warms both paths up and is not counted
        positions = np.sort(rng.choice(len(samples), size=batch_size, replace=False))
        order = [per_sample_from_files, batched_from_cache]
        if round_number % 2:
            order.reverse()  # alternate which goes first
        times = {}
        for path in order:
            started = time.perf_counter()
            path(samples, positions)
            times[path] = time.perf_counter() - started
        if round_number:
            files_s.append(times[per_sample_from_files])
            cache_s.append(times[batched_from_cache])
    speedups = sorted(f / c for f, c in zip(files_s, cache_s))
    return batch_size / statistics.median(files_s), batch_size / statistics.median(cache_s), speedups


def demo_breakdown(workdir: Path, steps: int | None, console: Console) -> None:
    plan = load_plan(shipped_plan("demo"), workdir, overrides=demo_overrides(steps=steps))
    result = run_plan(plan, say=lambda text: None, progress=False)
    seconds = result.stages
    total = sum(seconds.values())
    first = plan.cells[0].config
    table = Table(title=f"kpbench demo ({first.steps} steps x {len(plan.cells)} variants), "
                  f"{torch.get_num_threads()} threads")
    for column in ("stage", "seconds", "share"):
        table.add_column(column, justify="right")
    for name, value in seconds.items():
        table.add_row(name, f"{value:.1f}", f"{value / total:.0%}")
    table.add_row("total", f"{total:.1f}", "100%")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", help="data source(s) (default: builtin:1200)")
    parser.add_argument("--preset", default="default", help="preset of the sources (celeba for CelebA)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=20, help="timed batches per path")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--workdir", type=Path, help="work dir for caches and the demo (default: temporary)")
    parser.add_argument("--demo", action="store_true", help="also run the demo and print its stages")
    parser.add_argument("--demo-steps", type=int, help="training steps per variant in the demo")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(width=120)
    with tempfile.TemporaryDirectory(prefix="kpbench-data-bench-") as scratch:
        workdir = args.workdir or Path(scratch)
        table = Table(title=f"training samples/s, batch {args.batch_size}, {args.rounds} rounds, "
                      f"{torch.get_num_threads()} threads")
        for column in ("source", "images", "files: decode + cut per sample", "cache: batched",
                       "cache / files (min-max)"):
            table.add_column(column, justify="right")
        for source in args.source or ["builtin:1200"]:
            spec = DataSpec(source=source, size=64, preset=args.preset)
            started = time.perf_counter()
            samples = make_sample_dataset(spec, "train", 0, WorkDir.resolve(workdir / "data"))
            console.print(f"{source}: cache and boxes ready in {time.perf_counter() - started:.1f} s "
                          "(0 when they already existed)")
            files, cache, speedups = measure(samples, args.batch_size, args.rounds)
            table.add_row(source, str(len(samples.dataset)), f"{files:.0f}", f"{cache:.0f}",
                          f"{statistics.median(speedups):.1f}x ({speedups[0]:.1f}-{speedups[-1]:.1f})")
        console.print(table)
        if args.demo:
            demo_breakdown(workdir / "demo", args.demo_steps, console)


if __name__ == "__main__":
    main()
