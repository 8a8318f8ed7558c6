"""Protocols end to end on tiny trained runs: well-formed rows, replacement, clear errors."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kpbench.choices import DEFAULT_BN_MODE
from kpbench.dataspec import DataSpec
from kpbench.errors import KpbenchError
from kpbench.paths import WorkDir
from kpbench.protocol import (
    EvalOptions,
    evaluate,
    find_runs,
    get_protocol,
    list_protocols,
    reported_protocols,
)
from kpbench.protocols.classification import select_balanced, shortfall
from kpbench.results import COLUMNS, SAMPLE_COLUMNS, read_rows, read_samples
from kpbench.train import TrainConfig, train

DATA = DataSpec(source="builtin:48", size=64)
OPTIONS = EvalOptions(max_samples=8, batch_size=4).with_settings(
    sigmas=(0.0, 0.5), max_patches=4, fid_samples=5, extractor="random-conv", classify_samples=48, folds=3)
# Every file in protocols/ registers the protocol it is named after; none is listed by hand.
PROTOCOL_FILES = {path.stem for path in (Path(__file__).resolve().parents[1] / "protocols").glob("*.py")
                  if not path.name.startswith("_")}
ROW_SOURCES = {"user_study"}  # registered by its file; rows from `kpbench study analyze`, not eval
EXPECTED_PROTOCOLS = PROTOCOL_FILES - ROW_SOURCES


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
    assert {protocol.name for protocol in reported_protocols()} == PROTOCOL_FILES
    assert all(protocol.description for protocol in list_protocols())
    with pytest.raises(KpbenchError, match="unknown protocol 'nois'.*noise"):
        get_protocol("nois")


def test_every_protocol_writes_well_formed_rows(workdir: WorkDir) -> None:
    written = evaluate(workdir, ["all"], options=OPTIONS).written
    assert len(written) == 2 and all(len(files) == len(EXPECTED_PROTOCOLS) for files in written.values())
    rows = read_rows(workdir.runs)
    assert list(rows.columns) == [*COLUMNS, "run"]
    assert set(rows["run"]) == {path.name for path in written}
    assert set(rows["protocol"]) == EXPECTED_PROTOCOLS
    assert set(rows["variant"]) == {"full", "cgan", "baseline:prior_mask", "baseline:nearest_neighbour",
                                    "baseline:real"}
    # Every value is a finite number with its sample count, or NaN explained by a note.
    for row in rows.itertuples():
        if math.isnan(row.value):
            assert row.note, row
        else:
            assert math.isfinite(row.value) and row.n > 0, row
    full = rows[rows.variant == "full"]
    noise = full[(full.protocol == "noise") & (full.metric == "mask_iou")]
    assert set(noise.condition) == {"swapped", "all sigma=0", "all sigma=0.5", "one sigma=0", "one sigma=0.5"}
    # Per-sample metrics carry a bootstrap interval around their mean.
    per_sample = full[full.protocol.isin(["patches", "noise"])]
    assert (per_sample.ci_low <= per_sample.value + 1e-12).all()
    assert (per_sample.ci_high >= per_sample.value - 1e-12).all()
    # Floors next to the runs: the prior mask (mask IoU only), the nearest neighbour (every metric).
    patches = rows[rows.protocol == "patches"]
    prior = patches[patches.variant == "baseline:prior_mask"]
    assert set(prior.metric) == {"mask_iou"} and set(prior.condition) == {"key", "random"}
    neighbour = patches[patches.variant == "baseline:nearest_neighbour"]
    assert set(neighbour.metric) == {"mask_iou", "appearance_l1", "psnr", "ssim"}
    dependence = full[(full.protocol == "patches") & (full.condition == "key")].set_index("metric")
    assert dependence.loc["image_dependence", "value"] >= 0
    assert dependence.loc["mask_dependence", "value"] >= 0
    cgan_metrics = set(rows[(rows.variant == "cgan") & (rows.protocol == "patches")].metric)
    assert "image_dependence" in cgan_metrics and "mask_dependence" not in cgan_metrics
    # Order dependence: none for the Siamese sum (by construction), some for the concatenation.
    assert dependence.loc["image_order_dependence", "value"] < 1e-4
    assert dependence.loc["mask_order_dependence", "value"] < 1e-4
    cgan_key = rows[(rows.variant == "cgan") & (rows.protocol == "patches") & (rows.condition == "key")]
    assert cgan_key.set_index("metric").loc["image_order_dependence", "value"] > 1e-3
    assert noise["n"].eq(5).all()  # the whole test split (5 of 48), under max_samples
    iou = full[full.metric == "mask_iou"]["value"]
    assert iou.between(0, 1).all()
    fid = full[full.protocol == "fid"].set_index("metric")
    assert fid.loc["fid", "extractor"] == "random-conv" and fid.loc["fid", "value"] >= 0
    assert "FID biased" in fid.loc["fid", "note"]
    assert fid.loc["precision", "value"] >= 0 and fid.loc["recall", "value"] <= 1
    assert fid.loc["kid", "ci_low"] < fid.loc["kid", "value"] < fid.loc["kid", "ci_high"]
    # The real-vs-real floor: the same metrics, N and extractor, real held-out images.
    real = rows[(rows.variant == "baseline:real") & (rows.run == full.run.iloc[0])].set_index("metric")
    assert set(real.index) == set(fid.index) == {"fid", "kid", "kid_std", "precision", "recall"}
    assert (real["n"] == fid.loc["fid", "n"]).all() and (real["extractor"] == "random-conv").all()
    assert set(real["condition"]) == {"key patches"}
    assert "N=5 (5 test patch sets x 1 z); reference 43 training images" in fid.loc["fid", "note"]
    accuracy = full[(full.protocol == "classification") & (full.metric == "accuracy")]
    assert set(accuracy.condition) == {"encoder:trained", "encoder:random_init", "raw_pixels"}
    assert accuracy["value"].between(0, 1).all()
    assert accuracy["ci_low"].le(accuracy["value"]).all() and accuracy["ci_high"].ge(accuracy["value"]).all()
    # builtin:48 has 4 classes of 9 to 14 images: all kept, 9 each (the smallest class).
    assert accuracy["n"].eq(36).all()
    assert accuracy["note"].eq("4 classes x 9 samples (min 5 per class), 3-fold stratified CV, "
                               "chance 0.25").all()
    spread = full[(full.protocol == "classification") & (full.metric == "accuracy_std")]
    assert set(spread.condition) == set(accuracy.condition) and spread["value"].ge(0).all()
    # The cGAN concatenates exactly N = 3 patches: other N are explained, not computed.
    cgan = rows[(rows.variant == "cgan") & (rows.protocol == "num_patches")]
    other_n = cgan[cgan.condition != "N=3"]
    assert other_n["value"].isna().all() and other_n["note"].str.contains("exactly N=3").all()
    assert cgan[cgan.condition == "N=3"]["value"].notna().all()
    assert "mask_iou" not in set(cgan.metric)  # no mask decoder, no mask metric
    # Image grids and provenance for the report.
    full_run = find_runs(workdir, ["full"], [0])[0]
    assert (full_run / "results" / "patches" / "key.png").is_file()
    assert (full_run / "results" / "patches" / "memorisation.png").is_file()
    provenance = json.loads((full_run / "results" / "provenance.json").read_text())
    assert provenance["data"]["manifest_hash"] and provenance["data"]["image_side"] == 64
    assert provenance["fid_extractor"]["name"] == "random-conv"
    assert len(provenance["fid_extractor"]["weights_sha256"]) == 64
    assert provenance["device"] == "cpu" and provenance["training"]["iterations"] == 2
    # How every protocol's rows were generated: the default batch-norm mode and the batch size.
    assert provenance["generation"] == {name: {"bn_mode": DEFAULT_BN_MODE, "batch_size": 4}
                                        for name in EXPECTED_PROTOCOLS}


def test_batch_norm_mode_changes_images_and_never_the_running_statistics(workdir: WorkDir) -> None:
    import torch

    from kpbench.runs import load_run

    run_dir = find_runs(workdir, ["full"], [0])[0]
    running = load_run(run_dir)
    stored = {name: tensor.clone() for name, tensor in running.generator.state_dict().items()}
    batch = running.with_bn_mode("batch")
    assert (running.bn_mode, batch.bn_mode) == ("running", "batch")
    patches = torch.rand(4, 3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = torch.rand(4, running.spec.z_dim, generator=torch.Generator().manual_seed(1)) * 2 - 1
    image_batch, _ = batch.generate(patches, z)
    image_running, _ = running.generate(patches, z)
    assert (image_batch - image_running).abs().max() > 1e-3  # the mode changes the images
    assert torch.equal(batch.generate(patches, z)[0], image_batch)  # deterministic for one batch
    # Batch statistics make an output depend on its batch companions.
    assert not torch.allclose(batch.generate(patches[:2], z[:2])[0], image_batch[:2], atol=1e-5)
    # Neither the loaded weights nor the batch-mode copy's running statistics moved.
    for generator in (running.generator, batch.generator):
        for name, tensor in generator.state_dict().items():
            assert torch.equal(tensor, stored[name]), name
    assert batch.untrained(seed=0).bn_mode == "batch"  # the random-encoder baseline follows the mode
    assert batch.with_bn_mode("running").generate(patches, z)[0].allclose(image_running)
    with pytest.raises(KpbenchError, match="unknown batch-norm mode 'eval'"):
        running.with_bn_mode("eval")
    with pytest.raises(KpbenchError, match="unknown batch-norm mode"):
        EvalOptions(bn_mode="eval")


def test_bn_mode_is_recorded_per_protocol_and_changes_rows(workdir: WorkDir) -> None:
    options = OPTIONS
    for mode in ("running", "batch"):
        evaluate(workdir, ["noise"], variants=["full"], options=replace(options, bn_mode=mode))
        rows = read_rows(workdir.runs).query("variant == 'full' and protocol == 'noise'")
        run_dir = find_runs(workdir, ["full"], [0])[0]
        provenance = json.loads((run_dir / "results" / "provenance.json").read_text())
        assert provenance["generation"]["noise"] == {"bn_mode": mode, "batch_size": 4}
        if mode == "running":
            running_values = rows["value"].to_numpy()
    assert not np.allclose(rows["value"].to_numpy(), running_values)


def test_several_z_per_patch_set_and_a_floor_that_needs_more_real_images(workdir: WorkDir) -> None:
    def fid_rows(**settings: int) -> pd.DataFrame:
        evaluate(workdir, ["fid"], variants=["full"], options=OPTIONS.with_settings(realism_z=2, **settings))
        rows = read_rows(workdir.runs).query("protocol == 'fid' and metric == 'kid'")
        return rows[rows.run == find_runs(workdir, ["full"], [0])[0].name].set_index("variant")

    # 5 test patch sets x 2 z = 10 images; every training image (43) in the reference leaves only
    # the 5 test images for the floor: no floor, and the note says what to change.
    rows = fid_rows()
    assert rows.loc["full", "n"] == 10 and "(5 test patch sets x 2 z)" in rows.loc["full", "note"]
    assert math.isnan(rows.loc["baseline:real", "value"])
    assert "needs 10 real images" in rows.loc["baseline:real", "note"]
    # A 20-image reference leaves 5 test + 23 training images: the floor at N = 10.
    rows = fid_rows(fid_reference_samples=20)
    assert rows.loc["baseline:real", "n"] == rows.loc["full", "n"] == 10
    assert "reference 20 training images" in rows.loc["baseline:real", "note"]
    assert math.isfinite(rows.loc["baseline:real", "value"])


def test_rerun_replaces_rows_and_is_deterministic(workdir: WorkDir) -> None:
    evaluate(workdir, ["noise"], variants=["full"], options=OPTIONS)
    first = read_rows(workdir.runs)
    evaluate(workdir, ["noise"], variants=["full"], options=OPTIONS)
    second = read_rows(workdir.runs)
    assert len(first) == len(second)
    pd.testing.assert_frame_equal(first, second)


def test_per_sample_values_match_their_rows_and_pair_across_runs(workdir: WorkDir) -> None:
    """Every row of the per-sample protocols has its values kept, keyed by image id; two runs
    (and the floors) are scored on identical ids, and each row's value is their mean."""
    evaluate(workdir, ["patches", "noise"], options=OPTIONS)
    rows = read_rows(workdir.runs)
    samples = read_samples(workdir.runs)
    assert set(SAMPLE_COLUMNS) <= set(samples.columns)
    patches = samples[(samples["protocol"] == "patches") & (samples["condition"] == "key")]
    l1 = patches[patches["metric"] == "appearance_l1"]
    ids = {(run, variant): tuple(sorted(group["sample"]))
           for (run, variant), group in l1.groupby(["run", "variant"])}
    assert {variant for _, variant in ids} == {"full", "cgan", "baseline:nearest_neighbour"}
    n = rows.loc[(rows["protocol"] == "patches") & (rows["variant"] == "full") & (rows["condition"] == "key")
                 & (rows["metric"] == "appearance_l1"), "n"].iloc[0]
    assert len(set(ids.values())) == 1 and len(set(next(iter(ids.values())))) == n > 1
    means = samples.groupby(["run", "protocol", "variant", "condition", "metric"])["value"].mean()
    selected = rows[rows["protocol"].isin(["patches", "noise"])].set_index(
        ["run", "protocol", "variant", "condition", "metric"])["value"]
    joined = selected.to_frame("row").join(means.rename("samples"), how="inner")
    assert len(joined) == len(selected)  # no row without its values
    np.testing.assert_allclose(joined["row"], joined["samples"], rtol=1e-6)


