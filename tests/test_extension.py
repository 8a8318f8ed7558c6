"""Adding a variant, a protocol or a metric is one registration each: a throwaway of each, made
here, shows in a report without touching any list; the registries are restored afterwards. A
protocol with an option of its own is one file too: the command line and a plan set the option,
and exported predictions fix it when it decides the inputs, without an edit anywhere else."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kpbench.cli import app
from kpbench.metricinfo import list_metrics, metric_direction, metric_label, ordered_metrics, register_metric
from kpbench.paths import WorkDir
from kpbench.protocol import EvalContext, Protocol, get_protocol, list_protocols, register_protocol
from kpbench.report import build_report, default_headlines
from kpbench.results import ResultRow, read_rows, write_rows
from kpbench.variant import get_variant, list_variants, reference_variant, register_variant

VARIANT, PROTOCOL, METRIC = "test_wider", "test_echo", "test_echo_score"


def echo(context: EvalContext) -> list[ResultRow]:
    return [context.row(PROTOCOL, "as given", METRIC, 1.0, 1)]


def register_throwaways() -> None:
    register_variant(replace(reference_variant(), name=VARIANT, description="a test ablation", embed_dim=256),
                     order=15)
    register_metric(METRIC, "echo score", "higher", order=45, decimals=1)
    register_protocol(Protocol(name=PROTOCOL, description="a test protocol", run=echo, order=5,
                               summary=True, summary_metrics=(METRIC,), headline_condition="as given",
                               heading="Echo test"))


def test_a_registered_variant_protocol_and_metric_show_in_a_report(registries: None, tmp_path: Path) -> None:
    register_throwaways()
    names = [spec.name for spec in list_variants()]
    assert names.index(VARIANT) == names.index("full") + 1  # order=15: between full and naive_gan
    assert get_variant(VARIANT).embed_dim == 256
    assert get_protocol(PROTOCOL).run is echo
    assert (metric_label(METRIC), metric_direction(METRIC)) == ("echo score", "higher")
    assert ordered_metrics(["fid", METRIC, "mask_iou", "zzz"]) == ["mask_iou", METRIC, "fid", "zzz"]

    workdir = WorkDir.resolve(tmp_path)
    for variant, values in ((VARIANT, (0.62, 0.64)), ("full", (0.31, 0.33))):
        for seed, value in enumerate(values):
            run = workdir.run_dir(variant, seed)
            write_rows(run, PROTOCOL, [ResultRow(variant, seed, PROTOCOL, "as given", METRIC, value, 8),
                                       ResultRow(variant, seed, PROTOCOL, "as given", "mask_iou", value, 8)])
            write_rows(run, "patches", [ResultRow(variant, seed, "patches", "key", "mask_iou", value, 8)])
    rows = read_rows(workdir.runs)
    # The protocol comes first (order=5) and only its chosen metric is a summary column.
    headlines = [(h.protocol, h.metric) for h in default_headlines(rows)]
    assert headlines == [(PROTOCOL, METRIC), ("patches", "mask_iou")]
    report = build_report(workdir, include_images=False)
    page = report.html.read_text()
    assert "Echo test" in page and "echo score ↑" in page  # the section heading, the metric's label
    assert page.index("Echo test") < page.index(">patches<")
    markdown = report.markdown.read_text()
    # The same section heading as the page, not the registry name.
    assert "## Echo test" in markdown and f"## {PROTOCOL}" not in markdown and "echo score ↑" in markdown
    assert markdown.index("## Echo test") < markdown.index("## patches")
    summary = report.summary
    assert list(dict.fromkeys(summary["variant"])) == ["full", VARIANT]
    echo_cells = summary[summary["metric"] == METRIC].set_index("variant")
    assert echo_cells.loc[VARIANT, "text"] == "0.6 ± 0.0"  # one decimal, as registered
    assert bool(echo_cells.loc[VARIANT, "best"])  # its direction lets the report rank it
    assert math.isclose(echo_cells.loc["full", "mean"], 0.32)


def test_the_registries_are_as_they_were() -> None:
    # Runs after the test above (file order): its throwaways are gone.
    assert VARIANT not in {spec.name for spec in list_variants()}
    assert PROTOCOL not in {protocol.name for protocol in list_protocols()}
    assert METRIC not in {info.name for info in list_metrics()}


def test_registering_a_name_twice_with_other_settings_fails(registries: None) -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register_metric("fid", "Fréchet distance", "lower")
    with pytest.raises(ValueError, match="already the reference"):
        register_variant(replace(reference_variant(), name="other_full"), reference=True)


# A protocol file of a user's own: its options class, its metric and the protocol, nothing else.
OPTION_PROTOCOL_FILE = """
from dataclasses import dataclass

