"""The comparison report, built from hand-written rows: tables, best marks, intervals, baselines,
claims, training curves, aggregates, escaping."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from rich.console import Console

from kpbench.claims import KEY_VS_RANDOM_CLAIM, PRIOR_MASK_CLAIM, realism_sentence
from kpbench.errors import KpbenchError
from kpbench.paths import WorkDir
from kpbench.report import (
    ReportResult,
    aggregate,
    build_report,
    format_mean_std,
    numeric_axis,
    print_summary,
    variant_order,
)
from kpbench.results import ResultRow, read_rows, write_rows
from kpbench.stats import cell_interval

HOSTILE = "<script>alert(1)</script>"
HOSTILE_CONDITION = f"{HOSTILE} & friends"
KID_NOTE = f"Inception weights not found {HOSTILE} & more: pass --inception-weights PATH"
# A variant name can hold markup but no "/" (it names a folder).
HOSTILE_VARIANT = "v<img src=x onerror=alert(1)>&co"
INCEPTION = "inception-v3-compat"

# variant -> seed -> (key IoU, key appearance L1, random IoU, FID): full has the better IoU and
# L1, nomask the better (lower) FID.
VALUES: dict[str, dict[int, tuple[float, float, float, float]]] = {
    "full": {0: (0.70, 0.10, 0.40, 80.0), 1: (0.74, 0.12, 0.44, 90.0)},
    "nomask": {0: (0.50, 0.20, 0.45, 60.0), 1: (0.56, 0.22, 0.47, 64.0)},
}


def write_fixture_rows(workdir: WorkDir) -> None:
    for variant, seeds in VALUES.items():
        for seed, (iou, l1, random_iou, fid) in seeds.items():
            run = workdir.run_dir(variant, seed)
            write_rows(run, "patches", [
                ResultRow(variant, seed, "patches", "key", "mask_iou", iou, 64),
                ResultRow(variant, seed, "patches", "key", "appearance_l1", l1, 64),
                ResultRow(variant, seed, "patches", "random", "mask_iou", random_iou, 64),
                ResultRow(variant, seed, "patches", HOSTILE_CONDITION, "mask_iou", 0.3, 64),
            ])
            write_rows(run, "fid", [
                ResultRow(variant, seed, "fid", "key", "fid", fid, 500, INCEPTION, "N<2048: FID biased"),
                ResultRow(variant, seed, "fid", "key", "kid", math.nan, 500, INCEPTION, KID_NOTE),
            ])
            write_rows(run, "noise", [
                ResultRow(variant, seed, "noise", f"sigma={sigma}", "mask_iou", iou - sigma, 64)
                for sigma in (0.0, 0.1, 0.2)
            ])


@pytest.fixture
def workdir(tmp_path: Path) -> WorkDir:
    workdir = WorkDir.resolve(tmp_path / "work")
    write_fixture_rows(workdir)
    return workdir


@pytest.fixture
def report(workdir: WorkDir) -> ReportResult:
    return build_report(workdir, name="test")


class Page(HTMLParser):
    """Tables (rows of cells with attributes and text; nested tables are tables of their own) and
    every start tag, checking that non-void elements close in order."""

    VOID = {"meta", "br", "img", "hr", "link", "input", "wbr", "col", "source"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[dict[str, Any]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._open: list[str] = []
        self._tables: list[dict[str, Any]] = []  # open tables, innermost last
        self._cells: list[dict[str, Any]] = []  # open cells, innermost last
        self.feed(text)
        self.close()
        assert self._open == [], f"unclosed elements: {self._open}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, dict(attrs))
        if tag not in self.VOID:
            self._open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag, dict(attrs))

    def _start(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tags.append((tag, attrs))
        if tag == "table":
            self.tables.append({"attrs": attrs, "rows": []})
            self._tables.append(self.tables[-1])
        elif tag == "tr":
            self._tables[-1]["rows"].append({"attrs": attrs, "cells": []})
        elif tag in ("td", "th"):
            self._cells.append({"tag": tag, "attrs": attrs, "text": ""})
            self._tables[-1]["rows"][-1]["cells"].append(self._cells[-1])

    def handle_endtag(self, tag: str) -> None:
        assert self._open and self._open[-1] == tag, f"</{tag}> closes {self._open[-1:]}"
        self._open.pop()
        if tag in ("td", "th"):
            self._cells.pop()
        elif tag == "table":
            self._tables.pop()

    def handle_data(self, data: str) -> None:
        if self._cells:
            self._cells[-1]["text"] += data

    def table(self, table_id: str) -> dict[str, Any]:
        return next(t for t in self.tables if t["attrs"].get("id") == table_id)


def value_cells(table: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(row variant, cell) for every cell that carries a value."""
    return [
        (row["attrs"]["data-variant"], cell)
        for row in table["rows"]
        for cell in row["cells"]
        if "data-mean" in cell["attrs"]
    ]