def test_missing_inception_weights_leave_an_explained_gap(workdir: WorkDir) -> None:
    options = EvalOptions(max_samples=4).with_settings(fid_samples=4, extractor="inception")
    with pytest.warns(UserWarning, match="fid: no values for 1 run .*--inception-weights"):
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


def test_unlabelled_dataset_gives_an_explained_gap(workdir: WorkDir, monkeypatch: pytest.MonkeyPatch) -> None:
    import kpbench.samples

    original = kpbench.samples.open_data

    def unlabelled_open_data(spec: DataSpec):
        dataset = original(spec)
        dataset.labels = np.zeros_like(dataset.labels)
        return dataset

    monkeypatch.setattr(kpbench.samples, "open_data", unlabelled_open_data)
    with pytest.warns(UserWarning, match="classification: no values for 1 run"):
        outcome = evaluate(workdir, ["classification"], variants=["full"], options=OPTIONS)
    assert outcome.empty_lines() == ["classification: no values for 1 run (dataset has no labels: all 48 "
                                     "images share one label)"]
    rows = read_rows(workdir.runs).query("variant == 'full' and protocol == 'classification'")
    assert set(rows.condition) == {"encoder:trained", "encoder:random_init", "raw_pixels"}
    assert rows["value"].isna().all()
    assert rows["note"].eq("dataset has no labels: all 48 images share one label").all()


