"""Training: one variant, one seed, one set of conditions -> ``runs/<name>/`` where the name is
the variant, the settings that differ from the defaults and the seed (``full-random-n5-seed1``;
kpbench.identity).

Run directory (its layout is kpbench.paths.RunDir)::

    spec.json              the resolved VariantSpec
    config.json            the resolved TrainConfig, data manifest hash, world size, run length
    log.jsonl              one JSON line per ``log_every`` steps (losses, lambda, timings) + events
    samples/step-XXXXXX.png  fixed inputs every ``sample_every`` steps: patches, real, generated,
                           predicted mask, masked real
    checkpoints/last.pt    models, optimizers, grad scalers, step, epoch, lambda, data order and
                           every RNG state of every rank; written atomically, loaded weights-only

One iteration is the paper's schedule on one batch: ``d_steps`` discriminator updates, then
``g_steps`` generator updates (1 and 2), with one z for all of them. (The authors' code instead
updates D on every batch and G on every second one; docs/fidelity.md.) It avoids redundant work:
the generator forward of the discriminator step is kept with its graph and serves the first
generator update unchanged (the generator's weights have not moved in between); the
discriminator's fakes are blends of the detached output, so the D step never touches the
generator's graph; D's weights are frozen while it scores G_I(x) for the generator, so no
weight gradients are computed for it there; Adam is the fused kernel.

Rerunning ``train`` with the same config continues from the checkpoint. On the CPU the result is
bit-identical to an uninterrupted run: data order comes from (seed, epoch), flips from
(seed, epoch, index) inside the dataset, z from a generator whose state is checkpointed.

This module holds the loop and its checkpoints. Around it: kpbench.resume names the run folder and
decides whether a call starts, continues or refuses a run (and adopts folders from before names
carried settings); kpbench.trainlog writes log.jsonl, TensorBoard scalars and the console
progress; kpbench.distributed joins torchrun's processes and gives each rank its slice of every
batch.
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from kpbench.config import TrainConfig
from kpbench.data import check_split_sizes
from kpbench.diagnostics import CollapseWatch, DiagnosticBatch, measure
from kpbench.distributed import Dist, RankBatchSampler, barrier, epoch_order, init_distributed
from kpbench.errors import KpbenchError
from kpbench.io import atomic_torch_save
from kpbench.lock import RunLock
from kpbench.losses import discriminator_loss, generator_loss, lambda_at, make_fakes
from kpbench.nets import Generator, build_networks
from kpbench.paths import WorkDir
from kpbench.resume import RunSetup, RunState, adopt_legacy_run, prepare_run, run_dir_for
from kpbench.runtime import derive_seed, pick_device, resolve_amp, seed_everything
from kpbench.samples import PatchSampleDataset, expand_batch, keep_batch, make_sample_dataset, open_data
from kpbench.trainlog import LogWindow, ProgressView, RunLogWriter, TensorBoardLog
from kpbench.variant import VariantSpec, get_variant

CHECKPOINT_FORMAT = 1
SAMPLE_ROWS = 8


# --- data loading --------------------------------------------------------------------------------


def data_workers(num_workers: int | None, device: torch.device) -> int:
    """Data loader processes: as configured, or by default none on the CPU (they would take cores
    from training) and 2 on CUDA."""
    if num_workers is not None:
        return num_workers
    return 2 if device.type == "cuda" else 0


# --- RNG state as plain tensors and lists (loadable with weights_only=True) ----------------------


def capture_rng(z_generator: torch.Generator) -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    version, state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(state), "gauss": py_gauss},
        "z": z_generator.get_state(),
    }


def restore_rng(state: dict[str, Any], z_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))
    z_generator.set_state(state["z"])


# --- one iteration -------------------------------------------------------------------------------


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad: gradients still flow to the inputs, none to the weights."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


@dataclass
class Batch:
    patches: Tensor  # (B, N, 3, S, S)
    real: Tensor  # (B, 3, S, S)
    mask: Tensor  # (B, 1, S, S)
    z: Tensor  # (B, z_dim) ~ U(-1, 1)
    other_real: Tensor  # (B, 3, S, S) real images from outside this batch (y' of equation (4))


class Trainer:
    """Networks, optimizers and the update schedule; no I/O. ``generator`` may be the DDP wrapper
    of ``raw_generator``; the discriminator is never wrapped (see ``_all_reduce_d_grads``)."""

    def __init__(
        self,
        spec: VariantSpec,
        raw_generator: Generator,
        discriminator: nn.Module | None,
        config: TrainConfig,
        device: torch.device,
        dist_info: Dist = Dist(),
        generator: nn.Module | None = None,
    ) -> None:
        self.spec, self.device, self.dist = spec, device, dist_info
        self.raw_generator = raw_generator
        self.generator = generator if generator is not None else raw_generator
        self.discriminator = discriminator
        self.d_steps, self.g_steps = config.d_steps, config.g_steps
        self.amp = resolve_amp(config.amp, device)  # what "auto" means on this device
        self.amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.amp]

        def adam(module: nn.Module) -> torch.optim.Adam:
            return torch.optim.Adam(module.parameters(), lr=config.lr, betas=config.betas,
                                    fused=device.type in ("cpu", "cuda"))

        self.opt_g = adam(raw_generator)
        self.opt_d = adam(discriminator) if discriminator is not None else None
        # fp16 needs loss scaling; bf16 has float32's range and does not. The L1 terms are
        # per-sample pixel sums (~1e3), so start well below the default 2**16 scale, which would
        # overflow and skip the first several updates.
        scaling = self.amp == "fp16"
        self.scaler_g = torch.amp.GradScaler(device.type, init_scale=2.0**10, enabled=scaling)
        self.scaler_d = torch.amp.GradScaler(device.type, init_scale=2.0**10, enabled=scaling)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def iteration(self, batch: Batch, lam: float) -> dict[str, Tensor]:
        """One paper iteration; returns each loss term (detached, float32 scalars)."""
        logged: dict[str, Tensor] = {}
        # Kept with its graph: the D step reads it detached, the first G step backpropagates it.
        with self.autocast():
            out = self.generator(batch.patches, batch.z)
        if self.discriminator is not None and self.d_steps > 0:
            logged.update(self._discriminator_step(out.image.detach(), batch))
        for g_step in range(self.g_steps):
            if g_step > 0:  # the weights moved: recompute
                with self.autocast():
                    out = self.generator(batch.patches, batch.z)
            fake_logits = None
            if self.discriminator is not None:
                with frozen(self.discriminator), self.autocast():
                    fake_logits = self.discriminator(out.image, batch.patches)
            total, terms = generator_loss(self.spec, out, batch.real, batch.mask, lam, fake_logits,
                                          patches=batch.patches, z=batch.z)
            self.opt_g.zero_grad(set_to_none=True)
            self.scaler_g.scale(total).backward()
            self.scaler_g.step(self.opt_g)
            self.scaler_g.update()
        logged.update({f"g/{name}": value.detach() for name, value in terms.items()})
        logged["g/total"] = total.detach()
        return logged

    def _discriminator_step(self, generated: Tensor, batch: Batch) -> dict[str, Tensor]:
        assert self.discriminator is not None and self.opt_d is not None
        fakes = make_fakes(self.spec.fake_kinds, generated, batch.real, batch.mask, batch.other_real)
        for _ in range(self.d_steps):
            # One forward per kind, as separate batches: BatchNorm statistics never mix real and
            # fake images (the authors' code does the same, models/model.py backward_D).
            with self.autocast():
                real_logits = self.discriminator(batch.real, batch.patches)
                fake_logits = {kind: self.discriminator(fake, batch.patches) for kind, fake in fakes.items()}
            total, parts = discriminator_loss(real_logits, fake_logits)
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler_d.scale(total).backward()
            self._all_reduce_d_grads()
            self.scaler_d.step(self.opt_d)
            self.scaler_d.update()
        logged = {f"d/{name}": value.detach() for name, value in parts.items()}
        logged["d/total"] = total.detach()
        return logged

    def _all_reduce_d_grads(self) -> None:
        # D runs several forwards before one backward (one per fake kind), which DDP's reducer
        # does not support; averaging its gradients by hand is the same synchronisation.
        if self.dist.world == 1 or self.discriminator is None:
            return
        grads = [p.grad for p in self.discriminator.parameters() if p.grad is not None]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= self.dist.world
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.raw_generator.state_dict(),
            "discriminator": self.discriminator.state_dict() if self.discriminator is not None else {},
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else {},
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.raw_generator.load_state_dict(state["generator"])
        if self.discriminator is not None and self.opt_d is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.opt_g.load_state_dict(state["opt_g"])
        # A scaler state exists only for fp16; switching amp on resume starts a fresh scale.
        if state["scaler_g"] and self.scaler_g.is_enabled():
            self.scaler_g.load_state_dict(state["scaler_g"])
            self.scaler_d.load_state_dict(state["scaler_d"])


# --- fixed inputs: sample grids and held-out diagnostics -----------------------------------------


def _diagnostic_batch(config: TrainConfig, spec: VariantSpec,
                      dataset: PatchSampleDataset) -> DiagnosticBatch | None:
    """The fixed held-out batch of the diagnostics: the first test images, with patches of the
    run's own source; None when the data has no test split."""
    if len(dataset.dataset.split_indices("test")) == 0:
        return None
    test = make_sample_dataset(config.data, "test", config.seed, WorkDir.resolve(config.workdir),
                               patch_source=config.patch_source, flip=False,
                               dataset=dataset.dataset)
    return DiagnosticBatch.from_samples(test, dataset, config.seed, spec.z_dim)


