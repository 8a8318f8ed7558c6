"""The report package's parts on their own: aggregation on small frames, the SVG plots' ticks and
ranges, the templates' escaping, and the package files an installed wheel needs."""

from __future__ import annotations

import math
import re
import tomllib
from importlib import resources
from pathlib import Path
from xml.etree import ElementTree

import pandas as pd
import pytest

from kpbench.paths import WorkDir
from kpbench.report import build_report
from kpbench.report.aggregation import (
    aggregate,
    best_flags,
    extractor_tables,
    numeric_axis,
    own_notes,
    protocol_grid,
    shared_notes,
    summary_table,
)
from kpbench.report.plots import PlotLine, nice_ticks, plot_frame, svg_line_plot, tick_labels
from kpbench.results import ResultRow, write_rows

ROOT = Path(__file__).resolve().parents[1]
NAN = math.nan


def frame(*rows: tuple) -> pd.DataFrame:
    """Rows of (variant, seed, condition, metric, value[, note[, extractor]]) under protocol "p"."""
    records = []
    for row in rows:
        variant, seed, condition, metric, value, *rest = row
        note = rest[0] if rest else ""
        extractor = rest[1] if len(rest) > 1 else ""
        records.append({"protocol": "p", "condition": condition, "extractor": extractor, "metric": metric,
                        "variant": variant, "seed": seed, "value": value, "n": 10, "note": note})
    return pd.DataFrame.from_records(records)


def cell(stats: pd.DataFrame, variant: str, metric: str = "mask_iou", condition: str = "key") -> pd.Series:
    found = stats[(stats["variant"] == variant) & (stats["metric"] == metric)
                  & (stats["condition"] == condition)]
    assert len(found) == 1
    return found.iloc[0]


# --------------------------------------------------------------------------- aggregation


def test_aggregate_averages_duplicates_per_seed_then_over_seeds() -> None:
    rows = frame(("full", 0, "key", "mask_iou", 0.6), ("full", 0, "key", "mask_iou", 0.8),
                 ("full", 1, "key", "mask_iou", 0.9), ("full", 2, "key", "mask_iou", NAN, "no weights"))
    stats = aggregate(rows)
    full = cell(stats, "full")
    assert full["mean"] == pytest.approx(0.8)  # seed 0: (0.6 + 0.8) / 2, seed 1: 0.9
    assert full["std"] == pytest.approx(math.sqrt(0.02))  # sample std of 0.7 and 0.9
    assert (full["seeds"], full["valued"]) == (3, 2)
    assert full["low"] < 0.8 < full["high"]  # t-interval over the two valued seeds
    assert full["notes"] == "no weights" and not full["best"]


def test_one_seed_has_no_spread_and_no_interval_without_bounds() -> None:
    full = cell(aggregate(frame(("full", 0, "key", "mask_iou", 0.5))), "full")
    assert full["mean"] == 0.5 and math.isnan(full["std"]) and math.isnan(full["low"])


def separated_rows(full: tuple[float, ...], nomask: tuple[float, ...],
                   metric: str = "mask_iou") -> pd.DataFrame:
    return frame(*[("full", s, "key", metric, v) for s, v in enumerate(full)],
                 *[("nomask", s, "key", metric, v) for s, v in enumerate(nomask)],
                 *[("baseline:prior_mask", s, "key", metric, 0.99) for s in range(len(full))])


def test_best_needs_a_direction_a_lead_and_separated_intervals() -> None:
    stats = aggregate(separated_rows((0.80, 0.81, 0.82), (0.50, 0.51, 0.52)))
    # The baseline has the highest mean but is never ranked.
    assert list(stats.loc[stats["best"], "variant"]) == ["full"]
    overlapping = aggregate(separated_rows((0.80, 0.60, 0.70), (0.50, 0.71, 0.52)))
    assert not overlapping["best"].any()
    undirected = aggregate(separated_rows((0.80, 0.81, 0.82), (0.50, 0.51, 0.52), metric="kid_std"))
    assert not undirected["best"].any()
    lower = aggregate(separated_rows((80.0, 81.0, 82.0), (50.0, 51.0, 52.0), metric="fid"))
    assert list(lower.loc[lower["best"], "variant"]) == ["nomask"]
    assert best_flags(lower).equals(lower["best"])