# Class sizes of a face-like dataset: 200 single-photo identities and a few with several photos.
SIZES = {**{label: 1 for label in range(200)}, 1000: 7, 1001: 5, 1002: 12, 1003: 4, 1004: 6}


def stored_labels(seed: int) -> np.ndarray:
    """(L,) labels of SIZES in a seeded storage order."""
    labels = np.concatenate([np.full(size, label) for label, size in SIZES.items()])
    return np.random.default_rng(seed).permutation(labels)


def test_select_balanced_keeps_classes_with_enough_samples_and_balances_them() -> None:
    labels = stored_labels(0)
    positions = select_balanced(labels, min_per_class=5, max_total=1000, seed=3)
    kept, counts = np.unique(labels[positions], return_counts=True)
    assert kept.tolist() == [1000, 1001, 1002, 1004] and counts.tolist() == [5, 5, 5, 5]
    assert len(np.unique(positions)) == len(positions) and np.all(np.diff(positions) > 0)
    # A cap gives fewer samples per class (down to the minimum), then fewer classes.
    capped = select_balanced(labels, min_per_class=2, max_total=15, seed=3)
    kept, counts = np.unique(labels[capped], return_counts=True)
    assert kept.tolist() == [1000, 1001, 1002, 1003, 1004] and counts.tolist() == [3] * 5
    fewer = select_balanced(labels, min_per_class=5, max_total=12, seed=3)
    kept, counts = np.unique(labels[fewer], return_counts=True)
    assert len(kept) == 2 and set(kept) <= {1000, 1001, 1002, 1004} and counts.tolist() == [5, 5]


