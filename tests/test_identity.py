"""Run identity: names that show what a run learned from, old folders that keep working, and runs
of different conditions side by side in one work dir and one report."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from kpbench.cli import app
from kpbench.dataspec import DataSpec
from kpbench.errors import KpbenchError
from kpbench.identity import distinguishing_tags, label, run_name, run_tags
from kpbench.paths import RunDir, WorkDir
from kpbench.protocol import EvalOptions, evaluate, find_runs
from kpbench.report import build_report
from kpbench.runs import list_runs, load_run
from kpbench.train import TrainConfig, train

DATA = DataSpec(source="builtin:48")


def tiny(workdir: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(data=DATA, width=0.0625, batch_size=4, steps=2, num_workers=0, progress=False,
                       workdir=str(workdir), sample_every=1000, checkpoint_every=1000, log_every=1)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_names_show_the_settings_that_differ_from_the_defaults_and_are_unique_and_stable() -> None:
    default = TrainConfig()
    assert run_name(default.to_dict()) == "full-seed0"
    random5 = replace(default, patch_source="random", data=replace(default.data, n_patches=5), seed=1)
    assert run_name(random5.to_dict()) == "full-random-n5-seed1"
    celeba = replace(default, variant="nomask", width=0.25, batch_size=32, seed=2,
                     data=DataSpec(source="/data/celeba-6k/", preset="celeba"))
    assert run_name(celeba.to_dict()) == "nomask-data-celeba_6k.0137-preset-celeba-w0.25-b32-seed2"
    # Folders are told apart by their path too, and a folder's name cannot pass for a condition.
    def folder_run(source: str, **changes: object) -> str:
        return run_name(replace(default, data=DataSpec(source=source), **changes).to_dict())  # type: ignore[arg-type]

    assert folder_run("/a/photos") != folder_run("/b/photos")
    assert folder_run("/x/cats-random") != folder_run("/x/cats", patch_source="random")
    # Data settings without a tag hash apart from training ones: baselines keep only the first.
    split = run_tags(replace(default, data=replace(default.data, split_seed=3)).to_dict())
    faster = run_tags(replace(default, lr=1e-3).to_dict())
    assert split[0][0] == "other-data" and split[0][1].startswith("xd")
    assert faster[0][0] == "other" and faster[0][1].startswith("x") and not faster[0][1].startswith("xd")
    # Every combination of conditions gets its own name, the same one on every call and after
    # the config went through config.json.
    names = []
    for variant, source, n, width, seed, lr in itertools.product(
            ("full", "cgan"), ("key", "random"), (2, 3, 5), (1.0, 0.125), (0, 1), (2e-4, 1e-3)):
        config = replace(default, variant=variant, patch_source=source, width=width, seed=seed, lr=lr,
                         data=replace(default.data, n_patches=n))
        name = run_name(config.to_dict())
        assert name == run_name(TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))).to_dict())
        names.append(name)
    assert len(set(names)) == len(names) == 2 * 2 * 3 * 2 * 2 * 2
    # Operational settings (length, device, logging) are the same run.
    operational = replace(default, steps=7, epochs=3, device="cpu", num_workers=4, log_every=1, amp="bf16")
    assert run_name(operational.to_dict()) == "full-seed0"


def test_report_labels_keep_only_the_settings_that_vary() -> None:
    runs = {
        "full-builtin48-w0.5-seed0": [("data.source", "builtin48"), ("width", "w0.5")],
        "full-builtin48-random-w0.5-seed0": [("data.source", "builtin48"), ("patch_source", "random"),
                                             ("width", "w0.5")],
        "full-builtin48-n5-w0.5-seed0": [("data.source", "builtin48"), ("data.n_patches", "n5"),
                                         ("width", "w0.5")],
    }
    varying = distinguishing_tags(runs)
    assert [label("full", tags) for tags in varying.values()] == ["full", "full-random", "full-n5"]
    # Conditions are never dropped as "shared": runs that were all trained on random patches are
    # not the full model's default.
    all_random = distinguishing_tags({"a": [("patch_source", "random"), ("width", "w0.5")],
                                      "b": [("patch_source", "random"), ("width", "w0.5")]})
    assert label("full", all_random["a"]) == "full-random"
    # A no-learning baseline keeps data settings only: it does not depend on the training patches.
    assert label("baseline:prior_mask", varying["full-builtin48-random-w0.5-seed0"], data_only=True) == (
        "baseline:prior_mask")
    assert label("baseline:prior_mask", varying["full-builtin48-n5-w0.5-seed0"], data_only=True) == (
        "baseline:prior_mask-n5")


def test_a_run_under_its_old_name_keeps_loading_and_continues_under_its_new_name(tmp_path: Path) -> None:
    run_dir = train(tiny(tmp_path))
    legacy = run_dir.parent / "full-seed0"
    run_dir.rename(legacy)
    stored = json.loads(RunDir(legacy).config.read_text())
    for key in ("name", "tags"):  # config.json as written before names carried settings
        del stored[key]
    del stored["spec"]["image_skips"]  # ... and before the spec had the Fig. 5 switch
    RunDir(legacy).config.write_text(json.dumps(stored))
    # Evaluation finds it by its config, whatever the folder is called.
    assert find_runs(WorkDir.resolve(tmp_path), ["full"], [0]) == [legacy]
    assert load_run(legacy).step == 2
    # Training it further adopts the folder under the new name and resumes.
    assert train(tiny(tmp_path, steps=3)) == run_dir and not legacy.exists()
    events = [json.loads(line).get("event") for line in RunDir(run_dir).log.read_text().splitlines()]
    assert "resume" in events and load_run(run_dir).step == 3


def test_key_and_random_trained_runs_coexist_and_are_compared(tmp_path: Path) -> None:
    key_run = train(tiny(tmp_path))
    random_run = train(tiny(tmp_path, patch_source="random"))
    assert random_run.name == "full-builtin48-random-w0.0625-b4-seed0" != key_run.name
    options = EvalOptions(max_samples=8, device="cpu").with_settings(fid_samples=8, extractor="random-conv")
    written = evaluate(WorkDir.resolve(tmp_path), ["patches"], options=options).written
    assert set(written) == {key_run, random_run}
    report = build_report(WorkDir.resolve(tmp_path), "conditions", include_images=False)
    frame = pd.read_csv(report.csv)
    # Both trainings, on both test-time patch kinds (the swap is the distribution-shift test).
    cells = set(zip(frame["variant"], frame["condition"]))
    assert {("full", "key"), ("full", "random"), ("full-random", "key"), ("full-random", "random")} <= cells
    html = report.html.read_text()
    assert "full-random" in html


def test_runs_command_lists_settings_progress_and_evaluation(tmp_path: Path) -> None:
    train(tiny(tmp_path))
    train(tiny(tmp_path, patch_source="random", steps=1))
    options = EvalOptions(max_samples=8, device="cpu").with_settings(fid_samples=8, extractor="random-conv")
    evaluate(WorkDir.resolve(tmp_path), ["noise"], options=options, names=["full-builtin48-w0.0625-b4-seed0"])
    result = CliRunner().invoke(app, ["runs", "-w", str(tmp_path)], terminal_width=250)
    assert result.exit_code == 0, result.output
    for text in ("finished", "noise", "random", "builtin48", "2/2", "1/1"):
        assert text in result.stdout
    # Each run's name whole on one line, also in a narrow terminal: other commands take it.
    from kpbench import cli

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(cli.console, "width", 60)
        narrow = CliRunner().invoke(app, ["runs", "-w", str(tmp_path)])
    assert all(name in narrow.stdout for name in ("full-builtin48-w0.0625-b4-seed0",
                                                  "full-builtin48-random-w0.0625-b4-seed0")), narrow.stdout
    infos = {info.name: info for info in list_runs(tmp_path / "runs")}
    progress = [(i.status, i.step, i.total_steps) for i in infos.values()]
    assert progress == [("finished", 1, 1), ("finished", 2, 2)]
    assert infos["full-builtin48-w0.0625-b4-seed0"].evaluated == {"noise": True}
    assert infos["full-builtin48-random-w0.0625-b4-seed0"].evaluated == {}
    with pytest.raises(KpbenchError, match="no run named nope"):
        evaluate(WorkDir.resolve(tmp_path), ["noise"], options=options, names=["nope"])


def test_train_with_several_seeds_makes_one_run_per_seed(tmp_path: Path) -> None:
    common = ["train", "--variant", "full", "--data", "builtin:48", "--steps", "1", "--width", "0.0625",
              "--batch-size", "4", "-w", str(tmp_path)]
    result = CliRunner().invoke(app, [*common, "--seeds", "0,2-3"])
    assert result.exit_code == 0, result.output
    assert sorted(info.seed for info in list_runs(tmp_path / "runs")) == [0, 2, 3]
    bad = CliRunner().invoke(app, [*common, "--seeds", "0,x"])
    assert bad.exit_code == 2 and "seeds must be comma-separated integers" in bad.output
    assert "Traceback" not in bad.output


def _make_legacy(run_dir: Path, name: str = "full-seed0", spec_init: str | None = None) -> Path:
    """Turn a run into one written before names carried settings (and before init was recorded
    when ``spec_init`` is None)."""
    legacy = run_dir.parent / name
    run_dir.rename(legacy)
    stored = json.loads(RunDir(legacy).config.read_text())
    del stored["name"], stored["tags"]
    if spec_init is None:
        del stored["spec"]["init"]
    else:
        stored["spec"]["init"] = spec_init
    RunDir(legacy).config.write_text(json.dumps(stored))
    return legacy


def test_an_old_run_with_other_settings_moves_to_its_own_name_instead_of_being_continued(
        tmp_path: Path) -> None:
    # An old full-seed0 trained at another width and with the dcgan initialisation.
    old = train(tiny(tmp_path, width=0.125, init="dcgan"))
    legacy = _make_legacy(old, "full-builtin48-w0.0625-b4-seed0", spec_init="dcgan")
    assert [info.name for info in list_runs(tmp_path / "runs")] == [legacy.name]
    assert list_runs(tmp_path / "runs")[0].tags[-1] == ("init", "init-dcgan")  # its real settings
    # Training the default-named run neither continues it nor asks to delete it: it moves away.
    fresh = train(tiny(tmp_path))
    assert fresh == legacy and load_run(fresh).config.width == 0.0625
    moved = tmp_path / "runs" / old.name
    assert load_run(moved).config.width == 0.125 and load_run(moved).spec.init == "dcgan"
