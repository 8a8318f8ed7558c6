"""Protocols end to end on tiny trained runs: well-formed rows, replacement, clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from kpbench.errors import KpbenchError
from kpbench.paths import WorkDir
from kpbench.protocol import EvalOptions, evaluate, get_protocol, list_protocols
from kpbench.results import COLUMNS, read_rows
from kpbench.samples import DataSpec
from kpbench.train import TrainConfig, train

DATA = DataSpec(source="builtin:48", size=64)
OPTIONS = EvalOptions(max_samples=8, batch_size=4, sigmas=(0.0, 0.5), max_patches=4,
                      fid_samples=5, extractor="random-conv", classify_samples=48, folds=3)
EXPECTED_PROTOCOLS = {"patches", "noise", "classification", "fid", "num_patches", "combination"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> WorkDir:
    """Two tiny trained runs: the full model and the cGAN (which takes a fixed N)."""
    work = WorkDir.resolve(tmp_path_factory.mktemp("protocols"))
    for variant in ("full", "cgan"):
        train(TrainConfig(variant=variant, data=DATA, width=0.0625, batch_size=4, steps=2,
                          num_workers=0, workdir=str(work.root), progress=False))
    return work


def test_registry_has_every_protocol_and_rejects_unknown_names() -> None:
    assert {protocol.name for protocol in list_protocols()} == EXPECTED_PROTOCOLS
    assert all(protocol.description for protocol in list_protocols())
    with pytest.raises(KpbenchError, match="unknown protocol 'nois'.*noise"):
        get_protocol("nois")


def test_every_protocol_writes_well_formed_rows(workdir: WorkDir) -> None:
    written = evaluate(workdir, ["all"], options=OPTIONS)
    assert len(written) == 2 and all(len(files) == len(EXPECTED_PROTOCOLS) for files in written.values())
    rows = read_rows(workdir.runs)
    assert list(rows.columns) == list(COLUMNS)
    assert set(rows["protocol"]) == EXPECTED_PROTOCOLS
    assert set(rows["variant"]) == {"full", "cgan"}
    # Every value is a finite number with its sample count, or NaN explained by a note.
    for row in rows.itertuples():
        if math.isnan(row.value):
            assert row.note, row
        else:
            assert math.isfinite(row.value) and row.n > 0, row
    full = rows[rows.variant == "full"]
    noise = full[(full.protocol == "noise") & (full.metric == "mask_iou")]
    assert set(noise.condition) == {"all sigma=0", "all sigma=0.5", "one sigma=0", "one sigma=0.5"}
    assert noise["n"].eq(5).all()  # the whole test split (5 of 48), under max_samples
    iou = full[full.metric == "mask_iou"]["value"]
    assert iou.between(0, 1).all()
    fid = full[full.protocol == "fid"].set_index("metric")
    assert fid.loc["fid", "extractor"] == "random-conv" and fid.loc["fid", "value"] >= 0
    assert "FID biased" in fid.loc["fid", "note"]
    accuracy = full[(full.protocol == "classification") & (full.metric == "accuracy")]
    assert set(accuracy.condition) == {"encoder:trained", "encoder:random_init", "raw_pixels"}
    assert accuracy["value"].between(0, 1).all()
    # The cGAN concatenates exactly N = 3 patches: other N are explained, not computed.
    cgan = rows[(rows.variant == "cgan") & (rows.protocol == "num_patches")]
    other_n = cgan[cgan.condition != "N=3"]
    assert other_n["value"].isna().all() and other_n["note"].str.contains("exactly N=3").all()
    assert cgan[cgan.condition == "N=3"]["value"].notna().all()
    assert "mask_iou" not in set(cgan.metric)  # no mask decoder, no mask metric
    # Image grids and provenance for the report.
    assert (workdir.run_dir("full", 0) / "results" / "patches" / "key.png").is_file()
    provenance = json.loads((workdir.run_dir("full", 0) / "results" / "provenance.json").read_text())
    assert provenance["data"]["manifest_hash"] and provenance["data"]["image_side"] == 64
    assert provenance["fid_extractor"]["name"] == "random-conv"
    assert len(provenance["fid_extractor"]["weights_sha256"]) == 64
    assert provenance["device"] == "cpu" and provenance["training"]["iterations"] == 2


def test_rerun_replaces_rows_and_is_deterministic(workdir: WorkDir) -> None:
    evaluate(workdir, ["noise"], variants=["full"], options=OPTIONS)
    first = read_rows(workdir.runs)
    evaluate(workdir, ["noise"], variants=["full"], options=OPTIONS)
    second = read_rows(workdir.runs)
    assert len(first) == len(second)
    pd.testing.assert_frame_equal(first, second)


def test_missing_inception_weights_leave_an_explained_gap(workdir: WorkDir) -> None:
    options = EvalOptions(max_samples=4, fid_samples=4, extractor="inception")
    evaluate(workdir, ["fid"], variants=["full"], options=options)
    fid = read_rows(workdir.runs).query("variant == 'full' and protocol == 'fid'")
    assert fid["value"].isna().all()
    assert fid["note"].str.contains("--inception-weights").all()


def test_unknown_variant_and_missing_runs_are_clear_errors(workdir: WorkDir, tmp_path: Path) -> None:
    with pytest.raises(KpbenchError, match="unknown variant 'ful'"):
        evaluate(workdir, ["noise"], variants=["ful"], options=OPTIONS)
    with pytest.raises(KpbenchError, match="no trained runs for variants \\['nomask'\\]"):
        evaluate(workdir, ["noise"], variants=["nomask"], options=OPTIONS)
    with pytest.raises(KpbenchError, match="no runs under"):
        evaluate(WorkDir.resolve(tmp_path), ["noise"], options=OPTIONS)


def test_dataset_is_opened_once_per_evaluation(workdir: WorkDir, monkeypatch: pytest.MonkeyPatch) -> None:
    import kpbench.samples

    calls: list[DataSpec] = []
    original = kpbench.samples.open_data

    def counting_open_data(spec: DataSpec):
        calls.append(spec)
        return original(spec)

    monkeypatch.setattr(kpbench.samples, "open_data", counting_open_data)
    evaluate(workdir, ["patches", "num_patches"], options=OPTIONS)  # 2 runs, several N and sources
    assert len(calls) == 1