def _sample_inputs(dataset: PatchSampleDataset, seed: int, z_dim: int) -> dict[str, Tensor]:
    """The fixed inputs of every sample grid: the first training samples (epoch 0) and a fixed z."""
    dataset.set_epoch(0)
    batch = expand_batch(dataset.raw_batch(np.arange(min(SAMPLE_ROWS, len(dataset)))), torch.device("cpu"))
    inputs = {k: batch[k] for k in ("patches", "image", "mask")}
    z_generator = torch.Generator().manual_seed(derive_seed(seed, "sample-z"))
    inputs["z"] = torch.rand(len(batch["image"]), z_dim, generator=z_generator) * 2 - 1
    return inputs


@torch.no_grad()
def write_sample_grid(path: Path, generator: Generator, inputs: dict[str, Tensor],
                      device: torch.device) -> Path:
    """Columns: the N patches, real, generated, predicted mask (if any), masked real. Eval mode."""
    from kpbench.grids import save_grid

    was_training = generator.training
    generator.eval()
    out = generator(inputs["patches"].to(device), inputs["z"].to(device))
    generator.train(was_training)
    columns = [inputs["patches"], inputs["image"], out.image.float().cpu()]
    if out.mask is not None:
        columns.append(out.mask.float().cpu())
    columns.append(inputs["image"] * inputs["mask"] + (inputs["mask"] - 1))  # black outside M
    return save_grid(path, columns)