def test_writes_three_files_and_one_self_contained_page(report: ReportResult) -> None:
    assert report.html.parent == report.directory == report.csv.parent == report.markdown.parent
    page_text = report.html.read_text(encoding="utf-8")
    page = Page(page_text)
    tags = {tag for tag, _ in page.tags}
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page_text)
    protocol_tables = [t for t in page.tables if "protocol" in (t["attrs"].get("class") or "")]
    assert len(protocol_tables) == 3  # patches, fid, noise
    headings = [cell["text"] for t in protocol_tables for cell in t["rows"][0]["cells"]]
    assert {"mask IoU ↑", "appearance L1 ↓", "FID ↓1", "KID ↓"} <= set(headings)  # 1: a note
    markdown = report.markdown.read_text(encoding="utf-8")
    assert "## patches" in markdown and "## fid" in markdown and "## noise" in markdown


PRIOR_MASK = "baseline:prior_mask"
# Three seeds each, close together: variant -> metric -> per-seed values (bootstrap bounds +-0.02
# for per-sample metrics). full and nomask are separated on IoU, appearance L1 and FID, overlap
# on SSIM; kid_std differs but has no direction; the prior mask has the highest IoU of all.
SEPARATED: dict[str, dict[str, tuple[float, float, float]]] = {
    "full": {"mask_iou": (0.70, 0.71, 0.72), "appearance_l1": (0.10, 0.11, 0.12),
             "ssim": (0.60, 0.61, 0.62), "fid": (80.0, 81.0, 82.0), "kid_std": (0.01, 0.01, 0.01)},
    "nomask": {"mask_iou": (0.50, 0.51, 0.52), "appearance_l1": (0.20, 0.21, 0.22),
               "ssim": (0.605, 0.615, 0.625), "fid": (60.0, 61.0, 62.0), "kid_std": (0.02, 0.02, 0.02)},
    PRIOR_MASK: {"mask_iou": (0.95, 0.95, 0.95)},
}


def write_separated_rows(workdir: WorkDir) -> None:
    for variant, metrics in SEPARATED.items():
        for seed in range(3):
            # A baseline's rows live in the run that measured it (here the full model's).
            run = workdir.run_dir("full" if variant == PRIOR_MASK else variant, seed)
            rows = [
                ResultRow(variant, seed, "fid" if metric.startswith(("fid", "kid")) else "patches",
                          "key", metric, values[seed], 64,
                          INCEPTION if metric.startswith(("fid", "kid")) else "",
                          ci_low=math.nan if metric.startswith(("fid", "kid")) else values[seed] - 0.02,
                          ci_high=math.nan if metric.startswith(("fid", "kid")) else values[seed] + 0.02)
                for metric, values in metrics.items()
            ]
            name = "baselines" if variant == PRIOR_MASK else "all"
            write_rows(run, name, rows)


@pytest.fixture
def separated_report(tmp_path: Path) -> ReportResult:
    workdir = WorkDir.resolve(tmp_path / "separated")
    write_separated_rows(workdir)
    return build_report(workdir, name="separated")


def best_marks(report: ReportResult) -> set[tuple[str, str]]:
    return {(row.metric, row.variant) for row in report.summary.itertuples() if row.best}


