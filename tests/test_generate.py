"""`kpbench generate` and `kpbench export-model`: patch images in, image and mask out; exported
models load without the run folder (and without unpickling) and generate the same bytes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from kpbench.cli import app
from kpbench.dataspec import DataSpec
from kpbench.errors import KpbenchError
from kpbench.generate import generate_from_patches, patch_box_size, read_patches, write_generated
from kpbench.modelcard import CARD_FILE, WEIGHTS_FILE, export_model, load_exported, load_model
from kpbench.paths import WorkDir
from kpbench.protocol import EvalOptions, evaluate
from kpbench.runs import TrainedRun, build_untrained_generator
from kpbench.samples import make_sample_dataset, patch_params
from kpbench.tensorfile import read_tensors, write_tensors
from kpbench.train import TrainConfig, train
from kpbench.variant import get_variant

DATA = DataSpec(source="builtin:48", size=64)
runner = CliRunner()


def invoke(*args: object) -> object:
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run of the full model (it has a mask decoder), evaluated by one protocol."""
    work = WorkDir.resolve(tmp_path_factory.mktemp("generate"))
    run_dir = train(TrainConfig(variant="full", data=DATA, width=0.0625, batch_size=4, steps=2,
                                num_workers=0, workdir=str(work.root), progress=False))
    evaluate(work, ["noise"], options=EvalOptions(max_samples=8, batch_size=4).with_settings(sigmas="0,0.5"))
    return run_dir


