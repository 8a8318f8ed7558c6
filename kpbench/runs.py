"""Trained runs for evaluation: load a run directory's generator and use it.

    run = load_run(workdir.runs / "full-seed0")          # eval mode: running statistics
    run = run.with_bn_mode("batch")                      # a copy whose BN uses batch statistics
    info = describe_run(run_dir)                 # name, variant, seed, tags, progress, evaluated
    infos = list_runs(workdir.runs)              # every run under workdir/runs
    image, mask = run.generate(patches)          # (B,N,3,S,S) -> (B,3,S,S), (B,1,S,S) or None
    features = run.encode(patches)               # (B, run.feature_dim)
    baseline = run.untrained(seed=0)             # same architecture, random weights
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from kpbench.choices import BnMode, choice_values
from kpbench.config import TrainConfig
from kpbench.errors import KpbenchError
from kpbench.identity import stored_tags
from kpbench.lock import LOCKS_DIRNAME, current_holder
from kpbench.nets import Generator, build_networks
from kpbench.paths import RunDir
from kpbench.runtime import pick_device
from kpbench.variant import VariantSpec

if TYPE_CHECKING:
    from kpbench.protocol import EvalOptions, Protocol

# Batch-norm statistics at generation. "batch": every BN layer normalises with the statistics of
# the batch it is given, as the authors' code does (it never calls .eval(), so its samples are made
# in train mode); an output then depends on the other samples of its batch, so evaluation fixes
# its batch size and order and records them. "running": the running averages stored at training
# time (PyTorch's eval mode); an output depends on its own input only.
# The default (kpbench.choices.DEFAULT_BN_MODE) is the authors' code's; docs/fidelity.md says why.
BN_MODES: tuple[str, ...] = choice_values(BnMode)


def generator_in_bn_mode(generator: Generator, mode: str) -> Generator:
    """A copy of ``generator`` in eval mode whose batch-norm layers use ``mode``'s statistics. For
    "batch" they run in train mode with ``track_running_stats`` off, which makes PyTorch normalise
    with each batch's own statistics and skip updating the running averages (and
    ``num_batches_tracked``). The original and its buffers are never touched."""
    batch = mode == "batch"
    copied = copy.deepcopy(generator).eval()
    for module in copied.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.train(batch)
            module.track_running_stats = not batch
    return copied


@dataclass
class TrainedRun:
    run_dir: Path
    spec: VariantSpec
    config: TrainConfig
    step: int  # training iterations behind these weights (0: untrained)
    generator: Generator  # eval mode (batch-norm layers as ``bn_mode`` says), on ``device``
    device: torch.device
    bn_mode: str = "running"  # load_run gives eval mode; with_bn_mode changes it


    def with_bn_mode(self, mode: str) -> TrainedRun:
        """This run with its generator's batch-norm layers using ``mode``'s statistics
        (:data:`BN_MODES`), on a copy of the generator, so the loaded weights never change."""
        if mode not in BN_MODES:
            raise KpbenchError(f"unknown batch-norm mode {mode!r}; use {', '.join(BN_MODES)}")
        if mode == self.bn_mode:
            return self
        return replace(self, generator=generator_in_bn_mode(self.generator, mode), bn_mode=mode)

    def evaluation_options(self, options: EvalOptions) -> EvalOptions:
        """The options this run is evaluated with: as given (predictions fix some at export)."""
        return options

    def unavailable(self, protocol: Protocol, box_shift: str = "") -> str | None:
        """Why ``protocol`` cannot evaluate this run, or None: a trained network serves every one
        (outputs made elsewhere do not: kpbench.predictions)."""
        return None

    def origin(self) -> dict[str, Any]:
        """Where the evaluated outputs come from, for ``results/provenance.json``: the training."""
        return {"training": {"iterations": self.step, "width": self.config.width,
                             "batch_size": self.config.batch_size, "seed": self.config.seed}}

    @property
    def supports_variable_n(self) -> bool:
        """True when any number of patches works (Siamese sum); False for the cGAN's concatenation."""
        return self.generator.supports_variable_n

    @property
    def n_patches(self) -> int:
        """Patches per image at training time (the only count the cGAN accepts)."""
        return self.config.n_patches

    @property
    def feature_dim(self) -> int:
        return self.generator.feature_dim

    @property
    def can_encode(self) -> bool:
        """Whether :meth:`encode` gives features (a variant's own generator may have no encode)."""
        return self.generator.can_encode

    def _check_patches(self, patches: Tensor) -> None:
        if patches.dim() != 5 or patches.shape[2:] != (3, self.config.size, self.config.size):
            raise KpbenchError(f"patches must be (B, N, 3, {self.config.size}, {self.config.size}), "
                               f"got {tuple(patches.shape)}")
        if not self.supports_variable_n and patches.shape[1] != self.n_patches:
            raise KpbenchError(f"variant {self.spec.name} takes exactly {self.n_patches} patches, "
                               f"got {patches.shape[1]}")

    @torch.no_grad()
    def generate(self, patches: Tensor, z: Tensor | None = None, rng: torch.Generator | None = None,
                 key: str | None = None) -> tuple[Tensor, Tensor | None]:
        """Patches (B, N, 3, S, S) in [-1, 1] -> image (B, 3, S, S), predicted mask (B, 1, S, S)
        or None without a mask decoder; on the patches' device. z (B, z_dim) defaults to U(-1, 1)
        drawn from ``rng`` (a CPU generator; the global one if None). ``key`` (the protocol's
        request tag) is ignored here; stored outputs are found by it (kpbench.predictions)."""
        self._check_patches(patches)
        if z is None:
            z = torch.rand(patches.shape[0], self.spec.z_dim, generator=rng) * 2 - 1
        out = self.generator(patches.to(self.device, torch.float32), z.to(self.device, torch.float32))
        mask = out.mask.to(patches.device) if out.mask is not None else None
        return out.image.to(patches.device), mask

    @torch.no_grad()
    def encode(self, patches: Tensor) -> Tensor:
        """Patches (B, N, 3, S, S) -> features (B, feature_dim): the summed 128-d embedding and
        every summed encoder level, average-pooled (for the cGAN: its concatenating encoder)."""
        self._check_patches(patches)
        return self.generator.encode(patches.to(self.device, torch.float32)).to(patches.device)

    def untrained(self, seed: int = 0) -> TrainedRun:
        """The same architecture with fresh random weights (the classification baseline)."""
        generator = build_untrained_generator(self.spec, self.config, seed).to(self.device).eval()
        return TrainedRun(self.run_dir, self.spec, self.config, 0, generator, self.device).with_bn_mode(
            self.bn_mode)


