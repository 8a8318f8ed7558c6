"""The command line as a user meets it: help, one-line errors with non-zero exits, the demo."""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cli_checks import assert_one_line_error  # tests/cli_checks.py
from typer.testing import CliRunner

from kpbench.cli import app

runner = CliRunner()
COMMANDS = (["data", "prepare"], ["data", "show"], ["list"], ["show"], ["train"], ["eval"], ["report"],
            ["demo"], ["export"])


def invoke(*args: str):
    return runner.invoke(app, [str(arg) for arg in args])


def test_help_reads_well() -> None:
    top = invoke("--help")
    assert top.exit_code == 0
    for name in ("data", "train", "eval", "report", "demo", "list", "show"):
        assert name in top.stdout
    for command in COMMANDS:
        result = invoke(*command, "--help")
        assert result.exit_code == 0, command
        assert "Usage" in result.stdout and "--help" in result.stdout


HELP_PROBE = """
import sys
from kpbench.cli import app
try:
    app(sys.argv[1:])
except SystemExit as stop:
    heavy = sorted(name for name in ("torch", "cv2", "kpbench.protocols") if name in sys.modules)
    print("imported:", ",".join(heavy) or "none")
    sys.exit(stop.code)
"""


def test_help_imports_neither_torch_nor_the_protocols_so_a_broken_protocol_cannot_break_it(
        tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    checkout = Path(__file__).resolve().parents[1]
    for folder in ("kpbench", "variants", "protocols"):  # a copy, with one protocol file broken
        shutil.copytree(checkout / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "protocols" / "broken.py").write_text("def run(:\n")
    for command in (["eval"], ["demo"], ["run"], ["train"]):
        done = subprocess.run([sys.executable, "-c", HELP_PROBE, *command, "--help"], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "Usage" in done.stdout, (command, done.stdout)
        assert done.stdout.rstrip().endswith("imported: none"), (command, done.stdout)
    # The copy does import its broken file when the protocols are needed (the probe is sound).
    listed = subprocess.run([sys.executable, "-c", HELP_PROBE, "list"], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True)
    assert listed.returncode != 0 and "broken.py" in listed.stderr


def test_list_and_show() -> None:
    listed = invoke("list")
    assert listed.exit_code == 0
    from kpbench.fid import list_extractors
    from kpbench.protocol import list_protocols
    from kpbench.variant import list_variants

    for name in ([spec.name for spec in list_variants()] + [protocol.name for protocol in list_protocols()]
                 + list_extractors()):
        assert name in listed.stdout
    shown = invoke("show", "nomask")
    assert shown.exit_code == 0 and "mask_decoder: True (full) -> False" in shown.stdout


def test_bad_input_gives_one_line_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(invoke("data", "prepare", empty, "-w", tmp_path), "no image files")
    assert_one_line_error(invoke("data", "prepare", tmp_path / "nowhere", "-w", tmp_path), "does not exist")
    (empty / "fake.jpg").write_text("hello")
    assert_one_line_error(invoke("data", "prepare", empty, "-w", tmp_path), "no readable image")
    assert_one_line_error(invoke("data", "prepare", "builtin:8", "--size", "100", "-w", tmp_path),
                          "not supported")
    assert_one_line_error(invoke("show", "fulll"), "unknown variant 'fulll'", "full")
    assert_one_line_error(invoke("train", "--variant", "bogus", "-w", tmp_path), "unknown variant")
    assert_one_line_error(invoke("eval", "--protocol", "noise", "-w", tmp_path), "no runs under")
    assert_one_line_error(invoke("eval", "--protocol", "nosie", "-w", tmp_path), "unknown protocol")
    assert_one_line_error(invoke("demo", "--tiny", "--extractor", "bogus", "-w", tmp_path),
                          "unknown feature extractor 'bogus'", "random-conv")
    assert_one_line_error(invoke("report", "-w", tmp_path), "kpbench eval")
    assert_one_line_error(invoke("data", "prepare", "builtin:8", "--edge-model", tmp_path / "m.yml.gz",
                                 "-w", tmp_path), "edge model")
    # Brackets in a message are printed, not taken for style tags.
    assert_one_line_error(invoke("eval", "-p", "noise", "--set", "noise.sigmas=[bold]", "-w", tmp_path),
                          "noise.sigmas takes float, got '[bold]'")


class _TableCounter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables = 0
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tables += tag == "table"
        self.images += tag == "img" and dict(attrs).get("src", "").startswith("data:image/png;base64,")


def test_tiny_demo_runs_end_to_end_as_kpbench_run_runs_its_plan(tmp_path: Path) -> None:
    result = invoke("demo", "--tiny", "-w", tmp_path)
    assert result.exit_code == 0, result.output
    html_path = tmp_path / "builtin" / "reports" / "demo-tiny" / "index.html"
    assert html_path.is_file() and f"report builtin: {html_path}" in result.stdout
    # A log reads line by line: each message whole on its line, the report named once, and no
    # frame of a live progress view left behind.
    lines = result.stdout.splitlines()
    assert result.stdout.count(str(html_path)) == 1
    evaluating = [line for line in lines if ": evaluating " in line]
    assert len(evaluating) == 5 and all(line.endswith("num_patches, patches") for line in evaluating)
    assert not any(line.startswith("plan demo-tiny ") for line in lines)
    assert result.output.count("with fewer than 10 test images") == 1  # each warning once, not per cell
    from kpbench.runs import list_runs

    runs = {info.variant: info for info in list_runs(tmp_path / "builtin" / "runs")}
    assert sorted(runs) == sorted(("full", "naive_gan", "nomask", "autoencoder", "cgan"))
    for info in runs.values():
        assert info.status == "finished" and info.evaluated_with(["noise", "patches", "fid"])
    # The plan runner's summary: the cells, the wall time of each stage, the time per protocol.
    assert "ran 5, skipped 0, failed 0" in result.stdout and "wall time per stage:" in result.stdout
    stages = [line.split()[:2] for line in result.stdout.split("wall time per stage:")[1].splitlines()[1:13]]
    assert [stage for stage, _ in stages] == ["data", *["train", "evaluate"] * 5, "report"]
    assert "evaluation per protocol:" in result.stdout

    # kpbench run on the shipped plan file: the same runs and the same report rows.
    planned = invoke("run", Path(__file__).resolve().parents[1] / "plans" / "demo-tiny.toml",
                     "-w", tmp_path / "planned")
    assert planned.exit_code == 0, planned.output
    assert sorted(info.name for info in list_runs(tmp_path / "planned" / "builtin" / "runs")) == sorted(
        info.name for info in runs.values())
    import pandas as pd

    def rows(work: Path) -> pd.DataFrame:
        table = pd.read_csv(work / "builtin" / "reports" / "demo-tiny" / "results.csv")
        return table.sort_values(list(table.columns[:5])).reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(tmp_path), rows(tmp_path / "planned"))
    counter = _TableCounter()
    counter.feed(html_path.read_text())
    assert counter.tables >= 6 and counter.images >= 5
    assert (tmp_path / "builtin" / "reports" / "demo-tiny" / "results.csv").stat().st_size > 1000
    # Each claim shows its primary metric, and per-sample values were kept for paired comparisons.
    page = html_path.read_text()
    assert '<td class="primary">KID (lower for the full model)</td>' in page
    assert '<td class="primary">mask IoU (higher than the stronger floor)</td>' in page
    markdown = (tmp_path / "builtin" / "reports" / "demo-tiny" / "results.md").read_text()
    assert "| primary metric | difference [95 % interval] |" in markdown and "(paired, 1 seed x" in markdown
    # The protocols' own report paragraphs, as `kpbench report` and `kpbench run` print them.
    from html import escape

    from kpbench.protocol import get_protocol

    patches = get_protocol("patches")
    assert patches.report_description and escape(patches.report_description, quote=False) in page
    regenerated = invoke("report", "-w", tmp_path / "builtin", "--name", "again")
    assert regenerated.exit_code == 0, regenerated.output
    assert escape(patches.report_description, quote=False) in (tmp_path / "builtin" / "reports" / "again" /
                                                               "index.html").read_text()


# --- what each flag asks the library for ---------------------------------------------------------


def captured_calls(monkeypatch, module: object, name: str, returns, *args: object) -> list:
    """Run the CLI with ``module.name`` replaced by a stand-in; its calls as (args, kwargs)."""
    calls = []

    def stand_in(*call_args, **call_kwargs):
        calls.append((call_args, call_kwargs))
        return returns

    monkeypatch.setattr(module, name, stand_in)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return calls


def captured_train_configs(monkeypatch, tmp_path: Path, *args: str) -> list:
    import kpbench.train

    calls = captured_calls(monkeypatch, kpbench.train, "train", tmp_path / "runs" / "run", "train", *args,
                           "-w", tmp_path)
    return [call_args[0] for call_args, _ in calls]


def test_train_defaults_are_the_library_defaults(monkeypatch, tmp_path: Path) -> None:
    from kpbench.dataspec import DataSpec
    from kpbench.train import TrainConfig

    configs = captured_train_configs(monkeypatch, tmp_path, "--variant", "full")
    assert configs == [TrainConfig(variant="full", data=DataSpec(), workdir=str(tmp_path.resolve()))]
    assert configs[0].num_workers is None  # resolved by the training code: 0 on the CPU, 2 on CUDA


def test_train_flags_give_exactly_their_config(monkeypatch, tmp_path: Path) -> None:
    from kpbench.dataspec import DataSpec
    from kpbench.train import TrainConfig

    edge_model = tmp_path / "model.yml.gz"
    edge_model.write_bytes(b"")
    configs = captured_train_configs(
        monkeypatch, tmp_path, "--variant", "nomask", "--data", "builtin:32", "--seeds", "2,0",
        "--steps", "7", "--epochs", "3", "--batch-size", "8", "--width", "0.25", "--size", "128",
        "--preset", "celeba", "--crop", "100", "--patches", "4", "--edge-model", str(edge_model),
        "--split-seed", "5", "--patch-source", "random", "--lambda-decay-epochs", "25",
        "--init", "dcgan", "--amp", "bf16", "--device", "cpu", "--workers", "1", "--sample-every", "9",
        "--checkpoint-every", "11", "--diagnostics-every", "13", "--status-every", "17", "--tensorboard",
        "--restart",
    )
    data = DataSpec(source="builtin:32", size=128, preset="celeba", crop=100, split_seed=5, n_patches=4,
                    edge_model=str(edge_model))
    expected = TrainConfig(
        variant="nomask", data=data, seed=0, width=0.25, batch_size=8, epochs=3, steps=7,
        lambda_decay_epochs=25, patch_source="random", init="dcgan", amp="bf16", device="cpu",
        num_workers=1, sample_every=9, checkpoint_every=11, log_every=10, status_every=17, tensorboard=True,
        diagnostics_every=13, workdir=str(tmp_path.resolve()), restart=True,
    )
    assert configs == [expected, TrainConfig.from_dict(expected.to_dict() | {"seed": 2})]
    # Choices reach the library as plain strings, as config.json stores them.
    assert all(type(value) is str for value in (expected.amp, configs[0].amp, configs[0].patch_source,
                                                 configs[0].init, configs[0].data.preset))


def help_text(*command: str) -> str:
    """The help of ``command``, wide enough that no choice list is wrapped."""
    return runner.invoke(app, [*command, "--help"], env={"COLUMNS": "400"}).stdout


def test_choice_flags_list_and_check_their_values(tmp_path: Path) -> None:
    helped = help_text("train")
    for listed in ("<off|bf16|fp16|auto>", "<key|random>", "<default|celeba|celeba-v1|celeba-v2|waterfall>",
                   "<pytorch|dcgan|pytorch04>"):
        assert listed in helped, listed
    assert "<local|slurm|submitit-local|submitit-debug>" in help_text("run")
    wrong = invoke("train", "--variant", "full", "--amp", "fp8", "-w", tmp_path)
    assert wrong.exit_code == 2 and "fp8" in wrong.output


def captured_evaluations(monkeypatch, tmp_path: Path, *args: str) -> list:
    import kpbench.protocol

    calls = captured_calls(monkeypatch, kpbench.protocol, "evaluate", kpbench.protocol.Evaluation(),
                           "eval", *args, "-w", tmp_path)
    return [(*call_args, call_kwargs["names"]) for call_args, call_kwargs in calls]


def test_eval_defaults_are_the_library_defaults(monkeypatch, tmp_path: Path) -> None:
    from kpbench.paths import WorkDir
    from kpbench.protocol import EvalOptions

    calls = captured_evaluations(monkeypatch, tmp_path, "--protocol", "all")
    assert calls == [(WorkDir.resolve(tmp_path), ["all"], None, None, EvalOptions(), None)]


def test_eval_flags_give_exactly_their_options(monkeypatch, tmp_path: Path) -> None:
    from kpbench.paths import WorkDir
    from kpbench.protocol import EvalOptions

    weights = tmp_path / "weights.pth"
    calls = captured_evaluations(
        monkeypatch, tmp_path, "-p", "noise", "-p", "fid", "-v", "full", "-v", "nomask", "--seed", "3",
        "--seeds", "0-1", "--run", "full-seed0", "--max-samples", "16", "--sigmas", "0", "--sigmas", "0.3",
        "--fid-samples", "64", "--extractor", "random-conv", "--inception-weights", str(weights),
        "--classify-samples", "40", "--min-per-class", "3", "--folds", "4", "--device", "cpu",
    )
    options = EvalOptions(max_samples=16, device="cpu").with_settings(
        sigmas=(0.0, 0.3), fid_samples=64, extractor="random-conv", inception_weights=weights,
        classify_samples=40, min_per_class=3, folds=4)
    assert calls == [(WorkDir.resolve(tmp_path), ["noise", "fid"], ["full", "nomask"], [3, 0, 1], options,
                      ["full-seed0"])]
    assert type(calls[0][4].setting("extractor")) is str


def test_extractor_takes_any_registered_name_and_refuses_others(monkeypatch, tmp_path: Path) -> None:
    from kpbench import fid as fid_metrics
    from kpbench.paths import WorkDir
    from kpbench.protocol import EvalOptions

    monkeypatch.setattr(fid_metrics, "_EXTRACTORS", dict(fid_metrics._EXTRACTORS))  # unregistered afterwards
    # Under torch-fidelity's existing random-conv entry, so nothing outside kpbench's registry changes.
    fid_metrics.register_extractor("test-conv", fid_metrics.RandomConvFeatures, fidelity_name="random-conv")
    assert "test-conv" in invoke("list").stdout
    for command in ("eval", "demo"):  # the help points there rather than import every extractor
        helped = " ".join(help_text(command).split())
        assert "--extractor NAME" in helped and "`kpbench list` names them" in helped

    calls = captured_evaluations(monkeypatch, tmp_path, "-p", "fid", "--extractor", "test-conv")
    options = EvalOptions().with_settings(extractor="test-conv")
    assert calls == [(WorkDir.resolve(tmp_path), ["fid"], None, None, options, None)]
    # Refused before any evaluation (evaluate is still the stand-in here, which would accept it).
    assert_one_line_error(invoke("eval", "-p", "fid", "--extractor", "tset-conv", "-w", tmp_path),
                          "unknown feature extractor 'tset-conv'", "test-conv")


def test_choices_are_the_librarys() -> None:
    from typing import get_args

    from kpbench import config, samples, variant
    from kpbench.choices import Preset, choice_values
    from kpbench.patches import PATCH_PRESETS

    assert set(choice_values(Preset)) == set(PATCH_PRESETS)
    assert get_args(config.AmpMode) == config.AMP_MODES
    assert get_args(samples.PatchSource) == samples.PATCH_SOURCES
    assert get_args(variant.Initialisation) == variant.INITIALISATIONS


def test_warnings_and_listings_print_brackets_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    # Names, paths and values may hold "[...]"; rich markup would take it for a style tag and drop it.
    from kpbench import cli

    cli._show_warning(UserWarning("skipped 2 files in /data/[set a]; sigmas [0.1, 0.2]"), UserWarning)
    cli.console.print("  builtin  full-seed0 [random-patches] not started")
    captured = capsys.readouterr()
    assert "warning: skipped 2 files in /data/[set a]; sigmas [0.1, 0.2]" in captured.err
    assert "[random-patches] not started" in captured.out
