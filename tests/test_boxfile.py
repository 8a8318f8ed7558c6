"""Key patches from a box file: boxes land on the pixels they name after crop, resize and flip;
each kind of bad box is counted once; the file's content names runs and caches (and no file
changes nothing); compare-boxes and the boxes axis of plans."""

from __future__ import annotations

import textwrap
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kpbench.boxcache import box_cache_path
from kpbench.boxfile import file_box_cache_path
from kpbench.cli import app
from kpbench.config import TrainConfig
from kpbench.data import Preprocess
from kpbench.dataspec import DataSpec
from kpbench.errors import KpbenchError
from kpbench.identity import run_name
from kpbench.io import stable_hash
from kpbench.patches import PATCH_PRESETS
from kpbench.paths import WorkDir
from kpbench.samples import load_boxes, make_sample_dataset, open_data, patch_params

RED = (255, 0, 0)
# (W, H) = (100, 80) source images; with the default preset at S = 64 the short side (80) is
# kept: crop x 10..90, scale 0.8. A square at source (x, y, 15, 15) lands at frame
# (0.8 (x - 10), 0.8 y) with side 12.
SQUARES = {"a.png": (20, 10), "b.png": (60, 40), "c.png": (30, 50), "d.png": (70, 5)}


def square_folder(folder: Path) -> Path:
    folder.mkdir()
    for name, (x, y) in SQUARES.items():
        pixels = np.full((80, 100, 3), 40, np.uint8)
        pixels[y:y + 15, x:x + 15] = RED
        Image.fromarray(pixels).save(folder / name)
    return folder


