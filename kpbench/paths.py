"""Where kpbench keeps things: the single place that knows the on-disk layout.

    <work>/runs/<name>/              one training run (spec, log, samples, checkpoints, results);
                                     <name> = variant, non-default settings, seed (kpbench.identity)
    <work>/cache/                    detected boxes, reference statistics for FID/KID
    <work>/reports/<name>/           rendered reports

The work dir is the current directory unless ``--workdir`` or ``KPBENCH_WORKDIR`` says otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
        (``kpbench.train.run_dir_for`` names runs with other settings)."""
        return self.runs / f"{variant}-seed{seed}"

    def report_dir(self, name: str) -> Path:
        return self.reports / name