def test_best_is_marked_only_where_intervals_are_separated(separated_report: ReportResult) -> None:
    # Higher IoU wins, lower appearance error wins, lower FID wins (its interval comes from the
    # seeds alone); SSIM intervals overlap; kid_std has no direction; the prior mask's higher
    # IoU does not count: baselines are floors, never best and never competitors.
    summary = separated_report.summary
    expected = {("mask_iou", "full"), ("appearance_l1", "full"), ("fid", "nomask")}
    assert best_marks(separated_report) == expected
    assert not summary.loc[summary["variant"] == PRIOR_MASK, "best"].any()
    stats = aggregate(read_rows(separated_report.directory.parent.parent / "runs"))
    assert not stats.loc[stats["metric"] == "kid_std", "best"].any()
    assert not stats.loc[stats["metric"] == "ssim", "best"].any()
    page = Page(separated_report.html.read_text(encoding="utf-8"))
    marked = {
        (cell["attrs"]["data-column"], variant)
        for variant, cell in value_cells(page.table("summary-table"))
        if "best" in (cell["attrs"].get("class") or "").split()
    }
    assert marked == {
        ("patches/key/mask_iou/", "full"),
        ("patches/key/appearance_l1/", "full"),
        (f"fid/key/fid/{INCEPTION}", "nomask"),
    }
    for table in page.tables:  # no protocol table marks SSIM or KID std either
        for variant, cell in value_cells(table):
            if "best" in (cell["attrs"].get("class") or "").split():
                column = cell["attrs"]["data-column"]  # summary: a key; protocol table: the metric
                metric = column.split("/")[2] if "/" in column else column
                assert metric not in {"ssim", "kid_std"} and variant != PRIOR_MASK
    markdown = separated_report.markdown.read_text(encoding="utf-8")
    assert "**0.710 ± 0.010**" in markdown and "**0.610 ± 0.010**" not in markdown


def test_two_seeds_with_overlapping_intervals_get_no_mark(report: ReportResult) -> None:
    # The base fixture has two seeds and no bootstrap intervals: the t-interval over two seeds
    # is wide, full and nomask overlap everywhere, so nothing is best.
    assert best_marks(report) == set()
    page = Page(report.html.read_text(encoding="utf-8"))
    assert not any("best" in (cell["attrs"].get("class") or "").split()
                   for table in page.tables for _, cell in value_cells(table))


def test_baselines_come_last_and_are_marked_as_floors(separated_report: ReportResult) -> None:
    assert variant_order(["baseline:nearest_neighbour", "zeta", PRIOR_MASK, "nomask", "full"]) == [
        "full", "nomask", "zeta", PRIOR_MASK, "baseline:nearest_neighbour",
    ]
    summary = separated_report.summary
    assert list(dict.fromkeys(summary["variant"])) == ["full", "nomask", PRIOR_MASK]
    page = Page(separated_report.html.read_text(encoding="utf-8"))
    protocol_tables = [t for t in page.tables if "protocol" in (t["attrs"].get("class") or "")]
    for table in (page.table("summary-table"), *protocol_tables):
        variants = [row["attrs"]["data-variant"] for row in table["rows"] if "data-variant" in row["attrs"]]
        if PRIOR_MASK not in variants:
            continue
        assert variants[-1] == PRIOR_MASK
        floor = next(row for row in table["rows"] if row["attrs"].get("data-variant") == PRIOR_MASK)
        assert "baseline" in floor["attrs"]["class"].split()
        assert any(cell["text"] == "prior mask (floor)" for cell in floor["cells"])
    markdown = separated_report.markdown.read_text(encoding="utf-8")
    assert "| *prior mask (floor)* |" in markdown
    console = Console(record=True, width=240)
    print_summary(summary, console)
    assert "prior mask (floor)" in console.export_text()


