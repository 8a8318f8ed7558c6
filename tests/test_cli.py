"""The command line as a user meets it: help, one-line errors with non-zero exits, the demo."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from typer.testing import CliRunner

from kpbench.cli import app

runner = CliRunner()
COMMANDS = (["data", "prepare"], ["data", "show"], ["list"], ["show"], ["train"], ["eval"], ["report"],
            ["demo"])


def invoke(*args: str):
    return runner.invoke(app, [str(arg) for arg in args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = result.stderr.strip()
    assert message.startswith("error:") and "\n" not in message, message
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in message, message


def test_help_reads_well() -> None:
    top = invoke("--help")
    assert top.exit_code == 0
    for name in ("data", "train", "eval", "report", "demo", "list", "show"):
        assert name in top.stdout
    for command in COMMANDS:
        result = invoke(*command, "--help")
        assert result.exit_code == 0, command
        assert "Usage" in result.stdout and "--help" in result.stdout


def test_list_and_show() -> None:
    listed = invoke("list")
    assert listed.exit_code == 0
    for name in ("full", "naive_gan", "nomask", "autoencoder", "cgan", "noise", "fid", "combination"):
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
    assert_one_line_error(invoke("report", "-w", tmp_path), "kpbench eval")
    assert_one_line_error(invoke("data", "prepare", "builtin:8", "--edge-model", tmp_path / "m.yml.gz",
                                 "-w", tmp_path), "edge model")


class _TableCounter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables = 0
        self.images = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tables += tag == "table"
        self.images += tag == "img" and dict(attrs).get("src", "").startswith("data:image/png;base64,")


def test_tiny_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = invoke("demo", "--tiny", "-w", tmp_path)
    assert result.exit_code == 0, result.output
    html_path = tmp_path / "reports" / "demo" / "index.html"
    assert html_path.is_file() and f"report: {html_path}" in result.stdout.replace("\n", "")
    from kpbench.runs import list_runs

    runs = {info.variant: info for info in list_runs(tmp_path / "runs")}
    assert sorted(runs) == sorted(("full", "naive_gan", "nomask", "autoencoder", "cgan"))
    for info in runs.values():
        assert info.status == "finished" and info.evaluated_with(["noise", "patches", "fid"])
    counter = _TableCounter()
    counter.feed(html_path.read_text())
    assert counter.tables >= 6 and counter.images >= 5
    assert (tmp_path / "reports" / "demo" / "results.csv").stat().st_size > 1000