# --- stopping on a signal ------------------------------------------------------------------------


class StopRequest:
    """SIGINT / SIGTERM set a flag; the loop checkpoints after the current iteration and stops.
    A second Ctrl-C raises KeyboardInterrupt at once (the last checkpoint stays intact)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals need the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class TrainingInterrupted(KpbenchError):
    """Training stopped on Ctrl-C / SIGTERM after saving a checkpoint."""

    exit_code = 130


# --- the loop ------------------------------------------------------------------------------------


def resolve_spec(config: TrainConfig) -> VariantSpec:
    """The variant's spec with the config's overrides (``init``); saved as the run's spec.json."""
    spec = get_variant(config.variant)
    return replace(spec, init=config.init) if config.init is not None else spec


StepHook = Callable[[int, int, str], None]  # (iterations done, total, status text)


def train(config: TrainConfig, on_step: StepHook | None = None) -> Path:
    """Train ``config.variant`` and return its run directory; continues an existing run.

    Raises KpbenchError for unusable settings, a run trained with other settings (unless
    ``restart``) or a non-finite loss (the last good checkpoint is kept), and TrainingInterrupted
    (exit code 130) after saving a checkpoint on Ctrl-C / SIGTERM. Under torchrun every process
    calls it; the main rank writes the files. ``on_step`` is called after every iteration on the
    main rank (a caller's own progress view, e.g. ``kpbench run``'s).
    """
    spec = resolve_spec(config)
    device = pick_device(config.device)
    dist_info, created_group = init_distributed(device.type)
    try:
        return _train(config, spec, device, dist_info, on_step)
    finally:
        if created_group:
            # The DDP wrapper holds the process group: free it (it sits in reference cycles)
            # before destroying the group, or gloo's threads outlive the interpreter and abort.
            gc.collect()
            dist.destroy_process_group()


