"""A full disk or a folder without write permission: one line naming the file (and, for a full
disk, the space the write needed), a non-zero exit, no traceback; the previous file survives."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kpbench import io as kpbench_io
from kpbench.cli import app
from kpbench.errors import KpbenchError, file_error
from kpbench.results import ResultRow, write_rows

runner = CliRunner()


def full_disk(*_: object, **__: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def no_permission(*_: object, dir: str | None = None, **__: object) -> None:  # noqa: A002 - mkstemp's name
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), dir)


def test_a_full_disk_names_the_file_and_the_space_and_keeps_the_old_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"previous")
    monkeypatch.setattr(os, "fsync", full_disk)  # what a write that does not fit raises
    with pytest.raises(KpbenchError) as caught:
        kpbench_io.atomic_write_bytes(target, b"x" * 2_500_000)
    message = str(caught.value)
    assert re.fullmatch(rf"cannot write {re.escape(str(target))}: no space left on device \(needs 2\.5 MB, "
                        r"[0-9.]+ MB free\); free some space and run the command again", message), message
    assert target.read_bytes() == b"previous"
    assert sorted(tmp_path.iterdir()) == [target]  # no temp file left behind


def test_a_folder_without_write_permission_names_the_file(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # What mkstemp raises in a read-only folder (simulated: root ignores permissions).
    monkeypatch.setattr(tempfile, "mkstemp", no_permission)
    target = tmp_path / "results" / "noise.csv"
    with pytest.raises(KpbenchError, match=rf"^cannot write {re.escape(str(target))}: permission denied; "):
        write_rows(tmp_path, "noise", [ResultRow("noise", "full", 0, "0.1", "psnr", 20.0, 4)])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(KpbenchError, match="cannot write .*index.html: permission denied"):
            kpbench_io.atomic_write_text(folder / "index.html", "<html>")
    finally:
        folder.chmod(0o755)


def test_other_os_errors_stay_errors() -> None:
    assert file_error(OSError(errno.EIO, os.strerror(errno.EIO)), "x") is None


def test_the_command_line_reports_a_full_disk_as_one_line(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import kpbench.report

    log = tmp_path / "runs" / "full-seed0" / "log.jsonl"

    def appending_to_a_full_disk(*_: object, **__: object) -> None:  # e.g. open(log, "a").write(...)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(log))

    monkeypatch.setattr(kpbench.report, "build_report", appending_to_a_full_disk)
    result = runner.invoke(app, ["report", "-w", str(tmp_path)])
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in result.output
    assert message.startswith(f"error: cannot open {log}: no space left on device (")
    assert "MB free" in message