from kpbench.metricinfo import register_metric
from kpbench.protocol import EvalContext, Protocol, register_protocol, request_option
from kpbench.results import ResultRow

NAME = "test_scaled"


@dataclass(frozen=True)
class ScaledOptions:
    factor: float = request_option(1.0)  # the value its row echoes; it would change the inputs
    label: str = "as given"  # its row's condition


def run(context: EvalContext) -> list[ResultRow]:
    options = context.options.of(NAME, ScaledOptions)
    return [context.row(NAME, options.label, "test_scaled_score", options.factor, 1)]


register_metric("test_scaled_score", "scaled score", "higher", order=46)
register_protocol(Protocol(name=NAME, description="echoes its own option", run=run, options=ScaledOptions))
"""

OPTION_PLAN = """
name = "scaled"
plugins = [{plugin!r}]
[train]
steps = 1
width = 0.0625
batch_size = 4
num_workers = 0
device = "cpu"
sample_every = 1000
[eval]
protocols = ["test_scaled"]
device = "cpu"
[eval.test_scaled]
factor = 4
label = "from the plan"
[datasets.builtin]
source = "builtin:48"
[[experiments]]
name = "one"
variants = ["full"]
"""


def invoke(*args: object):
    return CliRunner().invoke(app, [str(arg) for arg in args], terminal_width=200)


def test_a_protocol_file_with_its_own_option_is_set_from_a_plan_and_the_command_line(
        registries: None, tmp_path: Path) -> None:
    plugin = tmp_path / "project" / "scaled_protocol.py"
    plugin.parent.mkdir()
    plugin.write_text(OPTION_PROTOCOL_FILE)
    plan = tmp_path / "scaled.toml"
    plan.write_text(OPTION_PLAN.format(plugin=str(plugin)))
    work = tmp_path / "work"

    ran = invoke("run", plan, "-w", work)
    assert ran.exit_code == 0, ran.output
    builtin = WorkDir.resolve(work / "builtin")
    rows = read_rows(builtin.runs).query("protocol == 'test_scaled'")
    assert list(zip(rows["condition"], rows["value"])) == [("from the plan", 4.0)]

    # The same option from the command line, by its full name or (one protocol has it) its own.
    for setting in ("test_scaled.factor=2.5", "factor=2.5"):
        evaluated = invoke("--plugin", plugin, "eval", "-p", "test_scaled", "--set", setting, "--set",
                           "test_scaled.label=from the command line", "--device", "cpu", "-w", builtin.root)
        assert evaluated.exit_code == 0, evaluated.output
        rows = read_rows(builtin.runs).query("protocol == 'test_scaled'")
        assert list(zip(rows["condition"], rows["value"])) == [("from the command line", 2.5)]
    # The option marked as deciding the generated inputs is fixed in exported predictions.
    from kpbench.protocol import request_settings

    assert "test_scaled.factor" in request_settings() and "test_scaled.label" not in request_settings()
    listed = " ".join(invoke("--plugin", plugin, "list").stdout.split())
    assert "test_scaled" in listed and "factor = 1.0" in listed  # its options and their defaults

    # A misspelt option or a value of the wrong type is a one-line error naming what is known.
    for setting, message in (("test_scaled.factr=2", "unknown option 'factr' of protocol test_scaled; "
                                                     "known: factor, label"),
                             ("test_scaled.factor=two", "test_scaled.factor takes float, got 'two'")):
        wrong = invoke("--plugin", plugin, "eval", "-p", "test_scaled", "--set", setting, "-w", builtin.root)
        assert wrong.exit_code == 2 and message in wrong.output and "Traceback" not in wrong.output


def test_export_sets_a_protocol_files_own_option_and_its_manifest_records_it(
        registries: None, tmp_path: Path) -> None:
    import json

    plugin = tmp_path / "scaled_protocol.py"
    plugin.write_text(OPTION_PROTOCOL_FILE)
    out, work = tmp_path / "inputs", tmp_path / "work"
    # test_scaled generates nothing itself; noise has inputs to export beside it.
    exported = invoke("--plugin", plugin, "export", "builtin:8", "-o", out, "-p", "test_scaled",
                      "-p", "noise", "--sigmas", "0", "--set", "test_scaled.factor=0.5",
                      "--set", "label=exported", "--device", "cpu", "-w", work)
    assert exported.exit_code == 0, exported.output
    options = json.loads((out / "manifest.json").read_text())["options"]
    assert options["test_scaled.factor"] == 0.5 and options["noise.sigmas"] == [0.0]
    assert "test_scaled.label" not in options  # not a request option: scoring may change it
    # Its own options are checked as eval checks them; a protocol that generates nothing has
    # nothing to export, said in one line, and leaves the folder empty for the next try.
    wrong = invoke("--plugin", plugin, "export", "builtin:8", "-o", tmp_path / "other", "-p", "test_scaled",
                   "--set", "test_scaled.factr=2", "-w", work)
    assert wrong.exit_code == 2 and "unknown option 'factr' of protocol test_scaled" in wrong.output
    alone = invoke("--plugin", plugin, "export", "builtin:8", "-o", tmp_path / "alone", "-p", "test_scaled",
                   "--device", "cpu", "-w", work)
    assert alone.exit_code == 2 and "test_scaled generated nothing on builtin:8" in alone.output
    assert "Traceback" not in alone.output and not any((tmp_path / "alone").iterdir())


def test_a_report_of_a_plug_in_protocols_rows_without_its_file_says_so_in_one_line(
        registries: None, tmp_path: Path) -> None:
    workdir = WorkDir.resolve(tmp_path)
    for seed, value in enumerate((0.6, 0.7)):
        run = workdir.run_dir("full", seed)
        write_rows(run, PROTOCOL, [ResultRow("full", seed, PROTOCOL, "as given", METRIC, value, 8)])
        write_rows(run, "patches", [ResultRow("full", seed, "patches", "key", "mask_iou", value, 8)])
    reported = invoke("report", "-w", tmp_path, "--no-images")
    assert reported.exit_code == 0, reported.output
    warnings = [line for line in reported.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: rows of protocol {PROTOCOL} and metric {METRIC} are reported without "
                        "their registration (raw names; no heading, label or direction): load the file "
                        "that registers them with `kpbench --plugin FILE report` or KPBENCH_PLUGINS=FILE"]
    register_throwaways()  # as the file would
    reported = invoke("report", "-w", tmp_path, "--no-images")
    assert reported.exit_code == 0 and "warning" not in reported.stderr, reported.output


EXTENDING = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def documented_protocol() -> str:
    """The Python block of docs/extending.md's section on a protocol's compute side."""
    import re

    section = EXTENDING.read_text().split("## A protocol of your own", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "docs/extending.md's protocol section has no python block"
    return match.group(1)


def test_the_documented_protocol_runs_through_eval_and_reports_under_its_heading(
        registries: None, tmp_path: Path) -> None:
    from kpbench import api

    plugin = tmp_path / "brightness_protocol.py"
    plugin.write_text(documented_protocol())
    work = tmp_path / "work"
    run = api.train("full", "builtin:16", steps=1, width=0.0625, batch_size=4, device="cpu",
                    sample_every=1000, progress=False, workdir=work)
    for draws in (1, 2):
        evaluated = invoke("--plugin", plugin, "eval", "-p", "brightness", "--set",
                           f"brightness.z_draws={draws}", "--device", "cpu", "-w", work)
        assert evaluated.exit_code == 0, evaluated.output
        rows = read_rows(WorkDir.resolve(work).runs)
        assert list(zip(rows["protocol"], rows["condition"], rows["metric"])) == [
            ("brightness", "key", "brightness_gap")]
        test_images = 2  # builtin:16: 14 train / 2 test
        assert rows["n"].item() == test_images * draws  # one value per test image and z draw
        assert 0.0 <= rows["ci_low"].item() <= rows["value"].item() <= rows["ci_high"].item() <= 2.0
    assert (run / "results" / "brightness.csv").is_file()
    reported = invoke("--plugin", plugin, "report", "--no-images", "-w", work)
    assert reported.exit_code == 0 and "warning" not in reported.stderr, reported.output
    markdown = (work / "reports" / "latest" / "results.md").read_text()
    assert "## Brightness" in markdown and "brightness gap ↓" in markdown