def _train(config: TrainConfig, spec: VariantSpec, device: torch.device, dist_info: Dist,
           on_step: StepHook | None = None) -> Path:
    if config.batch_size % dist_info.world:
        raise KpbenchError(f"batch size {config.batch_size} does not split evenly over "
                           f"{dist_info.world} processes")
    if device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank if dist_info.world > 1 else device.index or 0)
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
    # On a fresh work dir one rank detects the key boxes while the others wait on the box cache's
    # lock (kpbench.boxcache), then read them.
    data = open_data(config.data)
    check_split_sizes(data, warn=dist_info.main)  # before any folder of the run is made
    dataset = make_sample_dataset(config.data, "train", config.seed, WorkDir.resolve(config.workdir),
                                  patch_source=config.patch_source, flip=config.flip, dataset=data)
    run_dir = run_dir_for(config, spec)
    if dist_info.main:
        adopt_legacy_run(run_dir, config, spec)
    barrier(dist_info)
    # One trainer per run: the main rank holds the run's lock (kpbench.lock) from before it reads
    # or deletes anything in the run until the last checkpoint is written.
    with RunLock(run_dir, "train") if dist_info.main else contextlib.nullcontext():
        setup = prepare_run(config, spec, dataset, dist_info)
        return TrainingSession(setup, spec, dataset, device, dist_info, on_step).run()


