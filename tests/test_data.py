"""Datasets: folder indexing, conversions, presets, split and manifest, the built-in data."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kpbench.builtin import CLASS_NAMES, render_creature
from kpbench.data import FolderDataset, Preprocess, count_split, make_preprocess, open_dataset, read_rgb
from kpbench.errors import KpbenchError


def test_folder_labels_from_subfolders_and_shapes(photo_folder: Path) -> None:
    dataset = open_dataset(photo_folder, Preprocess(size=64))
    assert len(dataset) == 6
    assert dataset.class_names == ["even", "odd"]
    image = dataset.load_image(0)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image.std() > 10  # a real photo, not a blank


def test_split_is_deterministic_by_seed_and_recorded(photo_folder: Path) -> None:
    first = open_dataset(photo_folder, Preprocess(64), split_seed=3, test_fraction=0.34)
    again = open_dataset(photo_folder, Preprocess(64), split_seed=3, test_fraction=0.34)
    other = [open_dataset(photo_folder, Preprocess(64), split_seed=s, test_fraction=0.34)
             for s in range(4, 12)]
    assert np.array_equal(first.split_indices("test"), again.split_indices("test"))
    assert first.manifest.hash == again.manifest.hash
    assert any(not np.array_equal(first.split_indices("test"), o.split_indices("test")) for o in other)
    assert len(first.split_indices("test")) == 2 and len(first.split_indices("train")) == 4
    # The manifest hash names the data: changing the image side changes it.
    assert open_dataset(photo_folder, Preprocess(128), split_seed=3,
                        test_fraction=0.34).manifest.hash != first.manifest.hash


def test_manifest_changes_when_a_file_changes(photo_folder: Path) -> None:
    before = open_dataset(photo_folder, Preprocess(64)).manifest.hash
    victim = next(photo_folder.rglob("*.png"))
    Image.open(victim).convert("L").save(victim)  # same name, new content and size
    assert open_dataset(photo_folder, Preprocess(64)).manifest.hash != before


def test_broken_truncated_and_non_image_files_are_skipped_and_counted(photo_folder: Path) -> None:
    (photo_folder / "even" / "notes.jpg").write_text("not an image")
    good = next(photo_folder.rglob("*.jpg")).read_bytes()
    (photo_folder / "odd" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    Image.new("RGB", (12, 12), "red").save(photo_folder / "odd" / "tiny.png")
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):
        dataset = open_dataset(photo_folder, Preprocess(64))
    assert len(dataset) == 6
    assert dataset.manifest.skipped == {"broken": 2, "too_small": 1, "unlabelled": 0}


def test_empty_and_unreadable_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(KpbenchError, match="no image files"):
        open_dataset(tmp_path)
    (tmp_path / "a.png").write_bytes(b"\x89PNG broken")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(KpbenchError, match="no readable image"):
            open_dataset(tmp_path)
    with pytest.raises(KpbenchError, match="does not exist"):
        open_dataset(tmp_path / "missing")


def test_modes_are_converted_to_rgb(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    photo = Image.fromarray(photos["astronaut"]).resize((96, 96))
    photo.convert("L").save(tmp_path / "gray.png")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.png")
    rgba = photo.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: composited on white
    rgba.save(tmp_path / "rgba.png")
    sixteen = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(sixteen).save(tmp_path / "sixteen.png")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    for name in ("gray", "palette", "rgba", "sixteen"):
        image = read_rgb(tmp_path / f"{name}.png")
        assert image.mode == "RGB" and image.size == (96, 96)
    assert np.asarray(read_rgb(tmp_path / "rgba.png")).min() == 255
    gray = np.asarray(read_rgb(tmp_path / "gray.png"), dtype=int)
    sixteen_rgb = np.asarray(read_rgb(tmp_path / "sixteen.png"), dtype=int)
    assert np.abs(gray - sixteen_rgb).max() <= 1  # 16-bit scaled back to the same 8-bit values


def test_exif_orientation_is_respected(tmp_path: Path) -> None:
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, :40] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(wide).save(tmp_path / "rotated.jpg", exif=exif)
    shown = read_rgb(tmp_path / "rotated.jpg")
    assert shown.size == (40, 80)  # displayed portrait
    top = np.asarray(shown)[:40].mean()
    bottom = np.asarray(shown)[40:].mean()
    assert top > 200 and bottom < 50  # the white half ends up on top


def test_labels_csv_with_split_and_celeba_crop(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    names = []
    for number, (name, image) in enumerate(sorted(photos.items())):
        Image.fromarray(image).resize((178, 218)).save(tmp_path / f"{name}.jpg")
        names.append((f"{name}.jpg", f"id_{number % 2}", "train_dataset" if number < 4 else "test_dataset"))
    rows = ["file,identity_folder,split"] + [",".join(row) for row in names]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    dataset = open_dataset(tmp_path, make_preprocess(64, preset="celeba"))
    assert dataset.preprocess.crop == 108
    assert len(dataset.split_indices("test")) == 2 and len(dataset.split_indices("train")) == 4
    assert dataset.class_names == ["id_0", "id_1"]
    # The centre crop: a marker outside the central 108 px must not be visible.
    marker = np.zeros((218, 178, 3), np.uint8)
    marker[:40] = 255
    Image.fromarray(marker).save(tmp_path / "marker.jpg")
    with open(tmp_path / "labels.csv", "a") as handle:
        handle.write("marker.jpg,id_0,train\n")
    dataset = FolderDataset(tmp_path, make_preprocess(64, preset="celeba"))
    marker_index = [record.file for record in dataset.records].index("marker.jpg")
    assert dataset.load_image(marker_index).max() < 30


def test_split_sizes_are_counted_from_the_listing_as_opening_splits(tmp_path: Path, photo_folder: Path,
                                                                 photos: dict[str, np.ndarray]) -> None:
    # A seeded split, a source's own split (labels.csv; a file it does not list is left out) and
    # the built-in source: the counts opening gives, without reading an image.
    own = tmp_path / "own"
    own.mkdir()
    for name, image in sorted(photos.items()):
        Image.fromarray(image).save(own / f"{name}.jpg")
    listed = sorted(photos)[1:]
    (own / "labels.csv").write_text("file,label,split\n" + "".join(
        f"{name}.jpg,x,{'test' if number % 3 == 0 else 'train'}\n" for number, name in enumerate(listed)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unlisted file is skipped with a warning
        opened = {source: open_dataset(source, test_fraction=0.3).manifest
                  for source in (photo_folder, own, "builtin:30")}
    for source, manifest in opened.items():
        count = count_split(source, test_fraction=0.3)
        assert (count.train, count.test) == (manifest.num_train, manifest.num_test), source
        assert count.exact == (source == "builtin:30")  # a folder's files were counted, not read
    with pytest.raises(KpbenchError, match="does not exist"):
        count_split(tmp_path / "missing")


def test_unknown_preset_and_size_are_errors() -> None:
    with pytest.raises(KpbenchError, match="unknown preset"):
        make_preprocess(64, preset="faces")
    with pytest.raises(KpbenchError, match="not supported"):
        Preprocess(size=100)


def test_builtin_dataset_is_deterministic_structured_and_labelled() -> None:
    first, label = render_creature(7)
    again, label_again = render_creature(7)
    assert np.array_equal(first, again) and label == label_again
    assert not np.array_equal(first, render_creature(8)[0])
    dataset = open_dataset("builtin:64", Preprocess(64))
    counts = np.bincount(dataset.labels, minlength=len(CLASS_NAMES))
    assert (counts > 5).all()  # every class present
    image = dataset.load_image(0).astype(np.float32)
    assert image.std() > 20  # not flat
    # Parts sit at consistent places: the mean over images has strong structure in the
    # eye rows (dark pupils / light sclera) compared with noise.
    stack = np.stack([dataset.load_image(i).astype(np.float32).mean(-1) for i in range(32)])
    spread_across_images = stack.std(0).mean()
    assert spread_across_images < image.mean(-1).std() * 1.5
    with pytest.raises(KpbenchError):
        open_dataset("builtin:abc")


def test_preset_sets_crop_and_patch_filters() -> None:
    from dataclasses import replace

    from kpbench.dataspec import DataSpec
    from kpbench.patches import PATCH_PRESETS
    from kpbench.samples import patch_params

    params = patch_params(DataSpec(preset="celeba", n_patches=4))
    assert params == replace(PATCH_PRESETS["celeba"], n_patches=4)
    assert params.max_area < PATCH_PRESETS["default"].max_area
    assert make_preprocess(64, preset="waterfall").crop is None