def build_untrained_generator(spec: VariantSpec, config: TrainConfig, seed: int = 0) -> Generator:
    """A randomly initialised generator of the run's architecture (CPU, train mode)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_networks(spec, config.size, config.width, config.n_patches).generator


def _train_hint(run_dir: Path) -> str:
    match = re.fullmatch(r"(.+?)(-.+)?-seed(\d+)", run_dir.name)
    if match is None:
        return "kpbench train --variant VARIANT --seed K"
    settings = " with the settings its name shows" if match[2] else ""
    return (f"kpbench train --variant {match[1]} --seed {match[3]} --workdir {run_dir.parent.parent}"
            + settings)


@dataclass(frozen=True)
class RunInfo:
    """What a run directory holds, read from its small files (no checkpoint is loaded)."""

    run_dir: Path
    variant: str
    seed: int
    tags: list[tuple[str, str]]  # identity settings that differ from the defaults (kpbench.identity)
    step: int  # last logged iteration (0 before the first log line)
    total_steps: int
    steps_per_epoch: int
    checkpointed: bool
    done: bool  # the log's last session ended with its "done" event
    holder: str | None  # the process training or evaluating it now, if any
    evaluated: dict[str, bool] = field(default_factory=dict)  # protocol -> results newer than weights
    # Outputs made elsewhere and scored from their files (kpbench.predictions): no training, no weights.
    predictions: bool = False

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def finished(self) -> bool:
        return self.checkpointed and self.done and self.step >= self.total_steps

    @property
    def status(self) -> str:
        if self.holder is not None:
            return "running"
        if self.predictions:
            return "predictions"
        if self.finished:
            return "finished"
        return "interrupted" if self.checkpointed else "not started"

    def evaluated_with(self, protocols: list[str]) -> bool:
        """Every protocol in ``protocols`` has results newer than the run's weights."""
        return all(self.evaluated.get(name, False) for name in protocols)