def write_csv(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_map_boxes_follows_crop_and_resize() -> None:
    # The celeba crop: 108 x 108 centred in 178 x 218 (offsets 35, 55), resized to 64.
    celeba = Preprocess(size=64, crop=108)
    mapped = celeba.map_boxes(np.array([[35.0 + 27, 55.0 + 54, 54.0, 27.0]]), 178, 218)
    np.testing.assert_allclose(mapped, [[16.0, 32.0, 48.0, 48.0]])
    # No crop: short side resized to S, the long side centre-cropped.
    np.testing.assert_allclose(Preprocess(size=64).map_boxes(np.array([[10.0, 0, 80, 80]]), 100, 80),
                               [[0.0, 0.0, 64.0, 64.0]])


def test_file_boxes_land_on_the_square_after_crop_resize_and_flip(tmp_path: Path) -> None:
    folder = square_folder(tmp_path / "squares")
    rows = "".join(f"{name},0,{x},{y},15,15\n" for name, (x, y) in SQUARES.items())
    boxes = write_csv(tmp_path / "boxes.csv", "file,box,x,y,w,h\n" + rows)
    spec = DataSpec(source=str(folder), n_patches=1, boxes=str(boxes))
    samples = make_sample_dataset(spec, "all", seed=0, workdir=WorkDir.resolve(tmp_path / "work"), flip=True)
    flipped_seen = set()
    for epoch in range(6):
        samples.set_epoch(epoch)
        batch = samples.raw_batch(np.arange(len(samples)))
        for pixels, (x0, y0, x1, y1), index in zip(batch["pixels"].numpy(), batch["boxes"][:, 0].numpy(),
                                                    batch["index"].numpy()):
            x, y = SQUARES[samples.dataset.records[index].file]
            expected = np.array([round(0.8 * (x - 10)), round(0.8 * y), round(0.8 * (x - 10) + 12),
                                 round(0.8 * y + 12)])
            flipped = not np.array_equal([x0, y0, x1, y1], expected)
            if flipped:  # the flip mirrors the box with the image
                assert [x0, y0, x1, y1] == [64 - expected[2], expected[1], 64 - expected[0], expected[3]]
            flipped_seen.add(flipped)
            inside = pixels[y0 + 1:y1 - 1, x0 + 1:x1 - 1].reshape(-1, 3).astype(int)
            assert np.abs(inside - RED).max() < 40, "the box interior is the red square"
            ring = pixels[max(y0 - 3, 0):y1 + 3, max(x0 - 3, 0):x1 + 3].reshape(-1, 3)
            assert (ring[:, 1] > 30).any(), "the box is not larger than the square"
    assert flipped_seen == {True, False}
    # The mask and the patch the model gets come from the same boxes.
    item = samples[0]
    red = (item["image"][0] > 0.8) & (item["image"][1] < -0.6)
    assert bool((item["mask"][0].bool() == red).float().mean() > 0.98)
    assert float(item["patches"][0, 0].mean()) > 0.8  # the patch is (nearly) all red channel


def test_each_kind_of_bad_box_is_counted_once(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    folder = square_folder(tmp_path / "squares")
    boxes = write_csv(tmp_path / "boxes.csv", """
        a.png,20,10,15,15
        a.png,60,40,15,15
        a.png,30,50,15,15
        a.png,70,5,15,15
        b.png,60,40,0,15
        b.png,60,40,15,-3
        b.png,0,0,30,30
        b.png,92,5,8,8
        b.png,60,40,15,15
        b.png,30,50,15,15
        c.png,30,50,15,15
        ghost.png,1,1,5,5
        ghost.png,2,2,5,5
        """)
    spec = DataSpec(source=str(folder), n_patches=3, boxes=str(boxes))
    work = WorkDir.resolve(tmp_path / "work")
    table = load_boxes(open_data(spec), spec, work)
    messages = [str(w.message) for w in recwarn.list]
    expected = {"2 row(s) name a file": 1, "2 box(es) with zero or negative": 1,
                "1 box(es) partly outside": 1, "1 box(es) with less than a pixel": 1,
                "1 image(s) with more than 3 boxes": 1, "1 image(s) with fewer than 3 boxes": 1,
                "1 image(s) without boxes": 1}
    for start, count in expected.items():
        assert sum(start in message for message in messages) == count, (start, messages)
    assert len(messages) == len(expected)
    assert table.usable_rows().tolist() == [True, True, False, False]  # a, b, c (too few), d (none)
    np.testing.assert_array_equal(table.boxes[1, 0], [0, 0, 16, 24])  # clipped at the crop's left edge
    # Skipped images are in no split; the same warnings come back from the cache, once each.
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        samples = make_sample_dataset(spec, "all", seed=0, workdir=work)
    assert sorted(samples.indices.tolist()) == [0, 1]
    assert sorted(str(w.message) for w in again) == sorted(messages)
    # --fill detect completes c and d with EdgeBoxes boxes, keeping the file's box first.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        filled_spec = replace(spec, box_fill="detect")
        filled = load_boxes(open_data(filled_spec), filled_spec, work)
    assert filled.usable_rows().all()
    np.testing.assert_array_equal(filled.boxes[2, 0], [16, 40, 28, 52])


def test_malformed_file_and_missing_file_are_one_line_errors(tmp_path: Path) -> None:
    folder = square_folder(tmp_path / "squares")
    with pytest.raises(KpbenchError, match="not found"):
        DataSpec(source=str(folder), boxes=str(tmp_path / "none.csv"))
    bad = write_csv(tmp_path / "bad.csv", "file,x,y,w,h\na.png,1,2,three,4\n")
    spec = DataSpec(source=str(folder), boxes=str(bad))
    with pytest.raises(KpbenchError, match="row 2 has a value that is not a number"):
        load_boxes(open_data(spec), spec, WorkDir.resolve(tmp_path / "work"))
    result = CliRunner().invoke(app, ["data", "prepare", str(folder), "--boxes", str(bad),
                                      "-w", str(tmp_path / "work")])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_one_number_changes_the_run_name_and_the_cache_key(tmp_path: Path) -> None:
    folder = square_folder(tmp_path / "squares")
    first = write_csv(tmp_path / "mine.csv", "a.png,20,10,15,15\n")
    spec = DataSpec(source=str(folder), boxes=str(first))
    name = run_name(TrainConfig(data=spec).to_dict())
    assert f"-boxes-mine.{spec.box_source.split('.')[1][:4]}-seed0" in name
    dataset = open_data(spec)
    key = file_box_cache_path(dataset, str(spec.boxes_id), 3, "skip", patch_params(spec), tmp_path)
    first.write_text("a.png,20,10,15,16\n")
    changed = DataSpec(source=str(folder), boxes=str(first))
    assert run_name(TrainConfig(data=changed).to_dict()) != name
    assert file_box_cache_path(dataset, str(changed.boxes_id), 3, "skip", patch_params(changed),
                               tmp_path) != key
    # The run's own spec (as stored) still names the old content: building its table now fails
    # with one line instead of using the edited file.
    with pytest.raises(KpbenchError, match="has changed since"):
        load_boxes(dataset, spec, WorkDir.resolve(tmp_path / "work"))
    # Where the file lives is not part of the identity.
    moved = tmp_path / "elsewhere" / "mine.csv"
    moved.parent.mkdir()
    moved.write_text(first.read_text())
    assert run_name(TrainConfig(data=changed.with_boxes(str(moved))).to_dict()) == run_name(
        TrainConfig(data=changed).to_dict())


def test_without_a_box_file_names_and_keys_are_unchanged() -> None:
    # Names and keys as they were before box files existed (runs in work dirs must keep them).
    assert run_name(TrainConfig().to_dict()) == "full-seed0"
    config = TrainConfig(variant="nomask", seed=2, width=0.25, batch_size=32,
                         data=DataSpec(source="/data/celeba_6k", preset="celeba"))
    assert run_name(config.to_dict(), "pytorch") == "nomask-data-celeba_6k.cdea-preset-celeba-w0.25-b32-seed2"
    config = TrainConfig(data=DataSpec(source="builtin:600", n_patches=5, split_seed=3),
                         patch_source="random", lr=1e-4, seed=1)
    assert run_name(config.to_dict()) == "full-builtin600-random-n5-xd67d440-x20a511-seed1"
    assert stable_hash(PATCH_PRESETS["celeba"].cache_key()) == "941fbf553a1e6ab4"
    assert DataSpec(boxes="edgeboxes", box_fill="detect") == DataSpec()
    # A config stored before box files existed reads back as the same spec.
    stored = {k: v for k, v in TrainConfig().to_dict()["data"].items()
              if k not in ("boxes", "boxes_id", "box_fill")}
    assert DataSpec(**stored) == DataSpec()


def test_box_cache_path_of_edgeboxes_is_unchanged(tmp_path: Path) -> None:
    dataset = open_data(DataSpec(source="builtin:16"))
    path = box_cache_path(dataset, PATCH_PRESETS["default"], tmp_path)
    assert path.name == f"{dataset.manifest.hash}-aeb766e3dde109b2.npz"


def test_compare_boxes_identical_and_shuffled(tmp_path: Path) -> None:
    folder = tmp_path / "noise"
    folder.mkdir()
    rng = np.random.default_rng(0)
    reference, shuffled = [], []
    names = [f"{k:02d}.png" for k in range(40)]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / name)
        for _ in range(3):
            w, h = rng.integers(10, 24, size=2)
            x, y = rng.integers(0, 64 - w), rng.integers(0, 64 - h)
            reference.append((name, x, y, w, h))
    order = rng.permutation(len(names))  # each image gets another image's boxes
    for position, name in enumerate(names):
        other = names[order[position]]
        shuffled += [(name, *row[1:]) for row in reference if row[0] == other]
    for path, rows in (("ref.csv", reference), ("shuffled.csv", shuffled)):
        (tmp_path / path).write_text("".join(",".join(map(str, row)) + "\n" for row in rows))

    def compare(candidate: str) -> list[str]:
        result = CliRunner().invoke(app, ["data", "compare-boxes", str(folder), "--reference",
                                          str(tmp_path / "ref.csv"), "--candidate", candidate,
                                          "-w", str(tmp_path / "work")], terminal_width=300)
        assert result.exit_code == 0, result.output
        return result.output.splitlines()

    def mean(line: str) -> float:
        return float(line.split("mean ")[1].split(",")[0])

    same = compare(str(tmp_path / "ref.csv"))
    assert "120 reference boxes" in same[0]
    assert mean(same[1]) == 1.0 and ">= 0.5: 100.0 %" in same[1]
    other = compare(str(tmp_path / "shuffled.csv"))
    assert abs(mean(other[1]) - mean(other[2])) < 0.08  # about the random floor
    assert mean(other[2]) < 0.35


def test_plan_box_sources_are_an_axis(tmp_path: Path) -> None:
    from kpbench.plan import load_plan

    boxes = write_csv(tmp_path / "mine.csv", "builtin/000000,4,4,20,20\n")
    plan = tmp_path / "plan.toml"
    plan.write_text(textwrap.dedent(f"""
        name = "boxes"
        [train]
        steps = 1
        [datasets.builtin]
        source = "builtin:16"
        [datasets.builtin.boxes]
        mine = "{boxes}"
        [[experiments]]
        name = "box-sources"
        variants = ["full"]
        boxes = ["edgeboxes", "mine"]
        """))
    loaded = load_plan(plan, tmp_path / "work")
    names = sorted(cell.name for cell in loaded.cells)
    tag = DataSpec(boxes=str(boxes)).box_source
    assert names == ["full-builtin16-boxes-mine." + tag.split(".")[1][:4] + "-seed0", "full-builtin16-seed0"]
    plan.write_text(plan.read_text().replace("[datasets.builtin.boxes]", 'box_fill = "detect"\n'
                                             "[datasets.builtin.boxes]"))
    filled = {cell.config.data.box_fill for cell in load_plan(plan, tmp_path / "work").cells}
    assert filled == {None, "detect"}  # the fill of the cells on the file; none for EdgeBoxes
    plan.write_text(plan.read_text().replace('"mine"]', '"theirs"]'))
    with pytest.raises(KpbenchError, match="no box source 'theirs'"):
        load_plan(plan, tmp_path / "work")


def test_eval_on_another_box_source_keeps_the_runs_own_rows(tmp_path: Path) -> None:
    import pandas as pd

    from kpbench.protocol import EvalOptions, evaluate
    from kpbench.train import train

    boxes = tmp_path / "fixed.csv"
    boxes.write_text("".join(f"builtin/{k:06d},{x},{y},64,64\n" for k in range(32)
                             for x, y in ((40, 60), (150, 60), (100, 150))))
    work = WorkDir.resolve(tmp_path / "work")
    run_dir = train(TrainConfig(data=DataSpec(source="builtin:32"), steps=1, width=0.0625, batch_size=4,
                                device="cpu", num_workers=0, progress=False, workdir=str(work.root)))
    options = EvalOptions(max_samples=4, batch_size=4, device="cpu")
    evaluate(work, ["patches"], options=options)
    own = pd.read_csv(run_dir / "results" / "patches.csv")
    evaluate(work, ["patches"], options=options, boxes=str(boxes))
    shift = "@" + "boxes-fixed." + DataSpec(boxes=str(boxes)).box_source.split(".")[1][:4]
    shifted = pd.read_csv(run_dir / "results" / f"patches{shift}.csv")
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "results" / "patches.csv"), own)
    assert all(condition.endswith(shift) for condition in shifted["condition"])
    assert sorted(c.removesuffix(shift) for c in shifted["condition"]) == sorted(own["condition"])
    # The run's own source named explicitly is a plain evaluation.
    evaluate(work, ["patches"], options=options, boxes="edgeboxes")
    assert sorted(path.name for path in (run_dir / "results").glob("patches*.csv")) == [
        "patches.csv", f"patches{shift}.csv"]
    # N = 4 and 5 from a file of 3 boxes per image: rows that say why, not a failed evaluation.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluate(work, ["num_patches"], options=options.with_settings(max_patches=4), boxes=str(boxes))
    counts = pd.read_csv(run_dir / "results" / f"num_patches{shift}.csv")
    four = counts[counts["condition"] == f"N=4{shift}"]
    assert len(four) and four["value"].isna().all() and four["note"].str.contains("has 4 boxes").all()
    assert counts[counts["condition"] == f"N=3{shift}"]["value"].notna().all()


