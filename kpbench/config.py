"""What a training run is asked to do: :class:`TrainConfig`, readable without the training code
(kpbench.runs loads runs with it; kpbench.train runs them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from kpbench.choices import Amp, choice_values
from kpbench.dataspec import PATCH_SOURCES, DataSpec, PatchSource
from kpbench.errors import KpbenchError
from kpbench.seeds import check_seed
from kpbench.variant import INITIALISATIONS, Initialisation

AmpMode = Literal["off", "bf16", "fp16", "auto"]
AMP_MODES: tuple[str, ...] = choice_values(Amp)

# Fields that change how a run is executed or how long it is, not what it learns: a rerun may
# change them and still continue the same run. Everything else must match the stored config.
OPERATIONAL_FIELDS = frozenset(
    {"epochs", "steps", "amp", "device", "num_workers", "sample_every", "checkpoint_every",
     "log_every", "status_every", "tensorboard", "diagnostics_every", "workdir", "restart", "progress"}
)

# Where a file lives, not what it holds (dotted config names): the content hash stored beside it
# (``data.boxes_id``) is what a run's identity keeps, so a moved box file still finds its runs.
LOCATION_FIELDS = frozenset({"data.boxes"})


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``train`` needs; defaults are the paper's (batch 64, Adam 2e-4 / (0.5, 0.999),
    1 D + 2 G updates per iteration, flips). ``batch_size`` is global: with torchrun each of the
    W processes takes batch_size / W samples of every batch."""

    variant: str = "full"
    data: DataSpec = field(default_factory=DataSpec)
    seed: int = 0
    width: float = 1.0  # channel multiplier of every network
    batch_size: int = 64
    epochs: int = 25  # training length, unless ``steps`` is set
    steps: int | None = None  # iterations (1 D + 2 G updates each); overrides ``epochs``
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    d_steps: int = 1
    g_steps: int = 2
    # Epochs over which lambda decays; None = the run's length when it is first started.
    lambda_decay_epochs: int | None = None
    patch_source: PatchSource = "key"
    init: Initialisation | None = None  # None = the variant's (kpbench.nets.INITIALISERS)
    flip: bool = True
    amp: AmpMode = "off"
    device: str | None = None  # None / "auto": CUDA when present
    num_workers: int | None = None  # data loader processes; None: 0 on the CPU, 2 on CUDA
    sample_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 10
    status_every: int = 50  # plain status lines when the output is not a terminal
    tensorboard: bool = False  # also write TensorBoard event files (needs the tensorboard package)
    diagnostics_every: int | None = None  # None: four times per epoch (kpbench.diagnostics)
    workdir: Path | str | None = None  # None: KPBENCH_WORKDIR or the current directory
    restart: bool = False  # discard an existing run with this identity
    progress: bool = True

    def __post_init__(self) -> None:
        check_seed(self.seed)
        checks = [
            (self.width > 0, f"width must be positive, got {self.width}"),
            (self.num_workers is None or self.num_workers >= 0,
             f"num_workers must be at least 0, got {self.num_workers}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.steps is None or self.steps >= 1, f"steps must be at least 1, got {self.steps}"),
            (self.d_steps >= 0 and self.g_steps >= 1, "need d_steps >= 0 and g_steps >= 1"),
            (self.amp in AMP_MODES, f"unknown amp mode {self.amp!r}; use {', '.join(AMP_MODES)}"),
            (self.patch_source in PATCH_SOURCES,
             f"unknown patch source {self.patch_source!r}; use key or random"),
            (min(self.sample_every, self.checkpoint_every, self.log_every, self.status_every) >= 1,
             "sample_every, checkpoint_every, log_every and status_every must be at least 1"),
            (self.diagnostics_every is None or self.diagnostics_every >= 1,
             "diagnostics_every must be at least 1"),
            (self.lambda_decay_epochs is None or self.lambda_decay_epochs >= 1,
             "lambda_decay_epochs must be at least 1"),
            (self.init is None or self.init in INITIALISATIONS,
             f"unknown initialisation {self.init!r}; use {', '.join(INITIALISATIONS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise KpbenchError(message)

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def n_patches(self) -> int:
        return self.data.n_patches

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["betas"] = list(self.betas)
        values["workdir"] = None if self.workdir is None else str(self.workdir)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        values["data"] = DataSpec(**values.get("data", {}))
        values["betas"] = tuple(values.get("betas", (0.5, 0.999)))
        return cls(**values)
