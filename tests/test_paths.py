"""The run directory's layout has one owner: kpbench.paths.RunDir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kpbench.errors import KpbenchError
from kpbench.paths import RunDir, WorkDir

REPO = Path(__file__).resolve().parents[1]


def test_run_dir_names_every_file(tmp_path: Path) -> None:
    run = RunDir(WorkDir.resolve(tmp_path).run_dir("full", 0))
    root = tmp_path.resolve() / "runs" / "full-seed0"
    assert run.name == "full-seed0"
    assert (run.spec, run.config, run.log) == (root / "spec.json", root / "config.json", root / "log.jsonl")
    assert run.checkpoint == root / "checkpoints" / "last.pt"
    assert (run.samples, run.tensorboard) == (root / "samples", root / "tensorboard")
    assert run.results_csv("fid") == root / "results" / "fid.csv"
    assert run.grids("patches") == root / "results" / "patches"
    assert run.provenance == root / "results" / "provenance.json"


def test_checkpoint_is_read_weights_only(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.checkpoint.parent.mkdir()
    torch.save({"step": torch.tensor(3)}, run.checkpoint)
    assert int(run.read_checkpoint()["step"]) == 3
    run.checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(KpbenchError, match="cannot read checkpoint"):
        run.read_checkpoint()


def test_loading_runs_does_not_import_training() -> None:
    script = "import sys, kpbench.runs; print('kpbench.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert out.strip() == "False"