def test_intervals_in_html_markdown_and_terminal(report: ReportResult) -> None:
    expected = cell_interval([0.70, 0.74], [math.nan] * 2, [math.nan] * 2)  # full, key mask IoU
    interval = f"[{expected.low:.3f}, {expected.high:.3f}]"
    page_text = report.html.read_text(encoding="utf-8")
    page = Page(page_text)
    cell = next(c for v, c in value_cells(page.table("summary-table"))
                if v == "full" and c["attrs"]["data-column"] == "patches/key/mask_iou/")
    assert float(cell["attrs"]["data-low"]) == pytest.approx(expected.low)
    assert float(cell["attrs"]["data-high"]) == pytest.approx(expected.high)
    assert cell["text"] == f"0.720 ± 0.028{interval}"
    assert "hierarchical bootstrap over seeds, then test images" in page_text  # the page says what it is
    markdown = report.markdown.read_text(encoding="utf-8")
    assert f"| 0.720 ± 0.028 {interval} |" in markdown
    console = Console(record=True, width=240)
    print_summary(report.summary, console)
    assert interval in console.export_text()  # as on the page, with its space
    # One seed: the rows' bootstrap bounds are the interval; FID from one seed has none.
    single = aggregate(pd.DataFrame([
        {"variant": "full", "seed": 0, "protocol": "patches", "condition": "key", "metric": "ssim",
         "value": 0.597, "n": 64, "extractor": "", "note": "", "ci_low": 0.58, "ci_high": 0.61},
        {"variant": "full", "seed": 0, "protocol": "fid", "condition": "key", "metric": "fid",
         "value": 31.0, "n": 64, "extractor": INCEPTION, "note": "", "ci_low": math.nan, "ci_high": math.nan},
    ])).set_index("metric")
    assert (single.loc["ssim", "low"], single.loc["ssim", "high"]) == (0.58, 0.61)
    assert math.isnan(single.loc["fid", "low"]) and math.isnan(single.loc["fid", "high"])


def test_mean_and_spread_over_seeds(report: ReportResult) -> None:
    summary = report.summary.set_index(["metric", "variant"])
    iou = summary.loc[("mask_iou", "full")]
    assert iou["mean"] == pytest.approx(0.72)
    assert iou["std"] == pytest.approx(np.std([0.70, 0.74], ddof=1))
    assert iou["seeds"] == iou["valued"] == 2 and iou["n_min"] == iou["n_max"] == 64
    assert iou["text"] == "0.720 ± 0.028"
    assert summary.loc[("mask_iou", "nomask"), "text"] == "0.530 ± 0.042"
    assert summary.loc[("fid", "full"), "text"] == "85.0 ± 7.1"
    assert summary.loc[("fid", "nomask"), "text"] == "62.0 ± 2.8"
    page = Page(report.html.read_text(encoding="utf-8"))
    texts = {
        (cell["attrs"]["data-column"], variant): cell["text"]
        for variant, cell in value_cells(page.table("summary-table"))
    }
    assert texts["patches/key/mask_iou/", "full"].startswith("0.720 ± 0.028[")  # then the interval
    assert texts[f"fid/key/fid/{INCEPTION}", "nomask"].startswith("62.0 ± 2.8")


def test_format_mean_std() -> None:
    assert format_mean_std(0.73412, 0.01234) == "0.734 ± 0.012"
    assert format_mean_std(45.2, 12.3) == "45 ± 12"
    assert format_mean_std(0.5, math.nan) == "0.5"
    assert format_mean_std(math.nan, math.nan) == "n/a"
    assert format_mean_std(0.72, 0.0283, decimals=3) == "0.720 ± 0.028"


