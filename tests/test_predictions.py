"""Predictions made elsewhere: export the inputs, let a program answer them, score the answers.

The nearest-neighbour floor, written as files by a small script, must come back as exactly the
built-in floor's rows; bad outputs give one-line errors or counted warnings.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_checks import assert_one_line_error  # tests/cli_checks.py
from PIL import Image
from typer.testing import CliRunner

from kpbench.baselines import NEAREST_NEIGHBOUR, NearestNeighbour
from kpbench.cli import app
from kpbench.dataspec import DataSpec
from kpbench.errors import KpbenchError
from kpbench.identity import distinguishing_tags
from kpbench.paths import WorkDir
from kpbench.predictions import ExportedInputs, import_predictions
from kpbench.protocol import EvalOptions, evaluate
from kpbench.results import read_rows, read_samples
from kpbench.runs import list_runs
from kpbench.runtime import derive_seed
from kpbench.samples import make_sample_dataset

DATA = "builtin:48"
EXPORT_ARGS = ("--max-samples", "8", "--batch-size", "4", "--sigmas", "0", "--sigmas", "0.5",
               "--max-patches", "4", "--fid-samples", "5")
SCORING = EvalOptions().with_settings(extractor="random-conv", fid_reference_samples=16)
RECONSTRUCTION = ("mask_iou", "appearance_l1", "psnr", "ssim")
runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[WorkDir, Path]:
    """Every outputs-only protocol's inputs for the built-in data, with exact float patches."""
    work = WorkDir.resolve(tmp_path_factory.mktemp("predictions"))
    folder = work.root / "inputs"
    result = invoke("export", DATA, "-o", folder, "-w", work.root, "--arrays", *EXPORT_ARGS)
    assert result.exit_code == 0, result.output
    assert "classification" in result.stderr and "not available for predictions" in result.stderr
    return work, folder


def write_nearest_neighbour(folder: Path, outputs: Path, work: WorkDir) -> None:
    """The foreign program: the nearest-neighbour floor (kpbench.baselines) of every request, from
    the exported exact patches, written as PNG image and mask files."""
    manifest = json.loads((folder / "manifest.json").read_text())
    spec = DataSpec(**manifest["data"])
    train = make_sample_dataset(spec, "train", derive_seed(manifest["seed"], "eval"), work,
                                patch_source="key", flip=False)
    neighbour = NearestNeighbour.fit(train)
    with (folder / "requests.csv").open() as handle:
        requests = list(csv.DictReader(handle))
    batches: dict[tuple[str, str], list[str]] = {}  # the protocols' own batches: same cdist shapes
    for request in requests:
        batches.setdefault((request["tag"], request["call"]), []).append(request["id"])
    outputs.mkdir(exist_ok=True)
    for ids in batches.values():
        patches = torch.stack([torch.from_numpy(np.load(folder / "inputs" / f"{i}.npy")) for i in ids])
        n = spec.n_patches  # other N (num_patches): repeat or cut to the fitted N, any answer will do
        patches = patches.repeat(1, n, 1, 1, 1)[:, :n] if patches.shape[1] < n else patches[:, :n]
        images, masks = neighbour.by_patches(patches)
        pixels = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for identity, image, mask in zip(ids, pixels, masks):
            Image.fromarray(image).save(outputs / f"{identity}.png")
            Image.fromarray((mask[0].numpy() * 255).astype(np.uint8)).save(outputs / f"{identity}.mask.png")


def test_nearest_neighbour_outputs_reproduce_the_built_in_floor(exported: tuple[WorkDir, Path]) -> None:
    work, folder = exported
    write_nearest_neighbour(folder, folder / "outputs", work)
    run_dir, _, check = import_predictions(work, folder, "nn_files")
    assert check.images == check.masks == len(ExportedInputs.read(folder).requests)
    with pytest.warns(UserWarning, match="classification: needs a network's internals"):
        evaluate(work, ["all"], options=SCORING, names=[run_dir.name])
    rows = read_rows(work.runs)
    assert set(rows["protocol"]) == {"patches", "noise", "num_patches", "combination", "fid"}
    patches = rows[rows["protocol"] == "patches"].set_index(["variant", "condition", "metric"])
    for condition in ("key", "random"):
        for metric in RECONSTRUCTION:
            ours, floor = patches.loc[("nn_files", condition, metric)], patches.loc[
                (NEAREST_NEIGHBOUR, condition, metric)]
            assert ours["value"] == floor["value"] and ours["n"] == floor["n"] > 0, (condition, metric)
    samples = read_samples(work.runs)
    samples = samples[(samples["protocol"] == "patches") & samples["metric"].isin(RECONSTRUCTION)]
    key = ["condition", "metric", "sample", "repeat"]
    ours = samples[samples["variant"] == "nn_files"].set_index(key)["value"].sort_index()
    floor = samples[samples["variant"] == NEAREST_NEIGHBOUR].set_index(key)["value"].sort_index()
    pd.testing.assert_series_equal(ours, floor, check_names=False)
    # A predictions run is listed as such, and a later `eval` scores it again from its files.
    # Its provenance names the files scored, not a training it never had.
    provenance = json.loads((run_dir / "results" / "provenance.json").read_text())
    assert "training" not in provenance
    assert provenance["predictions"]["outputs"] == str(folder / "outputs")
    assert provenance["predictions"]["requests"] == check.images
    (info,) = [i for i in list_runs(work.runs) if i.name == run_dir.name]
    assert info.predictions and info.status == "predictions" and all(info.evaluated.values())
    with pytest.warns(UserWarning, match="classification.*not available for predictions"):
        evaluate(work, ["patches", "classification"], options=SCORING, names=[run_dir.name])
    assert read_rows(work.runs).equals(rows)


