"""Trained runs for evaluation: load a run directory's generator and use it, in eval mode.

    run = load_run(workdir.run_dir("full", 0))
    image, mask = run.generate(patches)          # (B,N,3,S,S) -> (B,3,S,S), (B,1,S,S) or None
    features = run.encode(patches)               # (B, run.feature_dim)
    baseline = run.untrained(seed=0)             # same architecture, random weights
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from kpbench.errors import KpbenchError
from kpbench.nets import PatchGenerator, build_networks
from kpbench.runtime import pick_device
from kpbench.train import CHECKPOINT_FILE, CONFIG_FILE, SPEC_FILE, TrainConfig, read_checkpoint
from kpbench.variant import VariantSpec


@dataclass
class TrainedRun:
    run_dir: Path
    spec: VariantSpec
    config: TrainConfig
    step: int  # training iterations behind these weights (0: untrained)
    generator: PatchGenerator  # eval mode, on ``device``
    device: torch.device

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

    def _check_patches(self, patches: Tensor) -> None:
        if patches.dim() != 5 or patches.shape[2:] != (3, self.config.size, self.config.size):
            raise KpbenchError(f"patches must be (B, N, 3, {self.config.size}, {self.config.size}), "
                               f"got {tuple(patches.shape)}")
        if not self.supports_variable_n and patches.shape[1] != self.n_patches:
            raise KpbenchError(f"variant {self.spec.name} concatenates exactly {self.n_patches} patches, "
                               f"got {patches.shape[1]}")

    @torch.no_grad()
    def generate(self, patches: Tensor, z: Tensor | None = None,
                 rng: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """Patches (B, N, 3, S, S) in [-1, 1] -> image (B, 3, S, S), predicted mask (B, 1, S, S)
        or None without a mask decoder; on the patches' device. z (B, z_dim) defaults to U(-1, 1)
        drawn from ``rng`` (a CPU generator; the global one if None)."""
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
        return TrainedRun(self.run_dir, self.spec, self.config, 0, generator, self.device)


def build_untrained_generator(spec: VariantSpec, config: TrainConfig, seed: int = 0) -> PatchGenerator:
    """A randomly initialised generator of the run's architecture (CPU, train mode)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_networks(spec, config.size, config.width, config.n_patches).generator


def _train_hint(run_dir: Path) -> str:
    match = re.fullmatch(r"(.+)-seed(\d+)", run_dir.name)
    if match is None:
        return "kpbench train --variant VARIANT --seed K"
    return f"kpbench train --variant {match[1]} --seed {match[2]} --workdir {run_dir.parent.parent}"


def load_run(run_dir: Path | str, device: str | torch.device | None = "cpu") -> TrainedRun:
    """The generator of a trained run, from its last checkpoint, in eval mode on ``device``
    (``None`` / "auto": CUDA when present)."""
    run_dir = Path(run_dir)
    checkpoint_path = run_dir / CHECKPOINT_FILE
    for path in (run_dir / SPEC_FILE, run_dir / CONFIG_FILE, checkpoint_path):
        if not path.exists():
            raise KpbenchError(f"no trained run at {run_dir} ({path.name} is missing); "
                               f"train it first: {_train_hint(run_dir)}")
    spec = VariantSpec.from_dict(json.loads((run_dir / SPEC_FILE).read_text()))
    config = TrainConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text())["config"])
    device = device if isinstance(device, torch.device) else pick_device(device)
    checkpoint = read_checkpoint(checkpoint_path)
    generator = build_untrained_generator(spec, config)
    generator.load_state_dict(checkpoint["models"]["generator"])
    return TrainedRun(run_dir, spec, config, int(checkpoint["step"]), generator.to(device).eval(), device)