def test_select_balanced_is_deterministic_and_independent_of_storage_order() -> None:
    labels = stored_labels(0)
    files = np.array([f"img{position:05d}.jpg" for position in range(len(labels))])
    first = select_balanced(labels, 5, 12, seed=3, keys=files)
    np.testing.assert_array_equal(first, select_balanced(labels, 5, 12, seed=3, keys=files))
    # The same photos stored in another order: the same photos are chosen.
    order = np.random.default_rng(1).permutation(len(labels))
    again = select_balanced(labels[order], 5, 12, seed=3, keys=files[order])
    assert set(files[order][again]) == set(files[first])


def test_shortfall_explains_unusable_labels() -> None:
    assert shortfall(np.zeros(50, dtype=np.int64), 5, 2000) == (
        "dataset has no labels: all 50 images share one label")
    one_class = np.array([0] * 6 + [1] * 4 + [2, 3])
    assert shortfall(one_class, 5, 2000) == "only 1 of 4 classes has >= 5 samples; lower --min-per-class"
    assert len(select_balanced(one_class, 5, 2000, seed=0)) == 0
    assert shortfall(one_class, 4, 2000) is None
    assert "--classify-samples 6 cannot hold 2 classes x 4" in shortfall(one_class, 4, 6)


def test_run_independent_work_is_done_once_per_evaluation(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Raw-pixel features and the random encoder's (same seed and encoder architecture) are
    computed once for two runs; only the trained encoder runs per run."""
    import kpbench.protocols.classification as classification
    from kpbench.runs import TrainedRun

    work = WorkDir.resolve(tmp_path)
    for variant in ("full", "nomask"):  # the same encoder architecture
        train(TrainConfig(variant=variant, data=DATA, width=0.0625, batch_size=4, steps=1,
                          num_workers=0, workdir=str(work.root), progress=False))
    pixel_calls, encode_calls = [], []
    original_pixels, original_encode = classification.patch_pixels, TrainedRun.encode

    def counting_pixels(patches):
        pixel_calls.append(len(patches))
        return original_pixels(patches)

    def counting_encode(self, patches):
        encode_calls.append(("random" if self.step == 0 else self.spec.name, len(patches)))
        return original_encode(self, patches)

    monkeypatch.setattr(classification, "patch_pixels", counting_pixels)
    monkeypatch.setattr(TrainedRun, "encode", counting_encode)
    outcome = evaluate(work, ["classification"], options=OPTIONS)
    selected = sum(pixel_calls)  # the balanced selection, once
    assert selected >= 20

    def encoded(kind: str) -> int:
        return sum(size for name, size in encode_calls if name == kind)

    assert encoded("random") == encoded("full") == encoded("nomask") == selected
    assert set(outcome.seconds) == {"load", "classification"} and len(outcome.written) == 2
    # Both runs carry the shared rows, with the same numbers.
    rows = read_rows(work.runs).query("protocol == 'classification' and metric == 'accuracy'")
    shared = rows[rows.condition != "encoder:trained"].groupby("condition")["value"].nunique()
    assert shared.tolist() == [1, 1] and len(rows) == 6


def copy_runs(workdir: WorkDir, tmp_path: Path) -> tuple[WorkDir, Path]:
    """The module's trained runs copied into a new work dir (without results), and its full run."""
    import shutil

    work = WorkDir.resolve(tmp_path / "copy")
    shutil.copytree(workdir.runs, work.runs, ignore=shutil.ignore_patterns(".locks", "results"))
    return work, work.runs / find_runs(workdir, ["full"], [0])[0].name


def test_a_run_that_cannot_be_loaded_is_skipped_and_the_others_evaluated(workdir: WorkDir,
                                                                         tmp_path: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from kpbench.cli import app

    work, full = copy_runs(workdir, tmp_path)
    # A run of a plug-in variant whose file is gone, named to come first: the runs after it count.
    gone = work.runs / "a-gone-plugin"
    shutil.copytree(full, gone)
    spec = json.loads((gone / "spec.json").read_text())
    spec |= {"name": "gone_plugin", "generator_network": {"build": "gone.py:Net", "any_n": True,
                                                          "order_invariant": True},
             "source": {"file": str(tmp_path / "gone.py"), "module": "kpbench_plugin_gone_0", "sha256": ""}}
    (gone / "spec.json").write_text(json.dumps(spec))
    trained = sorted(path.name for path in work.runs.iterdir() if path.name != "a-gone-plugin")
    with pytest.warns(UserWarning) as caught:
        outcome = evaluate(work, ["patches"], options=OPTIONS)
    assert sorted(path.name for path in outcome.written) == trained
    assert list(outcome.skipped) == [gone] and "plug-in that cannot be imported" in outcome.skipped[gone]
    assert any(str(w.message).startswith("skipped run a-gone-plugin: variant 'gone_plugin' comes from a "
                                         "plug-in") for w in caught)
    assert outcome.skipped_summary() == ("evaluated 2 runs; skipped 1 that could not be loaded: "
                                         "a-gone-plugin (each said why above)")
    # The command line evaluates and writes the others too, then exits non-zero with the summary.
    for path in work.runs.glob("*/results"):
        shutil.rmtree(path)
    result = CliRunner().invoke(app, ["eval", "-p", "patches", "--max-samples", "4", "-w", str(work.root)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("warning: skipped run a-gone-plugin: variant 'gone_plugin'")
    assert lines[-1] == "error: evaluated 2 runs; skipped 1 that could not be loaded: a-gone-plugin " \
                        "(each said why above)"
    assert all((work.runs / name / "results" / "patches.csv").is_file() for name in trained)


def test_runs_whose_training_has_not_started_are_left_out_unless_named(workdir: WorkDir,
                                                                      tmp_path: Path) -> None:
    import shutil

    work, full = copy_runs(workdir, tmp_path)
    # Stopped before its first checkpoint (`kpbench runs`: "not started"), with its own seed.
    unstarted = work.runs / "full-seed7"
    shutil.copytree(full, unstarted)
    (unstarted / "checkpoints" / "last.pt").unlink()
    (unstarted / "log.jsonl").unlink()
    stored = json.loads((unstarted / "config.json").read_text())
    stored["config"]["seed"] = 7
    (unstarted / "config.json").write_text(json.dumps(stored))
    with pytest.warns(UserWarning, match="left out 1 run whose training has not started .*: full-seed7"):
        outcome = evaluate(work, ["patches"], options=OPTIONS)
    assert outcome.not_started == [unstarted] and not outcome.skipped and len(outcome.written) == 2
    # Named, it is evaluated or, as here, skipped with what to do.
    with pytest.warns(UserWarning, match="skipped run full-seed7: .*last.pt is missing.*train it first"):
        named = evaluate(work, ["patches"], options=OPTIONS, names=["full-seed7"])
    assert list(named.skipped) == [unstarted] and not named.written and not named.not_started
    # A filter that leaves nothing else is an error, not an empty success.
    with pytest.raises(KpbenchError, match="nothing to evaluate: the training of full-seed7 has not started"):
        evaluate(work, ["patches"], seeds=[7], options=OPTIONS)


def test_a_protocol_without_any_value_says_so_once_per_protocol(workdir: WorkDir, tmp_path: Path) -> None:
    work, _ = copy_runs(workdir, tmp_path)
    options = EvalOptions(max_samples=4).with_settings(fid_samples=4, extractor="inception")
    with pytest.warns(UserWarning) as caught:
        outcome = evaluate(work, ["fid", "patches"], options=options)
    assert set(outcome.empty) == {"fid"} and len(outcome.empty["fid"]) == 2
    (line,) = outcome.empty_lines()
    assert line.startswith("fid: no values for 2 runs (weights-inception-") and "--inception-weights" in line
    assert [str(w.message) for w in caught].count(line) == 1