class TrainingSession:
    """The state of one call of ``train``: networks, data, RNGs, position, log; checkpointable."""

    def __init__(self, setup: RunSetup, spec: VariantSpec, dataset: PatchSampleDataset,
                 device: torch.device, dist_info: Dist, on_step: StepHook | None = None) -> None:
        self.setup, self.config, self.spec = setup, setup.config, spec
        self.on_step = on_step if dist_info.main else None
        self.dataset, self.device, self.dist = dataset, device, dist_info
        config = self.config
        seed_everything(config.seed)  # identical initial weights on every rank
        nets = build_networks(spec, config.size, config.width, config.n_patches)
        # channels-last speeds up cuDNN convolutions; on the CPU it is slower for these nets.
        self.channels_last = device.type == "cuda"
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        # Module.to takes memory_format as a keyword; torch's overloads leave it out.
        self.generator = nets.generator.to(device, memory_format=memory_format)  # type: ignore[call-overload]
        discriminator = nets.discriminator
        if discriminator is not None:
            discriminator = discriminator.to(device, memory_format=memory_format)  # type: ignore[call-overload]
        wrapped = None
        if dist_info.world > 1:
            wrapped = DistributedDataParallel(self.generator,
                                              device_ids=[device.index] if device.type == "cuda" else None)
        self.trainer = Trainer(spec, self.generator, discriminator, config, device, dist_info,
                               generator=wrapped)
        self.z_generator = torch.Generator().manual_seed(derive_seed(config.seed, "z", dist_info.rank))
        self.state = RunState(lam=self.lam(0))
        self.other_real: Tensor | None = None  # the previous batch's real images (y')
        self.resumed_order: Tensor | None = None  # the interrupted epoch's data order, as saved
        self.log = RunLogWriter(setup.files.log, dist_info.main)
        self.scalars = TensorBoardLog(setup.files.tensorboard, config.tensorboard and dist_info.main)
        self.last_saved: int | None = None
        self.sample_inputs = _sample_inputs(dataset, config.seed, spec.z_dim) if dist_info.main else {}
        self.diagnostics = _diagnostic_batch(config, spec, dataset) if dist_info.main else None
        self.diagnostics_every = config.diagnostics_every or max(1, setup.steps_per_epoch // 4)
        # Collapse = IoU below the prior's for two epochs, not counting the first (warm-up).
        self.collapse_watch = CollapseWatch(patience_steps=2 * setup.steps_per_epoch)
        self.last_diagnostics: dict[str, float] = {}

    def lam(self, epoch: int) -> float:
        assert self.config.lambda_decay_epochs is not None
        return lambda_at(epoch, self.spec.lambda_start, self.spec.lambda_end, self.config.lambda_decay_epochs)

    # checkpoints ---------------------------------------------------------------------------------

    def save_checkpoint(self) -> None:
        rank_state = {"rng": capture_rng(self.z_generator),
                      "other_real": self.other_real.cpu() if self.other_real is not None else None}
        ranks: list[Any] = [rank_state]
        if self.dist.world > 1:  # every rank's RNGs and y' go into the one file
            ranks = [None] * self.dist.world
            dist.all_gather_object(ranks, rank_state)
        if self.dist.main:
            state = self.state
            atomic_torch_save(self.setup.files.checkpoint, {
                "format": CHECKPOINT_FORMAT, "step": state.step, "epoch": state.epoch,
                "batch_in_epoch": state.batch_in_epoch, "lambda": state.lam,
                "data_order": epoch_order(len(self.dataset), self.config.seed, state.epoch),
                "models": self.trainer.state_dict(), "ranks": ranks,
            })
        self.last_saved = self.state.step

    def restore(self) -> None:
        checkpoint = self.setup.files.read_checkpoint()
        self.trainer.load_state_dict(checkpoint["models"])
        self.state = RunState(checkpoint["step"], checkpoint["epoch"], checkpoint["batch_in_epoch"],
                              checkpoint["lambda"])
        rank_state = checkpoint["ranks"][self.dist.rank]
        restore_rng(rank_state["rng"], self.z_generator)
        if rank_state["other_real"] is not None:
            self.other_real = rank_state["other_real"].to(self.device)
        self.resumed_order = checkpoint["data_order"]
        self.last_saved = self.state.step

    # the loop ------------------------------------------------------------------------------------

    def run(self) -> Path:
        setup, state = self.setup, self.state
        if setup.resume:
            self.restore()
            state = self.state
            self.log.truncate_after(state.step)
            self.log.write({"event": "resume", "step": state.step, "total_steps": setup.total_steps,
                            "amp": self.trainer.amp})
        else:
            self.log.write({"event": "start", "step": 0, "total_steps": setup.total_steps,
                            "world_size": self.dist.world, "amp": self.trainer.amp})
        view = ProgressView(self.config.progress and self.dist.main, setup.run_dir.name, setup.total_steps,
                            state.step, self.config.status_every)
        with StopRequest() as stop, view, self.scalars:
            while state.step < setup.total_steps:
                self.run_epoch(stop, view)
        self.log.write({"event": "done", "step": state.step})
        barrier(self.dist)  # no rank tears the group down while another still writes
        return setup.run_dir

    def epoch_loader(self) -> DataLoader:
        """Batches of the current epoch from where the run stands, in worker processes."""
        state, config = self.state, self.config
        self.dataset.set_epoch(state.epoch)  # before the workers copy the dataset
        order = self.resumed_order
        if order is None:
            order = epoch_order(len(self.dataset), config.seed, state.epoch)
        self.resumed_order = None
        return DataLoader(
            self.dataset,
            batch_sampler=RankBatchSampler(order, config.batch_size, self.dist, start=state.batch_in_epoch),
            num_workers=data_workers(config.num_workers, self.device),
            collate_fn=keep_batch,  # type: ignore[arg-type]  # a whole batch from __getitems__, not a list
            pin_memory=self.device.type == "cuda",
            # Worker seeds from (seed, epoch), not from the global RNG (flips need no RNG anyway).
            generator=torch.Generator().manual_seed(derive_seed(config.seed, "loader", state.epoch)),
        )

    def run_epoch(self, stop: StopRequest, view: ProgressView) -> None:
        config, setup, state, spec = self.config, self.setup, self.state, self.spec
        window = LogWindow()
        batches = iter(self.epoch_loader())
        while state.step < setup.total_steps:
            started = time.perf_counter()
            item = next(batches, None)
            if item is None:
                break
            item = expand_batch(item, self.device)  # patches and masks cut on the device
            real = item["image"]
            if self.channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
            fetched = time.perf_counter()
            z = (torch.rand(real.shape[0], spec.z_dim, generator=self.z_generator) * 2 - 1).to(self.device)
            # y' of equation (4): the previous batch's real images (the authors' code draws y' at
            # random from the training images outside the batch). The run's very first batch has
            # no previous one and pairs each image with its neighbour in the batch instead.
            other = self.other_real if self.other_real is not None else real.roll(1, 0)
            lam = self.lam(state.epoch)
            terms = self.trainer.iteration(Batch(item["patches"], real, item["mask"], z, other), lam)
            self.other_real = real
            losses, stop_now = self.synchronise(terms, stop.requested)
            finished = time.perf_counter()
            self.check_finite(losses)

            state.step += 1
            state.batch_in_epoch += 1
            state.lam = lam
            if state.batch_in_epoch == setup.steps_per_epoch:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            window.add(losses, fetched - started, finished - fetched)
            done = state.step >= setup.total_steps
            if state.step % config.log_every == 0 or done or stop_now:
                entry = window.entry(state, config.batch_size)
                self.log.write(entry)
                self.scalars.add(entry)
                window = LogWindow()
            if state.step % self.diagnostics_every == 0 or done:
                self.run_diagnostics()
            if self.dist.main and (state.step % config.sample_every == 0 or done or stop_now):
                write_sample_grid(setup.files.samples / f"step-{state.step:06d}.png", self.generator,
                                  self.sample_inputs, self.device)
            if state.step % config.checkpoint_every == 0 or done or stop_now:
                self.save_checkpoint()
            status = view.step(state.step, losses, fetched - started, finished - fetched, config.batch_size,
                               self.last_diagnostics)
            if self.on_step is not None:
                self.on_step(state.step, setup.total_steps, status)
            if stop_now:
                self.log.write({"event": "interrupted", "step": state.step})
                raise TrainingInterrupted(
                    f"training interrupted at step {state.step}/{setup.total_steps}; checkpoint saved in "
                    f"{setup.run_dir}; run the same command again to continue")

    def run_diagnostics(self) -> None:
        """Diagnostics on the fixed held-out batch -> log.jsonl (``event: diagnostics``), the
        status line, and a one-time warning when the masks collapse."""
        if self.diagnostics is None:
            return
        values = measure(self.generator, self.diagnostics, self.device,
                         true_appearance_mask=self.spec.appearance_mask == "true")
        step = self.state.step
        entry = {"event": "diagnostics", "step": step, "epoch": self.state.epoch,
                 "samples": len(self.diagnostics.z), "diagnostics": values}
        self.log.write(entry)
        self.scalars.add(entry)
        self.last_diagnostics = values
        if step > self.setup.steps_per_epoch:  # the first epoch is warm-up
            message = self.collapse_watch.update(step, values)
            if message:
                self.log.write({"event": "mask-collapse-warning", "step": step, "message": message})
                warnings.warn(f"{self.setup.run_dir.name}: {message}", stacklevel=1)

    def synchronise(self, losses: dict[str, Tensor], stop: bool) -> tuple[dict[str, float], bool]:
        """The iteration's one host sync: losses averaged over ranks, and whether any rank was
        asked to stop (all ranks must stop at the same step)."""
        names = sorted(losses)
        values = torch.stack([losses[name].float() for name in names]
                             + [torch.tensor(float(stop), device=self.device)])
        if self.dist.world > 1:
            dist.all_reduce(values)
            values[:-1] /= self.dist.world
        host = values.tolist()
        return dict(zip(names, host[:-1])), host[-1] > 0

    def check_finite(self, losses: dict[str, float]) -> None:
        bad = [name for name, value in losses.items() if not math.isfinite(value)]
        if not bad:
            return
        step = self.state.step + 1
        self.log.write({"event": "non-finite", "step": step, "losses": losses})
        kept = (f"the last good checkpoint (step {self.last_saved}) is kept at {self.setup.files.checkpoint}"
                if self.last_saved is not None else "no checkpoint had been written yet")
        raise KpbenchError(f"non-finite loss ({', '.join(bad)}) at step {step}: training stopped; {kept}; "
                           "try a lower learning rate, or --amp off")