def _log_progress(log: Path) -> tuple[int, bool]:
    """(last logged iteration, whether the last training session logged "done")."""
    if not log.is_file():
        return 0, False
    step, done = 0, False
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        event = entry.get("event")
        if event in ("start", "resume"):
            done = False
        elif event == "done":
            done = True
        if "step" in entry and event not in ("start", "resume"):
            step = int(entry["step"])
    return step, done


def describe_run(run_dir: Path) -> RunInfo | None:
    """A run's identity and progress, or None when ``run_dir`` holds no run (no config.json)."""
    files = RunDir(run_dir)
    config_path = files.config
    if not config_path.is_file():
        return None
    try:
        stored = json.loads(config_path.read_text())
        config = stored["config"]
        variant, seed = str(config["variant"]), int(config["seed"])
    except (ValueError, KeyError, TypeError) as error:
        raise KpbenchError(f"{config_path} is not a kpbench run config ({error})") from None
    checkpoint = files.checkpoint
    weights_time = checkpoint.stat().st_mtime if checkpoint.is_file() else None
    predictions = "predictions" in stored  # kpbench.predictions.PREDICTIONS_KEY
    if predictions:  # results are current when newer than the outputs' import
        weights_time = config_path.stat().st_mtime
    evaluated = {}
    for path in sorted(files.results.glob("*.csv")):
        evaluated[path.stem] = weights_time is not None and path.stat().st_mtime >= weights_time
    step, done = _log_progress(files.log)
    return RunInfo(run_dir, variant, seed, stored_tags(stored), step, int(stored.get("total_steps", 0)),
                   int(stored.get("steps_per_epoch", 0)), checkpoint.is_file(), done,
                   current_holder(run_dir), evaluated, predictions)


def import_run_variants(runs_root: Path) -> list[str]:
    """Register the plug-in variants that runs under ``runs_root`` recorded (spec.json ``source``)
    and that are not registered yet, so that reports and the claim check know them. Returns one
    line for each that cannot be imported (its rows are then shown but not judged)."""
    from kpbench.plugins import PluginSource
    from kpbench.variant import list_variants, registered_variant

    known = {spec.name for spec in list_variants()}
    problems: list[str] = []
    for path in sorted(Path(runs_root).glob("*/spec.json")) if Path(runs_root).is_dir() else []:
        try:
            recorded = json.loads(path.read_text())
            name, source = str(recorded["name"]), recorded.get("source")
        except (ValueError, KeyError, TypeError):
            continue  # the report lists unreadable files itself
        if name in known or not source:
            continue
        try:
            registered_variant(name, PluginSource.from_dict(source))
            known.add(name)
        except KpbenchError as error:
            problems.append(f"{path.parent.name}: {error}")
    return problems


def list_runs(runs_root: Path, problems: list[str] | None = None) -> list[RunInfo]:
    """Every run under ``runs_root`` (whatever its folder is called), by name. With ``problems``,
    a run whose config.json cannot be read is skipped and described there instead of raising."""
    if not runs_root.is_dir():
        return []
    infos = []
    for path in sorted(runs_root.iterdir()):
        if not path.is_dir() or path.name == LOCKS_DIRNAME:
            continue
        try:
            info = describe_run(path)
        except KpbenchError as error:
            if problems is None:
                raise
            problems.append(str(error))
            continue
        if info is not None:
            infos.append(info)
    return infos
def load_run(run_dir: Path | str, device: str | torch.device | None = "cpu") -> TrainedRun:
    """The generator of a trained run, from its last checkpoint, in eval mode on ``device``
    (``None`` / "auto": CUDA when present)."""
    run_dir = Path(run_dir)
    files = RunDir(run_dir)
    from kpbench.predictions import is_prediction_run

    if is_prediction_run(run_dir):
        raise KpbenchError(f"{run_dir} holds predictions made elsewhere, not a trained model")
    for path in (files.spec, files.config, files.checkpoint):
        if not path.exists():
            raise KpbenchError(f"no trained run at {run_dir} ({path.name} is missing); "
                               f"train it first: {_train_hint(run_dir)}")
    spec = VariantSpec.from_dict(json.loads(files.spec.read_text()))
    config = TrainConfig.from_dict(json.loads(files.config.read_text())["config"])
    device = pick_device(device)
    checkpoint = files.read_checkpoint()
    generator = build_untrained_generator(spec, config)
    generator.load_state_dict(checkpoint["models"]["generator"])
    return TrainedRun(run_dir, spec, config, int(checkpoint["step"]), generator.to(device).eval(), device)