def test_summary_numbers_equal_the_csv_aggregates(report: ReportResult) -> None:
    rows = pd.read_csv(report.csv, keep_default_na=False, na_values={"value": ["", "nan"]})
    keys = ["protocol", "condition", "extractor", "metric", "variant"]
    expected = rows.groupby(keys)["value"].agg(["mean", "std", "count"])
    columns = {
        row.column: (row.protocol, row.condition, row.extractor, row.metric)
        for row in report.summary.itertuples()
    }
    page = Page(report.html.read_text(encoding="utf-8"))
    cells = value_cells(page.table("summary-table"))
    assert len(cells) == 2 * 4  # 2 variants x (IoU, appearance L1, FID, KID)
    for variant, cell in cells:
        protocol, condition, extractor, metric = columns[cell["attrs"]["data-column"]]
        mean, std, count = expected.loc[(protocol, condition, extractor, metric, variant)]
        shown_mean, shown_std = float(cell["attrs"]["data-mean"]), float(cell["attrs"]["data-std"])
        assert int(cell["attrs"]["data-seeds"]) == count
        if count == 0:
            assert math.isnan(shown_mean) and cell["text"].startswith("n/a")
            continue
        assert shown_mean == pytest.approx(mean, rel=1e-12)
        assert shown_std == pytest.approx(std, rel=1e-12)
        numbers = [float(x) for x in re.findall(r"\d+\.?\d*", cell["text"].split("n=")[0])]
        decimals = len(cell["text"].split(" ± ")[0].partition(".")[2])
        assert numbers[0] == pytest.approx(mean, abs=0.51 * 10**-decimals)
        assert numbers[1] == pytest.approx(std, abs=0.51 * 10**-decimals)


def test_nan_value_shows_its_note_not_a_number(report: ReportResult) -> None:
    page_text = report.html.read_text(encoding="utf-8")
    page = Page(page_text)
    kid_cells = [
        cell for _, cell in value_cells(page.table("summary-table"))
        if cell["attrs"]["data-column"].startswith("fid/key/kid/")
    ]
    assert len(kid_cells) == 2
    for cell in kid_cells:
        assert cell["text"].startswith("n/a") and "nan" not in cell["text"].lower().replace("n/a", "")
        assert "missing" in cell["attrs"]["class"].split()
    escaped_note = "Inception weights not found &lt;script&gt;alert(1)&lt;/script&gt; &amp; more"
    assert escaped_note in page_text
    # A note on every value of a column is referenced once, from its heading.
    fid_heading = next(
        cell for cell in page.table("summary-table")["rows"][0]["cells"]
        if cell["attrs"].get("data-column", "").startswith("fid/key/fid/")
    )
    assert fid_heading["text"].startswith("FID ↓1")
    assert "N&lt;2048: FID biased" in page_text
    markdown = report.markdown.read_text(encoding="utf-8")
    assert "pass --inception-weights PATH" in markdown
    assert re.search(r"\| n/a \[\d\] \|", markdown)


def test_strings_from_data_are_escaped(workdir: WorkDir) -> None:
    run = workdir.run_dir(HOSTILE_VARIANT, 0)
    row = ResultRow(HOSTILE_VARIANT, 0, "patches", "key", "mask_iou", 0.1, 8, note=HOSTILE)
    floor = ResultRow(f"baseline:{HOSTILE}", 0, "patches", "key", "mask_iou", 0.2, 8, note=HOSTILE)
    write_rows(run, "patches", [row, floor])
    # An extractor name reaches the claims' reasons; a log message and run name the training curves.
    for variant in ("full", "nomask"):
        write_rows(workdir.run_dir(variant, 0), "fid-hostile", [
            ResultRow(variant, 0, "fid", "key patches", "fid", 30.0, 500, HOSTILE),
            ResultRow(variant, 0, "fid", "key patches", "kid", 0.02, 500, HOSTILE, ci_low=0.01, ci_high=0.03),
        ])
    write_log(run, [diagnostics_entry(10, 0.3, 800.0), diagnostics_entry(20, 0.2, 900.0),
                    {"event": "mask-collapse-warning", "step": 20, "message": HOSTILE}])
    (run / "spec.json").write_text(json.dumps({"name": HOSTILE_VARIANT, "loss": HOSTILE}))
    (workdir.run_dir("full", 0) / "spec.json").write_text(json.dumps({"name": "full", "loss": "l1 & gan"}))
    grid = run / "results" / "patches" / "a<b>&c.png"
    grid.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "red").save(grid, format="PNG")
    report = build_report(workdir, name="hostile", title=f"title {HOSTILE}")
    page_text = report.html.read_text(encoding="utf-8")
    page = Page(page_text)
    assert HOSTILE not in page_text and "<img src=x" not in page_text and "a<b>" not in page_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; friends" in page_text  # the condition
    assert "v&lt;img src=x onerror=alert(1)&gt;&amp;co" in page_text  # the variant
    assert "a&lt;b&gt;&amp;c.png" in page_text  # the image's file name
    assert "l1 &amp; gan" in page_text  # a spec value
    for tag, attrs in page.tags:
        assert tag != "script"
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    assert any(tag == "img" and (attrs.get("src") or "").startswith("data:image/png;base64,")
               for tag, attrs in page.tags)
    assert "mask IoU ↑" in section(page_text, "training-curves")  # the hostile run's curves
    assert "KID (&lt;script&gt;alert(1)&lt;/script&gt;)" in section(page_text, "claims")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; <span class=\"floor\">(floor)</span>" in page_text
    markdown = report.markdown.read_text(encoding="utf-8")
    assert HOSTILE not in markdown and "<img" not in markdown
    assert "KID (&lt;script&gt;alert(1)&lt;/script&gt;)" in markdown


