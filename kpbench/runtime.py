"""Seeds and devices: the one place that decides randomness and where tensors live."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from kpbench.errors import KpbenchError


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) from one integer in kpbench.seeds' range."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from parts such as (run seed, epoch, index); independent of
    PYTHONHASHSEED, so flips and data order repeat across processes and resumes."""
    from kpbench.io import stable_hash

    return int(stable_hash(list(parts), length=15), 16)


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" -> CUDA when present, else CPU. An explicit unavailable device is an error;
    a ``torch.device`` is taken as it is."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise KpbenchError(f"unknown device {name!r}: use auto, cpu or cuda[:index]") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KpbenchError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 is a fast path on ``device``: an NVIDIA GPU of compute capability 8 or later
    (bf16 tensor cores; ``torch.cuda.is_bf16_supported()`` is also true on older GPUs, which only
    emulate it), a ROCm GPU with bf16, or a CPU with AMX tiles (oneDNN's bf16 matrix units: 2.0x
    float32's speed at width 1, 1.5x at width 0.25, README "Precision"). Other CPUs and devices
    count as no: bf16 there was not measured to pay."""
    if device.type == "cuda":
        if torch.version.hip is not None:
            return bool(torch.cuda.is_bf16_supported())
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch >= 2.3
        return bool(amx()) if amx is not None else False
    return False


def resolve_amp(mode: str, device: torch.device) -> str:
    """The precision a run trains in: ``mode`` itself, except "auto" -> "bf16" where bf16 is native
    (:func:`native_bf16`), else "off". On an AMX CPU, bf16 autocast left held-out mask IoU within
    0.004 of float32 at every seed measured (README, "Precision": the demo's run and CelebA)."""
    if mode != "auto":
        return mode
    return "bf16" if native_bf16(device) else "off"


# Packages whose versions provenance records and reports show.
PACKAGES: tuple[str, ...] = (
    "kpbench", "torch", "torchvision", "torch-fidelity", "numpy", "pandas", "scikit-learn",
    "scikit-image", "opencv-contrib-python-headless", "pillow",
)


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package, None for one that is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def cpu_count() -> int:
    """Cores this process may use (respects affinity / container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1