def test_summary_table_text_shares_decimals_per_column() -> None:
    summary = summary_table(separated_rows((0.80, 0.81, 0.82), (0.50, 0.51, 0.52)))
    assert list(summary["variant"]) == ["full", "nomask", "baseline:prior_mask"]
    assert list(summary["text"]) == ["0.810 ± 0.010", "0.510 ± 0.010", "0.990 ± 0.000"]
    assert summary["interval"].iloc[0] == "[0.785, 0.835]"
    assert list(summary["best"]) == [True, False, False]


def test_shared_notes_go_to_the_heading_and_missing_values_keep_theirs() -> None:
    stats = aggregate(frame(("full", 0, "key", "fid", 3.0, "biased"),
                            ("nomask", 0, "key", "fid", 4.0, "biased"),
                            ("cgan", 0, "key", "fid", NAN, "biased")))
    column = stats[stats["metric"] == "fid"]
    assert shared_notes(column) == "biased"
    assert own_notes(cell(stats, "full", "fid"), "biased") == ""
    assert own_notes(cell(stats, "cgan", "fid"), "biased") == "biased"


def test_extractor_tables_split_only_where_a_condition_mixes_extractors() -> None:
    one = aggregate(frame(("full", 0, "key", "fid", 3.0, "", "inception"),
                          ("full", 0, "random", "fid", 4.0, "", "dino")))
    assert [extractor for extractor, _ in extractor_tables(one)] == [""]
    mixed = aggregate(frame(("full", 0, "key", "fid", 3.0, "", "inception"),
                            ("full", 0, "key", "fid", 4.0, "", "dino")))
    assert [extractor for extractor, _ in extractor_tables(mixed)] == ["inception", "dino"]


def test_protocol_grid_orders_conditions_along_the_axis_and_variants_as_given() -> None:
    stats = aggregate(frame(*[(v, 0, f"sigma={s}", "mask_iou", 0.5) for s in (0.2, 0.0, 0.1)
                              for v in ("nomask", "full")], ("full", 0, "clean", "mask_iou", 0.9)))
    conditions = list(dict.fromkeys(stats["condition"]))
    grid = protocol_grid(stats, ["full", "nomask"], numeric_axis(conditions))
    assert [condition for condition, _ in grid.groups] == ["clean", "sigma=0.0", "sigma=0.1", "sigma=0.2"]
    assert [variant for variant, _ in grid.groups[1][1]] == ["full", "nomask"]
    assert grid.metrics == ["mask_iou"] and grid.decimals["mask_iou"] == 3


# --------------------------------------------------------------------------- plots


@pytest.mark.parametrize("value", [0.0, -3.0, 5.0, 1234.5, -0.001])
def test_ticks_of_constant_data_bracket_the_value(value: float) -> None:
    ticks = nice_ticks(value, value)
    assert len(ticks) >= 2 and ticks[0] < value < ticks[-1]
    assert len(set(tick_labels(ticks))) == len(ticks)


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 1.0), (-1.0, 0.0), (-7.3, -2.1), (-0.5, 0.25), (0.0, 1e-5),
                                        (997.0, 1003.0)])
