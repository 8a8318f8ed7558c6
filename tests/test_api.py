"""kpbench.api: the README's script runs as shown, and the functions the CLI calls take and refuse
what they say."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pandas as pd
import pytest

from kpbench import api
from kpbench.dataspec import DataSpec
from kpbench.errors import KpbenchError
from kpbench.results import COLUMNS

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_script() -> str:
    """The Python block of the README's API section."""
    section = README.read_text().split("## Python API", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "the README's API section has no python block"
    return match.group(1)


@pytest.fixture(scope="module")
def script_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The README's script, run as a script in an empty folder: (its work dir, what it printed)."""
    import contextlib
    import io
    import os

    folder = tmp_path_factory.mktemp("api-script")
    script = folder / "script.py"
    script.write_text(readme_script())
    printed = io.StringIO()
    before = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(printed):
            runpy.run_path(str(script), run_name="__main__")
    finally:
        os.chdir(before)
    return folder / "kpbench-api", printed.getvalue()


def test_readme_script_is_about_ten_lines_of_the_api() -> None:
    lines = [line for line in readme_script().splitlines() if line.strip()]
    assert len(lines) <= 12 and "from kpbench import api" in lines[0]


def test_readme_script_trains_evaluates_and_prints_the_claims(script_run: tuple[Path, str]) -> None:
    work, printed = script_run
    from kpbench.runs import list_runs

    assert sorted(info.variant for info in list_runs(work / "runs")) == ["full", "nomask"]
    claims = api.load_claims(work)
    for sentence, verdict in zip(claims["claim"], claims["verdict"]):  # each claim with its verdict
        line = next(line for line in printed.splitlines() if sentence in line)
        assert verdict in line
    assert f"report: {work.resolve() / 'reports' / 'api' / 'index.html'}" in printed
    assert (work / "reports" / "api" / "index.html").is_file()


def test_results_and_claims_are_data_frames(script_run: tuple[Path, str]) -> None:
    work, _ = script_run
    rows = api.load_results(work)
    assert list(rows.columns) == [*COLUMNS, "run", "label"]
    assert {"full", "nomask"} <= set(rows["label"]) and set(rows["protocol"]) == {"noise", "patches"}
    assert rows["value"].dtype == float
    claims = api.load_claims(work)
    assert list(claims.columns) == list(api.CLAIM_COLUMNS)
    assert not claims.empty
    assert set(claims["verdict"]) <= {"holds", "fails", "equivalent", "underpowered", "missing"}
    judged = claims[claims["verdict"] != "missing"]
    assert not judged.empty and all(isinstance(items, list) and items for items in judged["evidence"])


def test_api_generate_matches_a_second_call_and_takes_pil_images(script_run: tuple[Path, str],
                                                                 tmp_path: Path) -> None:
    from PIL import Image

    work, _ = script_run
    run = next(path for path in (work / "runs").iterdir() if path.name.startswith("full"))
    patches = [Image.new("RGB", (20 + 5 * k, 24), (40 * k, 90, 200)) for k in range(3)]
    first = api.generate(run, patches, samples=2, seed=1)
    second = api.generate(api.load_model(run), patches, samples=2, seed=1)
    assert first.images.shape == (2, 3, 64, 64) and first.masks is not None
    assert first.images.equal(second.images) and first.masks.equal(second.masks)
    paths = api.write_generated(first, tmp_path / "out.png")
    assert [path.name for path in paths] == ["out.png", "out.mask.png"]


def test_settings_are_checked_by_name(tmp_path: Path) -> None:
    with pytest.raises(KpbenchError, match="unknown training setting stepz; known: .*steps"):
        api.train("full", "builtin:48", workdir=tmp_path, stepz=2)
    with pytest.raises(KpbenchError, match="unknown variant"):
        api.train("fulll", workdir=tmp_path)
    with pytest.raises(KpbenchError, match="unknown evaluation option samples"):
        api.evaluate("noise", workdir=tmp_path, samples=3)
    assert api.data_spec("builtin:48", size=128, n_patches=4) == DataSpec(source="builtin:48", size=128,
                                                                          n_patches=4)
    with pytest.raises(KpbenchError, match="no result rows"):
        api.load_claims(tmp_path)
    assert isinstance(api.load_results(tmp_path), pd.DataFrame) and api.load_results(tmp_path).empty


def test_a_script_without_a_main_guard_fails_with_one_reason_instead_of_waiting(tmp_path: Path) -> None:
    # Detection workers import the main script; without a guard they die while starting. The
    # parent must say so and stop, not wait for them (a process pool would replace them forever).
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(f"from kpbench import api\napi.prepare_data('builtin:64', workdir={str(tmp_path)!r}, "
                      "workers=2)\nprint('prepared')\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode != 0 and "prepared" not in done.stdout
    # The script's own exception (an API call raises; the command line would print one line).
    assert any(line.startswith("kpbench.errors.KpbenchError: a key-patch detection worker process died")
               and 'if __name__ == "__main__":' in line for line in done.stderr.splitlines()), done.stderr