def test_plots_images_specs_and_provenance(workdir: WorkDir) -> None:
    for variant, spec in (("full", {"mask_decoder": True}), ("nomask", {"mask_decoder": False})):
        run = workdir.run_dir(variant, 0)
        (run / "spec.json").write_text(json.dumps({"name": variant, "decoders": spec}))
        (run / "config.json").write_text(json.dumps({"seed": 0, "size": 64, "steps": 10, "amp": "auto"}))
        sessions = ["bf16", "bf16"] if variant == "full" else ["bf16", "off"]  # start, then a resume
        (run / "log.jsonl").write_text("".join(
            json.dumps({"event": event, "step": 5 * k, "amp": amp}) + "\n"
            for k, (event, amp) in enumerate(zip(("start", "resume"), sessions))))
        (run / "samples").mkdir(parents=True, exist_ok=True)
        for step in (2, 10):
            Image.new("RGB", (16, 16), "blue").save(run / "samples" / f"step_{step}.png")
        provenance = {"dataset_manifest": "cafe1234", "device": "cpu", "packages": {"torch": "2.14.1"}}
        (run / "results" / "provenance.json").write_text(json.dumps(provenance))
    report = build_report(workdir)
    page_text = report.html.read_text(encoding="utf-8")
    assert page_text.count("<svg") >= 1 and "<polyline" in page_text  # noise: sigma vs IoU
    assert "samples/step_10.png" in page_text and "samples/step_2.png" not in page_text
    assert "decoders.mask_decoder" in page_text and "cafe1234" in page_text
    assert "packages.torch" in page_text
    configuration = section(page_text, "configuration")
    assert "amp (used)" in configuration
    rows = {name: row for row in configuration.split("<tr>") for name in ("full-seed0", "nomask-seed0")
            if f">{name}<" in row}
    assert ">bf16<" in rows["full-seed0"]  # bf16 in both sessions
    assert ">bf16 then off<" in rows["nomask-seed0"]  # resumed in float32
    without_images = build_report(workdir, name="no-images", include_images=False)
    assert "data:image" not in without_images.html.read_text(encoding="utf-8")


def test_numeric_axis_parses_conditions() -> None:
    conditions = ["sigma=0.2, patches=one", "sigma=0.1, patches=one", "sigma=0.1, patches=all", "clean"]
    axis = numeric_axis(conditions)
    assert axis is not None and axis.key == "sigma"
    assert axis.x["sigma=0.2, patches=one"] == 0.2
    assert axis.series["sigma=0.1, patches=all"] == "patches=all"
    assert axis.sort(["sigma=0.2, patches=one", "clean", "sigma=0.1, patches=one"]) == [
        "clean", "sigma=0.1, patches=one", "sigma=0.2, patches=one",
    ]
    assert numeric_axis(["N=1", "N=3"]).key == "N"
    assert numeric_axis(["key", "random"]) is None
    assert numeric_axis(["N=3"]) is None