def test_ticks_cover_the_range_with_round_even_steps(lo: float, hi: float) -> None:
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and 3 <= len(ticks) <= 7
    steps = {round(b - a, 12) for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1
    mantissa = next(iter(steps)) / 10 ** math.floor(math.log10(next(iter(steps))))
    assert round(mantissa, 9) in {1, 2, 2.5, 5}
    labels = tick_labels(ticks)
    assert len(set(labels)) == len(ticks) and "-0" not in [label.rstrip(".0") for label in labels]
    assert all(float(label) == pytest.approx(tick, abs=1e-12) for label, tick in zip(labels, ticks))


def test_tick_labels_show_the_decimals_the_spacing_needs() -> None:
    assert tick_labels([0.0, 0.5, 1.0]) == ["0.0", "0.5", "1.0"]
    # Steps of 2.5 x 10^k need one more decimal than their spacing's magnitude.
    assert tick_labels([-0.25, 0.0, 0.25]) == ["-0.25", "0.00", "0.25"]
    assert tick_labels(nice_ticks(0.0, 1.1)) == ["0.00", "0.25", "0.50", "0.75", "1.00", "1.25"]
    assert tick_labels([0.0, 2.5, 5.0, 7.5]) == ["0.0", "2.5", "5.0", "7.5"]
    assert tick_labels([0.0, 20.0, 40.0]) == ["0", "20", "40"]
    assert tick_labels([3.0]) == ["3"]


def line(points: list[tuple[float, float, float]]) -> PlotLine:
    return PlotLine("#000000", "", "line", points)


def test_frame_of_constant_zero_and_negative_data() -> None:
    flat_zero = plot_frame([line([(0, 0.0, NAN), (1, 0.0, NAN), (2, 0.0, NAN)])])
    assert flat_zero is not None
    assert flat_zero.x_ticks == [0, 1, 2]  # evenly spaced x: the values themselves
    assert flat_zero.y_range[0] < 0 < flat_zero.y_range[1]
    negative = plot_frame([line([(1, -5.0, 1.0), (3, -2.0, NAN), (10, -4.0, NAN)])])
    assert negative is not None
    assert negative.y_range[0] <= -6.0 and negative.y_range[1] >= -2.0  # error bar included
    assert negative.x_range[0] <= 1 and negative.x_range[1] >= 10  # uneven x: round ticks
    one_x = plot_frame([line([(4, 2.0, NAN)])])
    assert one_x is not None and one_x.x_range[0] < 4 < one_x.x_range[1]
    extended = plot_frame([line([(100, 1.0, NAN), (200, 2.0, NAN)])], x_min=0.0)
    assert extended is not None and extended.x_range[0] == 0.0


def test_frame_without_values_is_none_and_the_plot_says_so() -> None:
    assert plot_frame([line([(0, NAN, NAN), (1, NAN, NAN)])]) is None
    assert "no values" in svg_line_plot([line([(0, NAN, NAN)])], "x", "y")


@pytest.mark.parametrize("points", [
    [(0, 0.0, NAN), (1, 0.0, NAN)],
    [(0, -1.0, 0.0), (1, -1.0, 0.0)],
    [(-2, -3.0, 0.5), (-1, NAN, NAN), (0, -2.0, 0.5)],
])
def test_svg_of_degenerate_data_has_finite_coordinates(points: list[tuple[float, float, float]]) -> None:
    svg = svg_line_plot([PlotLine("#000000", "2 3", "a <b> & c", points)], "x <i>", "y")
    assert "nan" not in svg and "inf" not in svg
    assert "<b>" not in svg and "<i>" not in svg and "a &lt;b&gt; &amp; c" in svg
    for number in re.findall(r'(?:cx|cy|x1|x2|y1|y2)="([^"]+)"', svg):
        assert math.isfinite(float(number))


def test_svg_is_xml_with_every_label_escaped_once_and_the_elements_of_each_line() -> None:
    label, x_label, y_label = 'a<b & "c"', "x <i>&", "y 'q' >"
    with_std = PlotLine("#000001", "", label, [(0, 0.5, 0.1), (1, 0.6, 0.0), (2, 0.7, NAN), (3, NAN, NAN),
                                               (4, 0.9, 0.2)])
    lone = PlotLine("#000002", "6 3", label, [(2, 0.4, NAN)])
    gaps = PlotLine("#000003", "2 3", label, [(0, 1.0, NAN), (1, NAN, NAN), (2, 1.5, NAN), (3, 1.2, NAN),
                                              (4, NAN, NAN), (5, 0.8, NAN)])
    marked = svg_line_plot([with_std, lone], x_label, y_label)
    bare = svg_line_plot([gaps, lone], x_label, y_label, markers=False)
    ns = "{http://www.w3.org/2000/svg}"
    for svg in (marked, bare):
        assert "<b" not in svg and "<i>" not in svg and "&amp;lt;" not in svg and "&amp;amp;" not in svg
        assert svg.count("a&lt;b &amp; ") == svg.count("<title>")  # escaped once, in every title
        root = ElementTree.fromstring(svg)  # well-formed XML
        assert root.tag == f"{ns}svg" and root.get("aria-label") == f"{y_label} against {x_label}"
        assert [text.text for text in root.iter(f"{ns}text")][-1] == x_label
        assert all((title.text or "").startswith(label) for title in root.iter(f"{ns}title"))

    def shapes(svg: str, color: str) -> dict[str, list[ElementTree.Element]]:
        root = ElementTree.fromstring(svg)
        return {
            kind: [e for e in root.iter(f"{ns}{kind}") if color in (e.get("stroke"), e.get("fill"))]
            for kind in ("polyline", "circle", "line")
        }

    # Markers: one polyline (0..2; 4 stands alone) without a title, a circle with its own title
    # per finite point, a ± std bar where std > 0 (points 0 and 4).
    drawn = shapes(marked, "#000001")
    assert [len(drawn[kind]) for kind in ("polyline", "circle", "line")] == [1, 4, 2]
    assert len(drawn["polyline"][0].get("points", "").split()) == 3 and not list(drawn["polyline"][0])
    titles = [c.findtext(f"{ns}title", "") for c in drawn["circle"]]
    assert [title.split(" → ")[0] for title in titles] == [f"{label}: {x}" for x in (0, 1, 2, 4)]
    assert "±" in titles[0] and "±" not in titles[2]  # one seed: no spread
    assert [len(shapes(marked, "#000002")[kind]) for kind in ("polyline", "circle", "line")] == [0, 1, 0]
    # Bare lines: a titled polyline per stretch of two or more points, a titled circle per lone point.
    drawn = shapes(bare, "#000003")
    assert [len(drawn[kind]) for kind in ("polyline", "circle", "line")] == [1, 2, 0]
    assert drawn["polyline"][0].get("stroke-dasharray") == "2 3"
    assert [e.findtext(f"{ns}title") for e in drawn["polyline"] + drawn["circle"]] == [label] * 3
    assert [len(shapes(bare, "#000002")[kind]) for kind in ("polyline", "circle", "line")] == [0, 1, 0]


# --------------------------------------------------------------------------- escaping and package files


def test_script_in_a_run_name_and_a_note_is_shown_escaped(tmp_path: Path) -> None:
    workdir = WorkDir.resolve(tmp_path / "work")
    name = "x<script>alert(1)"  # a run name cannot hold "/", so no closing tag here
    note = "<script>alert(2)</script>"
    for variant in (name, "full"):
        write_rows(workdir.run_dir(variant, 0), "patches", [
            ResultRow(variant, 0, "patches", "key", "mask_iou", 0.5, 8, note=note),
            ResultRow(variant, 0, "patches", "random", "mask_iou", NAN, 8, note=note),
        ])
    report = build_report(workdir, name="escape", title=note)
    page = report.html.read_text(encoding="utf-8")
    assert "<script" not in page
    assert "x&lt;script&gt;alert(1)" in page  # the run's name in the tables
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page  # the note and the title
    assert 'data-variant="x&lt;script&gt;alert(1)"' in page  # and in attributes
    assert "<script" not in report.markdown.read_text(encoding="utf-8")


def test_templates_escape_everything_they_are_given() -> None:
    templates = resources.files("kpbench.report").joinpath("templates")
    names = [entry.name for entry in templates.iterdir() if entry.name.endswith(".j2")]
    assert {"page.html.j2", "sections.html.j2", "macros.html.j2", "plot.svg.j2"} <= set(names)
    for name in names:
        text = templates.joinpath(name).read_text("utf-8")
        assert "|safe" not in text.replace(" ", "") and "autoescape false" not in text, name
    report = ROOT / "kpbench" / "report"
    sources = {name: (report / name).read_text("utf-8") for name in ("templating.py", "html.py", "plots.py")}
    assert "autoescape=True" in sources["templating.py"]
    assert "jinja2.Environment(" not in sources["html.py"] + sources["plots.py"]  # one environment
    # Markup (no escaping) only for the stylesheet and the SVG from kpbench.report.plots.
    assert re.findall(r"Markup\((\w+)", sources["templating.py"]) == ["resources"]
    assert re.findall(r"Markup\((\w+)", sources["html.py"]) == ["svg"]
    # The plots escape nothing themselves: their template does.
    assert not re.search(r"Markup|escape\(|import html", sources["plots.py"])


def test_package_data_ships_the_templates_and_the_stylesheet() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    package_data = config["tool"]["setuptools"]["package-data"]
    assert {"templates/*.j2", "style.css"} <= set(package_data["kpbench.report"])
    assert any(dependency.startswith("jinja2") for dependency in config["project"]["dependencies"])
    assert "table.data" in resources.files("kpbench.report").joinpath("style.css").read_text("utf-8")
