"""Where a report's numbers come from: the runs' recorded provenance merged across runs, and the
environment (git revision, Python, platform, package versions) that wrote the report."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

from kpbench.runtime import package_versions


def merge_runs(per_run: dict[tuple[str, int], dict[str, str]]) -> dict[str, dict[str, list[str]]]:
    """key -> value -> the runs (``variant-seedN``) that recorded that value, in run order."""
    merged: dict[str, dict[str, list[str]]] = {}
    for (variant, seed), flat in per_run.items():
        for key, value in flat.items():
            merged.setdefault(key, {}).setdefault(value, []).append(f"{variant}-seed{seed}")
    return merged


def environment() -> dict[str, str]:
    return {
        "kpbench git revision": git_revision(Path(__file__).resolve().parent),
        "python": platform.python_version(),
        "platform": platform.platform(),
        # Installed packages only (kpbench.runtime.PACKAGES, the list provenance records too).
        **{f"version {name}": version for name, version in package_versions().items() if version},
    }


def git_revision(path: Path) -> str:
    try:
        revision = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{revision} (uncommitted changes)" if status else revision