def test_print_summary_in_the_terminal(report: ReportResult) -> None:
    console = Console(record=True, width=240)
    print_summary(report.summary, console)
    text = console.export_text()
    assert "0.720 ± 0.028" in text and "62.0 ± 2.8" in text
    assert "pass --inception-weights PATH" in text


def test_no_rows_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(KpbenchError, match="kpbench eval"):
        build_report(WorkDir.resolve(tmp_path))


def test_report_name_must_be_a_folder_name(workdir: WorkDir) -> None:
    with pytest.raises(KpbenchError, match="folder name"):
        build_report(workdir, name="../elsewhere")


def test_extractors_get_their_own_tables_only_where_a_condition_mixes_them(workdir: WorkDir) -> None:
    for variant in VALUES:
        run = workdir.run_dir(variant, 0)
        write_rows(run, "classification", [  # the features are the condition: one table
            ResultRow(variant, 0, "classification", name, "accuracy", accuracy, 100, name)
            for name, accuracy in (("encoder:trained", 0.8), ("raw_pixels", 0.4))
        ])
        write_rows(run, "fid", [  # one condition under two extractors: never in one table
            ResultRow(variant, 0, "fid", "key", "fid", 50.0, 500, extractor)
            for extractor in (INCEPTION, "small-cnn")
        ])
    page_text = build_report(workdir).html.read_text(encoding="utf-8")
    classification = page_text.split('<section id="p2-classification">')[1].split("</section>")[0]
    assert classification.count("<table") == 1 and "Features:" not in classification
    fid = page_text.split('<section id="p1-fid">')[1].split("</section>")[0]
    assert fid.count("<table") == 2
    assert f"Features: {INCEPTION}" in fid and "Features: small-cnn" in fid


# --- claims -------------------------------------------------------------------------------------