def test_the_documented_example_program_scores_and_reports(exported: tuple[WorkDir, Path],
                                                           tmp_path: Path) -> None:
    work, folder = exported
    doc = (Path(__file__).resolve().parents[1] / "docs" / "predictions.md").read_text()
    script = tmp_path / "mean_colour.py"
    script.write_text(re.search(r"```python\n(.*?)```", doc, re.S)[1])  # type: ignore[index]
    outputs = tmp_path / "mean-colour"
    subprocess.run([sys.executable, str(script), str(folder), str(outputs)], check=True)
    result = invoke("eval", "--predictions", folder, "--outputs", outputs, "--name", "mean_colour",
                    "-p", "patches", "-p", "fid", "-w", work.root, "--extractor", "random-conv",
                    "--fid-reference-samples", "16", "--max-samples", "3", "--set", "noise.sigmas=0.1",
                    "--batch-size", "4")
    assert result.exit_code == 0, result.output
    # The settings that decide the inputs, from the fields marked as such, as exported.
    assert "inputs as exported (max_samples 8, batch_size 4" in result.stdout
    assert "noise.sigmas 0,0.5" in result.stdout
    # Those given that the export replaces are said, once (batch_size 4 is as exported).
    (replaced,) = [line for line in result.stderr.splitlines() if "replace those given" in line]
    assert replaced.startswith("warning:")
    assert replaced.endswith("max_samples 3 -> 8, noise.sigmas 0.1 -> 0,0.5")
    rows = read_rows(work.runs)
    ours = rows[rows["variant"] == "mean_colour"]
    assert {"patches", "fid"} <= set(ours["protocol"]) and ours["value"].notna().any()
    assert "mask_iou" not in set(ours["metric"])  # no mask files: scored as a model without masks
    report = invoke("report", "-w", work.root, "--name", "mine")
    assert report.exit_code == 0, report.output
    assert "mean_colour" in (work.reports / "mine" / "index.html").read_text()
    # The claim check compares a method from elsewhere with the reference model, as an ablation.
    from kpbench.claims import realism_sentence

    assert realism_sentence("mean_colour") in (work.reports / "mine" / "results.md").read_text()


def broken_copy(folder: Path, tmp_path: Path) -> Path:
    outputs = tmp_path / "outputs"
    shutil.copytree(folder / "outputs", outputs)
    return outputs


def test_every_kind_of_bad_output_is_counted_in_one_line_error(exported: tuple[WorkDir, Path],
                                                                 tmp_path: Path) -> None:
    work, folder = exported
    if not any((folder / "outputs").iterdir()):
        write_nearest_neighbour(folder, folder / "outputs", work)
    outputs = broken_copy(folder, tmp_path)
    total = len(ExportedInputs.read(folder).requests)
    images = sorted(p for p in outputs.glob("patches-key-0.0.*.png") if ".mask" not in p.name)
    first, second, third = images[:3]
    first.unlink()
    first.with_name(first.stem + ".mask.png").unlink()
    second.with_name(second.stem + ".mask.png").unlink()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(third)
    arguments = ("eval", "--predictions", folder, "--outputs", outputs, "--name", "broken", "-p", "all",
                 "-w", work.root)
    # One run names every kind of problem (each counted, its first named), not one kind per run.
    assert_one_line_error(invoke(*arguments), f"({total} ids): 1 missing (first: {first.name})",
                          "; 1 unusable (first: ", "is 3x32x32, expected 3x64x64",
                          f"; 1 of {total - 1} found without the mask", second.stem + ".mask.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(first)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(third)
    only_masks = invoke(*arguments)
    assert_one_line_error(only_masks, f"({total} ids): 2 of {total} found without the mask")
    assert "missing" not in only_masks.stderr and "unusable" not in only_masks.stderr
    assert not (work.runs / "broken-builtin48-seed0").exists()


def test_values_outside_the_range_are_clipped_with_a_counted_warning(exported: tuple[WorkDir, Path],
                                                                     tmp_path: Path) -> None:
    work, folder = exported
    if not any((folder / "outputs").iterdir()):
        write_nearest_neighbour(folder, folder / "outputs", work)
    outputs = broken_copy(folder, tmp_path)
    for path in sorted(p for p in outputs.glob("noise-0.0.*.png") if ".mask" not in p.name)[:2]:
        path.unlink()
        np.save(path.with_suffix(".npy"), np.full((3, 64, 64), 1.5, np.float32))  # a float image
    (outputs / "notes.png").write_bytes(b"")
    with pytest.warns(UserWarning) as caught:
        run_dir, _, check = import_predictions(work, folder, "clipped", outputs)
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("2 of ") and "outside [-1, 1]" in m and "clipped" in m
               for m in messages), messages
    assert any("1 files in" in m and "match no request id" in m for m in messages), messages
    assert len(check.clipped) == 2 and run_dir.is_dir()


def test_names_that_would_read_as_variants_or_baselines_are_refused(exported: tuple[WorkDir, Path]) -> None:
    work, folder = exported
    for name in ("full", "full-mine", "baseline_x", "my method"):
        with pytest.raises(KpbenchError, match="--name"):
            import_predictions(work, folder, name)


def test_a_predictions_run_leaves_the_trained_runs_labels_alone() -> None:
    runs = {"full-w0.125-seed0": [("width", "w0.125")], "nomask-w0.125-seed0": [("width", "w0.125")],
            "mine-seed0": []}
    tags = distinguishing_tags(runs, untrained={"mine-seed0"})
    assert tags == {name: [] for name in runs}
    assert distinguishing_tags(runs)["full-w0.125-seed0"] == [("width", "w0.125")]  # had it been trained
