"""What a new user types, checked before anything runs: seeds in one range that every command
takes and every selector finds; datasets too small to split refused at `data prepare` and
`train`, with a warning where the test split is too small for an interval."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_checks import assert_one_line_error  # tests/cli_checks.py
from typer.testing import CliRunner

from kpbench.cli import app, parse_seeds
from kpbench.config import TrainConfig
from kpbench.dataspec import DataSpec
from kpbench.errors import KpbenchError
from kpbench.runtime import derive_seed, seed_everything
from kpbench.seeds import SEED_MAX, SEED_MIN, check_seed

TOO_LARGE = "99999999999999999999999"


def invoke(*args: object):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def test_every_seed_in_the_range_is_taken_by_torch_numpy_and_the_derived_seeds() -> None:
    for seed in (SEED_MIN, SEED_MAX):
        seed_everything(seed)
        torch.Generator().manual_seed(seed)
        np.random.default_rng(seed)
        assert 0 <= derive_seed(seed, "eval") < 2**63
    for wrong in (SEED_MIN - 1, SEED_MAX + 1, int(TOO_LARGE), 1.5, "3", True):
        with pytest.raises(KpbenchError, match="seed must be an integer from 0 to 2\\*\\*63 - 1"):
            check_seed(wrong)


def test_configs_refuse_a_seed_out_of_range_so_the_api_and_plans_do() -> None:
    assert TrainConfig(seed=SEED_MAX).seed == SEED_MAX
    with pytest.raises(KpbenchError, match="seed must be an integer"):
        TrainConfig(seed=-1)
    with pytest.raises(KpbenchError, match="split seed must be an integer"):
        DataSpec(split_seed=2**64)


def test_train_and_generate_refuse_a_seed_out_of_range_before_any_folder_is_made(tmp_path: Path) -> None:
    work = tmp_path / "work"
    for seed in (TOO_LARGE, "-1"):
        assert_one_line_error(invoke("train", "-v", "full", "--data", "builtin:8", "--steps", "1",
                                     f"--seed={seed}", "-w", work), "seed must be an integer from 0")
    assert_one_line_error(invoke("train", "-v", "full", "--data", "builtin:8", "--seeds", "0,-1", "-w", work),
                          "seeds must be comma-separated integers from 0 to 2**63 - 1")
    assert not work.exists()
    # The seed is checked before the model is looked for.
    assert_one_line_error(invoke("generate", tmp_path / "no-run", "-p", tmp_path / "p0.png",
                                 "--seed", TOO_LARGE), "seed must be an integer from 0")
    assert_one_line_error(invoke("export", "builtin:8", "-o", tmp_path / "out", "--seed", "-1", "-w", work),
                          "seed must be an integer from 0")
    assert not (tmp_path / "out").exists()


def test_every_seed_train_accepts_can_be_selected_by_seeds() -> None:
    from kpbench.identity import run_name

    for seed in (SEED_MIN, SEED_MAX):
        name = run_name(TrainConfig(seed=seed).to_dict())
        selected = parse_seeds(re.fullmatch(r".+-seed(\d+)", name)[1])  # type: ignore[index]
        assert selected == [seed]
    assert parse_seeds(f"0-2,{SEED_MAX}") == [0, 1, 2, SEED_MAX]
    for text, message in (("-1", "seeds must be comma-separated integers from 0"),
                          (str(SEED_MAX + 1), "seed must be an integer from 0"),
                          ("0-100000", "at most 1000 seeds"), ("3-1", "must go up")):
        with pytest.raises(KpbenchError, match=re.escape(message)):
            parse_seeds(text)


def photo_folder_of(root: Path, photos: dict[str, np.ndarray], count: int, labels: str | None = None) -> Path:
    from PIL import Image

    root.mkdir(parents=True)
    for name in sorted(photos)[:count]:
        Image.fromarray(photos[name]).save(root / f"{name}.png")
    if labels is not None:
        names = sorted(photos)[:count]
        (root / "labels.csv").write_text("".join(f"{name}.png,x,{labels}\n" for name in names))
    return root


def test_a_dataset_with_an_empty_split_is_refused_by_data_prepare_and_train(
        tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    work = tmp_path / "work"
    one = photo_folder_of(tmp_path / "one", photos, 1)
    for command in (["data", "prepare", one], ["train", "-v", "full", "--data", one, "--steps", "1"]):
        assert_one_line_error(invoke(*command, "-w", work), "has 1 image (1 train / 0 test)",
                              "need at least 1 image in each split (2 in all); add images")
    assert not (work / "runs").exists() and not (work / "cache" / "manifests").exists()
    # A folder whose labels.csv puts every file in train: the fix is in that file.
    all_train = photo_folder_of(tmp_path / "all-train", photos, 3, labels="train")
    assert_one_line_error(invoke("data", "prepare", all_train, "-w", work), "(3 train / 0 test)",
                          "give both splits files in labels.csv")


def test_a_small_test_split_is_a_one_line_warning_and_tiny_builtin_sources_still_work(tmp_path: Path) -> None:
    from kpbench.stats import MIN_TEST_IMAGES_FOR_INTERVAL

    prepared = invoke("data", "prepare", "builtin:8", "-w", tmp_path)  # the smallest source the tests use
    assert prepared.exit_code == 0, prepared.output
    warnings = [line for line in prepared.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: builtin:8 has 8 images (7 train / 1 test): with fewer than "
                        f"{MIN_TEST_IMAGES_FOR_INTERVAL} test images, intervals over them mean little "
                        "(one gives none); add images for numbers to compare"]
    assert "1 test" in prepared.stdout
    quiet = invoke("data", "prepare", "builtin:100", "-w", tmp_path)  # 10 test images: no warning
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr, quiet.output


def test_evaluating_a_split_without_images_names_the_split_and_the_fix(
        tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    from kpbench.paths import WorkDir
    from kpbench.samples import make_sample_dataset

    all_train = photo_folder_of(tmp_path / "all-train", photos, 2, labels="train")
    with pytest.raises(KpbenchError) as caught:
        make_sample_dataset(DataSpec(source=str(all_train)), "test", 0, WorkDir.resolve(tmp_path / "work"))
    assert str(caught.value) == (f"no images in the test split of {all_train} (2 train / 0 test); it needs "
                                 "at least 1 (add images: `kpbench data prepare` checks both splits)")
