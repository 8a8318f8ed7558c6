"""Cost of one training iteration of the full model (1 D + 2 G updates), against a plain version.

    python benchmarks/train_step.py            # width 1 @ batch 64 and width 0.25 @ batch 16
    python benchmarks/train_step.py --quick    # small widths, few iterations (CPU smoke run)

For each (width, batch) at S = 64 it prints seconds per iteration, images per second (data wait
included), peak memory (RSS on the CPU, max allocated on CUDA), the share of the iteration spent
waiting for data, and the ratio against a plain PyTorch version of the same networks and schedule
that recomputes every forward pass (the generator three times per iteration, D's weight
gradients during G updates, the default for-each Adam). Both run in the same process on the same
batches, alternating which goes first, and the ratio is the median of the per-iteration ratios,
so a machine shared with other jobs biases neither. On CUDA the training loop is also timed with
bf16 and fp16 autocast.
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kpbench.losses import discriminator_loss, generator_loss, make_fakes  # noqa: E402
from kpbench.nets import Discriminator, PatchGenerator, build_networks  # noqa: E402
from kpbench.paths import WorkDir  # noqa: E402
from kpbench.runtime import pick_device  # noqa: E402
from kpbench.samples import DataSpec, PatchSampleDataset, make_sample_dataset  # noqa: E402
from kpbench.train import Batch, Dist, RankBatchSampler, TrainConfig, Trainer, epoch_order  # noqa: E402
from kpbench.variant import VariantSpec, get_variant  # noqa: E402

SIZE = 64
LAMBDA = 0.64


class PlainIteration:
    """The same networks, losses and schedule written plainly: each update runs its own forward
    passes, gradients flow into every parameter they reach, default Adam."""

    def __init__(self, spec: VariantSpec, generator: PatchGenerator, discriminator: Discriminator,
                 lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999)) -> None:
        self.spec, self.generator, self.discriminator = spec, generator, discriminator
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
        self.opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)

    def __call__(self, batch: Batch, lam: float) -> None:
        g, d, spec = self.generator, self.discriminator, self.spec
        out = g(batch.patches, batch.z)
        fakes = make_fakes(spec.fake_kinds, out.image.detach(), batch.real, batch.mask, batch.other_real)
        d_loss, _ = discriminator_loss(d(batch.real, batch.patches),
                                       {kind: d(fake, batch.patches) for kind, fake in fakes.items()})
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()
        for _ in range(2):
            out = g(batch.patches, batch.z)
            g_loss, _ = generator_loss(spec, out, batch.real, batch.mask, lam, d(out.image, batch.patches))
            self.opt_g.zero_grad()
            g_loss.backward()
            self.opt_g.step()


def batches(dataset: PatchSampleDataset, batch_size: int, workers: int, device: torch.device,
            channels_last: bool) -> Iterator[Batch]:
    """Endless training batches as the training loop loads them (worker processes, pinned
    memory on CUDA), each paired with the previous batch's images as y'."""
    previous = None
    generator = torch.Generator().manual_seed(0)
    for epoch in range(1_000_000):
        dataset.set_epoch(epoch)
        sampler = RankBatchSampler(epoch_order(len(dataset), 0, epoch), batch_size, Dist())
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                             pin_memory=device.type == "cuda")
        for item in loader:
            real = item["image"].to(device, non_blocking=True)
            if channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
            z = (torch.rand(real.shape[0], 128, generator=generator) * 2 - 1).to(device)
            yield Batch(item["patches"].to(device, non_blocking=True), real, item["mask"].to(device),
                        z, previous if previous is not None else real.roll(1, 0))
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


@dataclass
class Row:
    setting: str
    seconds: float  # per iteration, compute only
    images_per_s: float  # data wait included
    peak_mb: float
    data_share: float
    plain_seconds: float | None = None
    ratio: float | None = None
    ratio_spread: tuple[float, float] | None = None


def measure(spec: VariantSpec, dataset: PatchSampleDataset, width: float, batch_size: int, iterations: int,
            warmup: int, workers: int, device: torch.device, amp: str, compare: bool) -> Row:
    torch.manual_seed(0)
    nets = build_networks(spec, SIZE, width, dataset.n_patches)
    assert nets.discriminator is not None
    channels_last = device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    generator = nets.generator.to(device, memory_format=memory_format)
    discriminator = nets.discriminator.to(device, memory_format=memory_format)
    plain = PlainIteration(spec, copy.deepcopy(generator), copy.deepcopy(discriminator)) if compare else None
    config = TrainConfig(width=width, batch_size=batch_size, amp=amp)  # type: ignore[arg-type]
    trainer = Trainer(spec, generator, discriminator, config, device)
    source = batches(dataset, batch_size, workers, device, channels_last)

    for _ in range(warmup):
        batch = next(source)
        trainer.iteration(batch, LAMBDA)
        if plain is not None:
            plain(batch, LAMBDA)
    ours_s, plain_s, waits = [], [], []
    for k in range(iterations):
        synchronize(device)
        started = time.perf_counter()
        batch = next(source)
        synchronize(device)
        waits.append(time.perf_counter() - started)
        ours = partial(trainer.iteration, batch, LAMBDA)
        if plain is None:
            ours_s.append(timed(ours, device))
        elif k % 2 == 0:  # alternate the order so drift in machine load hits both alike
            ours_s.append(timed(ours, device))
            plain_s.append(timed(partial(plain, batch, LAMBDA), device))
        else:
            plain_s.append(timed(partial(plain, batch, LAMBDA), device))
            ours_s.append(timed(ours, device))
    peak = peak_of(partial(trainer.iteration, next(source), LAMBDA), device)
    seconds, wait = statistics.median(ours_s), statistics.median(waits)
    row = Row(f"width {width:g}, batch {batch_size}" + (f", {amp}" if amp != "off" else ""), seconds,
              batch_size / (seconds + wait), peak, wait / (seconds + wait))
    if plain_s:
        ratios = sorted(o / p for o, p in zip(ours_s, plain_s))
        row.plain_seconds = statistics.median(plain_s)
        row.ratio = statistics.median(ratios)
        row.ratio_spread = (ratios[0], ratios[-1])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small widths and few iterations")
    parser.add_argument("--iterations", type=int, help="timed iterations per setting (default 6, quick 4)")
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda[:k]")
    parser.add_argument("--workers", type=int, default=2, help="data loading processes")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--source", default="builtin:160", help="data source (default: built-in, 144 train)")
    parser.add_argument("--workdir", type=Path, help="work dir holding the box cache")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    settings = [(0.25, 16), (0.125, 8)] if args.quick else [(1.0, 64), (0.25, 16)]
    iterations = args.iterations or (4 if args.quick else 6)
    spec = get_variant("full")
    dataset = make_sample_dataset(DataSpec(source=args.source, size=SIZE), "train", 0,
                                  WorkDir.resolve(args.workdir))
    console = Console(width=120)
    console.print(f"full model, S={SIZE}, N={dataset.n_patches}, {device}, torch {torch.__version__}, "
                  f"{torch.get_num_threads()} threads, {args.workers} data workers, "
                  f"{iterations} timed iterations after 2 warm-up")
    rows = []
    for width, batch_size in settings:
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        rows.append(measure(spec, dataset, width, batch_size, iterations, 2, args.workers, device, "off",
                            compare=True))
        if device.type == "cuda":
            for amp in ("bf16", "fp16"):
                rows.append(measure(spec, dataset, width, batch_size, iterations, 2, args.workers, device,
                                    amp, compare=False))
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
    memory = "max allocated" if device.type == "cuda" else "peak RSS of the process"
    console.print(f"peak MB: {memory} during one training-loop iteration; images/s includes data wait.")


if __name__ == "__main__":
    main()