def claims_rows(table: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """claim -> (verdict text, row attributes) of the claims table."""
    return {row["cells"][1]["text"]: (row["cells"][2]["text"], row["attrs"]) for row in table["rows"][1:]}


def test_claims_section_shows_verdicts_computed_from_rows(separated_report: ReportResult) -> None:
    page_text = separated_report.html.read_text(encoding="utf-8")
    page = Page(page_text)
    claims = claims_rows(page.table("claims-table"))
    # full 0.71 [0.685, 0.735] vs prior mask 0.95 [0.93, 0.97]: the predicted masks are worse.
    verdict, attrs = claims[PRIOR_MASK_CLAIM]
    assert verdict == "✗ fails" and attrs["data-verdict"] == "fails"
    # full vs nomask: better IoU and appearance L1 do not decide realism; without KID rows the
    # claim is missing, not held.
    verdict, _ = claims[realism_sentence("nomask")]
    assert verdict == "– missing"
    assert claims[KEY_VS_RANDOM_CLAIM][0] == "– missing"  # no random rows
    assert page_text.index('id="claims"') < page_text.index('id="p0-patches"')  # near the top
    assert "<details><summary>Evidence (1 tests)</summary>" in page_text
    claims_section = section(page_text, "claims")
    assert '<td class="primary">mask IoU (higher than the stronger floor)</td>' in claims_section
    assert "mask IoU full 0.710 vs prior mask 0.950: -0.240 [" in claims_section
    markdown = separated_report.markdown.read_text(encoding="utf-8")
    assert "## Paper's claims" in markdown
    assert f"| {PRIOR_MASK_CLAIM} | ✗ fails | mask IoU (higher than the stronger floor) |" in markdown
    assert "(primary): mask IoU: full - prior mask: -0.240 [" in markdown


def test_claims_holds_when_the_full_model_beats_the_prior_mask(tmp_path: Path) -> None:
    workdir = WorkDir.resolve(tmp_path / "holds")
    write_rows(workdir.run_dir("full", 0), "patches", [
        ResultRow("full", 0, "patches", "key", "mask_iou", 0.62, 64, ci_low=0.60, ci_high=0.64),
        ResultRow(PRIOR_MASK, 0, "patches", "key", "mask_iou", 0.41, 64, ci_low=0.40, ci_high=0.42),
    ])
    report = build_report(workdir, name="holds")
    claims = claims_rows(Page(report.html.read_text(encoding="utf-8")).table("claims-table"))
    assert claims[PRIOR_MASK_CLAIM][0] == "✓ holds"


# --- training curves ----------------------------------------------------------------------------


def diagnostics_entry(step: int, iou: float, spatial: float) -> dict[str, Any]:
    return {"event": "diagnostics", "step": step, "epoch": 0, "samples": 64, "diagnostics": {
        "mask_iou": iou, "prior_mask_iou": 0.45, "mask_coverage": 0.3, "true_coverage": 0.3,
        "spatial_l1": spatial, "spatial_l1_empty": 1200.0, "spatial_l1_prior": 700.0,
        "appearance_l1": 2000.0 - step,
    }}


def write_log(run: Path, entries: list[Any]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "log.jsonl").write_text("".join(
        (entry if isinstance(entry, str) else json.dumps(entry)) + "\n" for entry in entries
    ))


def section(page_text: str, anchor: str) -> str:
    return page_text.split(f'<section id="{anchor}">')[1].split("</section>")[0]


def test_training_curves_from_logged_diagnostics(workdir: WorkDir) -> None:
    losses = {"step": 10, "epoch": 0, "lambda": 0.6, "losses": {"g/total": 3.0}}
    for seed in (0, 1):
        write_log(workdir.run_dir("full", seed), [
            {"event": "start", "step": 0}, losses,
            *(diagnostics_entry(step, 0.2 + step / 100 + seed / 50, 900.0 - step) for step in (10, 20, 30)),
        ])
    write_log(workdir.run_dir("nomask", 0), [
        losses, "not json {", {"event": "mask-collapse-warning", "step": 30, "message": "masks collapsed"},
    ])
    page_text = build_report(workdir).html.read_text(encoding="utf-8")
    Page(page_text)
    curves = section(page_text, "training-curves")
    full = curves.split("<h3>full</h3>")[1].split("<h3>")[0]
    # IoU, spatial L1, appearance L1: a line per seed, plus one reference in IoU and two in L1.
    assert full.count("<svg xmlns") == 3
    assert full.count("<polyline") == 2 + 1 + 2 + 2 + 2
    assert "<title>full-seed0</title>" in full and "<title>full-seed1</title>" in full
    assert "<title>prior mask</title>" in full and "<title>empty mask</title>" in full
    nomask = curves.split("<h3>nomask</h3>")[1]
    assert "<svg xmlns" not in nomask.split('<div class="callout">')[0]
    assert "No diagnostics in its log" in nomask and "masks collapsed" in nomask and "step 30" in nomask
    assert "1 lines that are not JSON objects skipped" in section(page_text, "provenance")


def test_training_curves_absent_without_logs_and_graceful_without_diagnostics(
    workdir: WorkDir, report: ReportResult,
) -> None:
    assert 'id="training-curves"' not in report.html.read_text(encoding="utf-8")
    write_log(workdir.run_dir("full", 0), [{"step": 10, "losses": {"g/total": 3.0}}])  # an old run
    page_text = build_report(workdir, name="old-logs").html.read_text(encoding="utf-8")
    curves = section(page_text, "training-curves")
    assert "No run logged diagnostics" in curves and "<svg" not in curves


# --- images -------------------------------------------------------------------------------------


def test_memorisation_grid_is_shown_with_its_caption(workdir: WorkDir) -> None:
    folder = workdir.run_dir("full", 0) / "results" / "patches"
    folder.mkdir(parents=True, exist_ok=True)
    for stem in ("random", "memorisation", "key"):
        Image.new("RGB", (8, 4), "green").save(folder / f"{stem}.png")
    images = section(build_report(workdir).html.read_text(encoding="utf-8"), "images")
    headings = re.findall(r"<h4>([^<]*)</h4>", images)
    assert headings == ["patches · key", "patches · random", "patches · memorisation"]
    memorisation = images.split("<h4>patches · memorisation</h4>")[1]
    assert "nearest training image in 16x16 pixels" in memorisation.split("<img")[0]
    assert "memorisation.png" in memorisation
