"""Where kpbench keeps things: the single place that knows the on-disk layout.

    <work>/runs/<name>/              one training run (RunDir: spec, config, log, samples,
                                     checkpoints, results); <name> = variant, non-default
                                     settings, seed (kpbench.identity)
    <work>/cache/                    detected boxes, reference statistics for FID/KID
    <work>/reports/<name>/           rendered reports

The work dir is the current directory unless ``--workdir`` or ``KPBENCH_WORKDIR`` says otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpbench.errors import KpbenchError

WORKDIR_ENV = "KPBENCH_WORKDIR"


@dataclass(frozen=True)
class WorkDir:
    root: Path

    @classmethod
    def resolve(cls, root: Path | str | None = None) -> WorkDir:
        chosen = root if root is not None else os.environ.get(WORKDIR_ENV, ".")
        return cls(Path(chosen).expanduser().resolve())

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def run_dir(self, variant: str, seed: int) -> Path:
        """The run of ``variant`` and ``seed`` with every other setting at its default
        (``kpbench.resume.run_dir_for`` names runs with other settings)."""
        return self.runs / f"{variant}-seed{seed}"

    def report_dir(self, name: str) -> Path:
        return self.reports / name


@dataclass(frozen=True)
class RunDir:
    """The files of one training run::

        spec.json                  the resolved VariantSpec
        config.json                the resolved TrainConfig, data manifest hash, world size, run length
        log.jsonl                  one JSON line per logged step, plus events
        checkpoints/last.pt        models, optimizers, step, RNG states (loaded weights-only)
        samples/                   sample grids written during training
        tensorboard/               optional TensorBoard event files
        results/<protocol>.csv     result rows of one protocol (kpbench.results)
        results/<protocol>/        image grids a protocol writes
        results/provenance.json    what the results came from
    """

    path: Path

    SPEC_FILE = "spec.json"
    CONFIG_FILE = "config.json"
    LOG_FILE = "log.jsonl"
    CHECKPOINT_FILE = "checkpoints/last.pt"
    SAMPLES_DIR = "samples"
    TENSORBOARD_DIR = "tensorboard"
    RESULTS_DIR = "results"
    SAMPLES_SUFFIX = ".samples.csv.gz"
    PROVENANCE_FILE = "provenance.json"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def spec(self) -> Path:
        return self.path / self.SPEC_FILE

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG_FILE

    @property
    def log(self) -> Path:
        return self.path / self.LOG_FILE

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT_FILE

    @property
    def samples(self) -> Path:
        return self.path / self.SAMPLES_DIR

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD_DIR

    @property
    def results(self) -> Path:
        return self.path / self.RESULTS_DIR

    @property
    def provenance(self) -> Path:
        return self.results / self.PROVENANCE_FILE

    def results_csv(self, protocol: str) -> Path:
        """The rows of ``protocol`` for this run."""
        return self.results / f"{protocol}.csv"

    def results_samples(self, protocol: str) -> Path:
        """The per-sample values behind the rows of ``protocol`` (:func:`kpbench.results.read_samples`)."""
        return self.results / f"{protocol}{self.SAMPLES_SUFFIX}"

    def grids(self, protocol: str) -> Path:
        """The folder of the image grids ``protocol`` writes for this run."""
        return self.results / protocol

    def read_checkpoint(self) -> dict[str, Any]:
        """The last checkpoint as plain tensors and containers (``weights_only``: no code is
        unpickled), on the CPU."""
        import torch  # lazily: the layout itself needs no torch

        try:
            checkpoint: dict[str, Any] = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated or foreign file: name it rather than guess
            raise KpbenchError(f"cannot read checkpoint {self.checkpoint}: {error}") from error
        return checkpoint