def test_claims_are_judged_per_box_source(tmp_path: Path) -> None:
    import json

    import pandas as pd

    from kpbench.claims import realism_sentence
    from kpbench.report.aggregation import judge_claims_by_box_source, verdict_changes
    from kpbench.results import COLUMNS, read_rows

    runs = tmp_path / "runs"
    # Realism is decided on KID (lower is better): full wins on one source and loses on the other.
    kid = {("edgeboxes", "full"): 0.1, ("edgeboxes", "nomask"): 0.3,
           ("boxes-mine.1a2b", "full"): 0.3, ("boxes-mine.1a2b", "nomask"): 0.1}
    for (source, variant), value in kid.items():
        for seed in range(3):
            tags = [] if source == "edgeboxes" else [["data.boxes_id", source]]
            run = runs / f"{variant}-{source}-seed{seed}"
            (run / "results").mkdir(parents=True)
            (run / "config.json").write_text(json.dumps({"config": {"variant": variant, "seed": seed},
                                                         "tags": tags}))
            row = (variant, seed, "fid", "key patches", "kid", value + 0.002 * seed, 300, "inception", "",
                   value - 0.01, value + 0.01)
            pd.DataFrame([row], columns=list(COLUMNS)).to_csv(run / "results" / "fid.csv", index=False)
    judged = judge_claims_by_box_source(read_rows(runs), runs)
    assert sorted(judged) == ["boxes-mine.1a2b", "edgeboxes"]
    claim = realism_sentence("nomask")
    changes = verdict_changes(judged)
    assert changes.get(claim) == {"boxes-mine.1a2b": "fails", "edgeboxes": "holds"}, judged
    # The report shows the same check per source, and marks the claim whose verdict changes.
    from kpbench.report import build_report

    result = build_report(WorkDir.resolve(tmp_path), "sources", include_images=False)
    page = result.html.read_text()
    table = page[page.index('id="claims-by-source-table"'):]
    table = table[:table.index("</table>")]
    assert "boxes-mine.1a2b" in table and "edgeboxes" in table
    row = next(part for part in table.split("<tr>") if "realistic than nomask" in part)
    assert "fails" in row and "holds" in row and "<strong>changes</strong>" in row
    # A claim one source has no rows for (here: masks, from KID rows only) does not "change".
    masks = next(part for part in table.split("<tr>") if "Predicted masks beat" in part)
    assert "missing" in masks and "changes" not in masks
    markdown = result.markdown.read_text()
    assert "### The same claims per box source" in markdown and "**changes**" in markdown
    # Decided on one source, underpowered on another: fewer seeds there, not an opposite result.
    from kpbench.report.aggregation import BoxSourceVerdicts

    power = BoxSourceVerdicts(["a", "b"], {"c": {"a": ("fails", ""), "b": ("underpowered", "")}}, {})
    assert power.change("c") == "decided on some sources only"