@pytest.fixture(scope="module")
def patch_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three patch images of different sizes and kinds: colour PNG, large grayscale PNG, tiny JPEG."""
    folder = tmp_path_factory.mktemp("patches")
    rng = np.random.default_rng(0)
    images = {"a.png": rng.integers(0, 256, (40, 30, 3), dtype=np.uint8),
              "b.png": rng.integers(0, 256, (300, 200), dtype=np.uint8),
              "c.jpg": rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)}
    for name, pixels in images.items():
        Image.fromarray(pixels).save(folder / name)
    return [folder / name for name in images]


def generate_args(model: Path, patches: list[Path], out: Path, *extra: object) -> list[object]:
    return ["generate", model, *[arg for patch in patches for arg in ("--patch", patch)], "-o", out, *extra]


def test_generate_writes_image_and_mask_and_a_seed_fixes_the_bytes(trained: Path, patch_files: list[Path],
                                                                   tmp_path: Path) -> None:
    outputs = {}
    for name, seed in (("first", 5), ("again", 5), ("other", 6)):
        result = invoke(*generate_args(trained, patch_files, tmp_path / f"{name}.png", "--seed", seed))
        assert result.exit_code == 0, result.output
        image, mask = tmp_path / f"{name}.png", tmp_path / f"{name}.mask.png"
        assert f"wrote {image}" in result.output and f"wrote {mask}" in result.output
        outputs[name] = (image.read_bytes(), mask.read_bytes())
    with Image.open(tmp_path / "first.png") as image, Image.open(tmp_path / "first.mask.png") as mask:
        assert image.size == mask.size == (64, 64) and image.mode == "RGB"
        mask_pixels = np.asarray(mask)
        assert np.array_equal(mask_pixels[..., 0], mask_pixels[..., 2])  # a gray mask
    assert outputs["first"] == outputs["again"]
    assert outputs["first"][0] != outputs["other"][0]


def test_samples_make_a_grid_whose_first_image_is_the_single_one(trained: Path, patch_files: list[Path],
                                                                 tmp_path: Path) -> None:
    assert invoke(*generate_args(trained, patch_files, tmp_path / "one.png")).exit_code == 0
    result = invoke(*generate_args(trained, patch_files, tmp_path / "grid.png", "--samples", 3))
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "grid.png") as grid, Image.open(tmp_path / "one.png") as one:
        assert grid.size == (3 * 64 + 2 * 2, 64)  # three tiles, 2 px between them
        # Running batch-norm statistics: sample k does not depend on how many are drawn.
        assert np.array_equal(np.asarray(grid)[:, :64], np.asarray(one))
    with Image.open(tmp_path / "grid.mask.png") as masks:
        assert masks.size == (3 * 64 + 2 * 2, 64)


def test_a_patch_cut_from_a_training_image_is_the_training_patch(trained: Path, tmp_path: Path) -> None:
    model = load_model(trained)
    samples = make_sample_dataset(DATA, "test", 0, WorkDir.resolve(trained.parent.parent), flip=False)
    item = samples[0]
    pixels = samples.raw_batch([0])["pixels"][0].numpy()  # (S, S, 3) uint8, the training frame
    paths = []
    for k, (x0, y0, x1, y1) in enumerate(item["boxes"].tolist()):
        paths.append(tmp_path / f"patch{k}.png")
        Image.fromarray(pixels[y0:y1, x0:x1]).save(paths[-1])
    prepared = read_patches(paths, model)
    assert prepared.shape == item["patches"].shape
    torch.testing.assert_close(prepared, item["patches"], atol=1e-5, rtol=0)


def test_patch_sizes_follow_the_presets_box_areas() -> None:
    params = patch_params(DATA)  # key boxes cover 5 % to 25 % of the 64 x 64 frame
    assert patch_box_size(20, 30, 64, params) == (20, 30)  # could be a key box: kept
    width, height = patch_box_size(300, 200, 64, params)
    assert abs(width * height - 0.25 * 64 * 64) < 64 and abs(width / height - 1.5) < 0.05
    width, height = patch_box_size(6, 9, 64, params)
    assert abs(width * height - 0.05 * 64 * 64) < 20 and abs(height / width - 1.5) < 0.1
    assert max(patch_box_size(1000, 10, 64, params)) == 64  # a long strip still fits the frame


def make_bad_patch(folder: Path, kind: str) -> Path:
    """A patch path that cannot be read as an image, of the given kind."""
    path = folder / f"{kind.replace(' ', '_')}.png"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "not an image":
        path.write_text("hello")
    elif kind == "truncated":
        Image.fromarray(np.full((50, 50, 3), 90, np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:60])
    elif kind == "folder":
        path.mkdir()
    return path  # "missing": nothing there


@pytest.mark.parametrize("kind", ["missing", "empty", "not an image", "truncated", "folder"])
def test_a_bad_patch_file_is_one_line_and_a_non_zero_exit(trained: Path, patch_files: list[Path],
                                                          tmp_path: Path, kind: str) -> None:
    bad = make_bad_patch(tmp_path, kind)
    result = invoke(*generate_args(trained, [patch_files[0], bad], tmp_path / "out.png"))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: patch file") and str(bad) in lines[0], lines
    assert not (tmp_path / "out.png").exists()


def test_other_bad_inputs_are_one_line_errors(trained: Path, patch_files: list[Path], tmp_path: Path) -> None:
    for args, message in (
        (generate_args(tmp_path / "nothing", patch_files, tmp_path / "o.png"), "no trained run at"),
        (generate_args(trained, patch_files, tmp_path / "o.jpg"), "must be a .png file"),
    ):
        result = invoke(*args)
        assert result.exit_code == 2 and message in result.output and len(result.output.splitlines()) == 1


def test_export_model_loads_without_the_run_and_generates_the_same_bytes(
        trained: Path, patch_files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exported = tmp_path / "exported"
    result = invoke("export-model", trained, "-o", exported)
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in exported.iterdir()) == sorted([CARD_FILE, WEIGHTS_FILE])
    card = json.loads((exported / CARD_FILE).read_text())
    stored = json.loads((trained / "config.json").read_text())
    assert card["variant"]["name"] == "full" and card["variant"] == stored["spec"]
    assert card["data_manifest"] == stored["data_manifest"] and card["step"] == 2
    assert card["training"]["width"] == 0.0625 and "workdir" not in card["training"]
    assert card["evaluation"]["generation"]["noise"]["bn_mode"] == "batch"
    # Headline metrics of the run with their intervals (the noise protocol's per-sample metrics).
    own = [cell for cell in card["metrics"] if cell["variant"] == "full"]
    assert own and all(cell["ci_low"] <= cell["mean"] <= cell["ci_high"] for cell in own)

    # The copy works on its own, and loading it never unpickles: torch.load is not called.
    moved = tmp_path / "elsewhere"
    exported.rename(moved)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", refuse)
    model = load_model(moved)
    assert isinstance(model, TrainedRun) and model.spec.name == "full" and model.step == 2
    monkeypatch.undo()
    from_run, from_export = tmp_path / "run.png", tmp_path / "export.png"
    for source, out in ((trained, from_run), (moved, from_export)):
        assert invoke(*generate_args(source, patch_files, out, "--samples", 2, "--seed", 3)).exit_code == 0
    assert from_run.read_bytes() == from_export.read_bytes()
    assert (tmp_path / "run.mask.png").read_bytes() == (tmp_path / "export.mask.png").read_bytes()


def test_an_altered_weights_file_is_refused(trained: Path, tmp_path: Path) -> None:
    export_model(trained, tmp_path / "exported")
    weights = tmp_path / "exported" / WEIGHTS_FILE
    tensors, metadata = read_tensors(weights)
    name = next(iter(tensors))
    write_tensors(weights, {**tensors, name: tensors[name] + 1}, metadata)
    with pytest.raises(KpbenchError, match="does not match the SHA-256"):
        load_exported(tmp_path / "exported")


def test_variants_without_a_mask_write_the_image_only_and_fixed_n_is_checked(tmp_path: Path) -> None:
    config = TrainConfig(data=DATA, width=0.0625)
    patches = torch.zeros(3, 3, 64, 64)
    for name, expected in (("nomask", ["out.png"]), ("full", ["out.png", "out.mask.png"])):
        spec = get_variant(name)
        model = TrainedRun(tmp_path, spec, config, 0, build_untrained_generator(spec, config).eval(),
                           torch.device("cpu"))
        paths = write_generated(generate_from_patches(model, patches), tmp_path / name / "out.png")
        assert [path.name for path in paths] == expected and all(path.is_file() for path in paths)
    spec = get_variant("cgan")  # concatenates exactly the N it was trained with
    model = TrainedRun(tmp_path, spec, config, 0, build_untrained_generator(spec, config).eval(),
                       torch.device("cpu"))
    with pytest.raises(KpbenchError, match="exactly 3 patches, got 2"):
        generate_from_patches(model, patches[:2])


def test_tensor_files_round_trip_and_reject_what_is_not_one(tmp_path: Path) -> None:
    tensors = {"weight": torch.randn(3, 4), "half": torch.randn(5).to(torch.bfloat16),
               "count": torch.tensor(7), "empty": torch.zeros(0, 2), "flags": torch.tensor([True, False]),
               "strided": torch.arange(12, dtype=torch.int32).reshape(3, 4).t()}
    path = write_tensors(tmp_path / "t.safetensors", tensors, {"format": "pt"})
    again = write_tensors(tmp_path / "u.safetensors", tensors, {"format": "pt"})
    assert path.read_bytes() == again.read_bytes()  # the same tensors, the same bytes
    (header_size,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert (8 + header_size) % 8 == 0  # tensor data starts aligned
    loaded, metadata = read_tensors(path)
    assert metadata == {"format": "pt"} and set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)
    blob = path.read_bytes()
    for broken in (b"abc", blob[:-4], struct.pack("<Q", 4) + b"[1] "):
        (tmp_path / "bad.safetensors").write_bytes(broken)
        with pytest.raises(KpbenchError, match="is not a safetensors file"):
            read_tensors(tmp_path / "bad.safetensors")


def test_tensor_files_agree_with_the_safetensors_library(tmp_path: Path) -> None:
    import safetensors.torch as safetensors_torch
    tensors = {"weight": torch.randn(3, 4), "count": torch.tensor(7), "half": torch.randn(2).half()}
    ours = write_tensors(tmp_path / "ours.safetensors", tensors)
    assert all(torch.equal(safetensors_torch.load_file(ours)[name], tensors[name]) for name in tensors)
    theirs = tmp_path / "theirs.safetensors"
    safetensors_torch.save_file(tensors, theirs)
    assert all(torch.equal(read_tensors(theirs)[0][name], tensors[name]) for name in tensors)