def test_contact_sheet_marks_images_without_boxes(tmp_path: Path) -> None:
    folder = square_folder(tmp_path / "squares")
    boxes = write_csv(tmp_path / "boxes.csv", "a.png,20,10,15,15\nb.png,60,40,15,15\n")
    out = tmp_path / "sheet.png"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(app, ["data", "show", str(folder), "--patches", "1", "--boxes",
                                          str(boxes), "-o", str(out), "-w", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    assert out.is_file() and not caught  # the CLI shows each warning as one line
    assert "2 image(s) without boxes in the file: left out" in result.output


def test_prepare_says_where_file_boxes_came_from(tmp_path: Path) -> None:
    folder = square_folder(tmp_path / "squares")
    boxes = write_csv(tmp_path / "boxes.csv", "a.png,20,10,15,15\nb.png,60,40,15,15\n")
    common = ["data", "prepare", str(folder), "--patches", "1", "--boxes", str(boxes), "--workers", "1"]
    result = CliRunner().invoke(app, [*common, "-w", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    # Filters are never relaxed for a file's boxes: the line says where the boxes came from.
    assert "boxes from the file: 2 images" in result.output
    assert "relaxed filters" not in result.output
    filled = CliRunner().invoke(app, [*common, "--fill", "detect", "-w", str(tmp_path / "work2")])
    assert filled.exit_code == 0, filled.output
    assert "boxes from the file: 2 images; completed by the detector: 2" in filled.output
