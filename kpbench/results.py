"""Tidy result rows: the one format every protocol writes and every report reads.

A row is ``(variant, seed, protocol, condition, metric, value, n, extractor, note, ci_low,
ci_high)``; the last two are the 95 % bootstrap interval of a per-sample metric's mean (NaN for
metrics without per-sample values, such as FID). Baselines that need no learning (the prior
mask, the nearest training image) are rows too, with ``variant`` = ``baseline:<name>``. Rows of one
protocol for one run live in ``<run>/results/<protocol>.csv``; re-running the protocol replaces
that file, so results are never duplicated. Comparison across runs happens only in reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd

from kpbench.io import atomic_write_text
from kpbench.metricinfo import Direction, metric_direction
from kpbench.paths import RunDir

COLUMNS: tuple[str, ...] = (
    "variant", "seed", "protocol", "condition", "metric", "value", "n", "extractor", "note",
    "ci_low", "ci_high",
)
BASELINE_PREFIX = "baseline:"  # variant names of rows that come from a baseline, not a trained run

# Whether a bigger value is better is registered with each metric
# (:func:`kpbench.metricinfo.register_metric`); reports state it next to every column.
__all__ = ["BASELINE_PREFIX", "COLUMNS", "Direction", "ResultRow", "is_baseline", "metric_direction",
           "read_rows", "write_rows"]


@dataclass(frozen=True)
class ResultRow:
    variant: str
    seed: int
    protocol: str
    condition: str  # e.g. "key", "random", "sigma=0.2", "N=3"
    metric: str  # e.g. "mask_iou", "fid"
    value: float  # NaN when the metric could not be computed (then ``note`` says why)
    n: int  # number of samples behind the value
    extractor: str = ""  # feature extractor for FID/KID/classification, "" when none
    note: str = ""  # e.g. "N<2048: FID biased", or why the value is missing
    ci_low: float = math.nan  # 95 % bootstrap interval of the mean over the n samples
    ci_high: float = math.nan


def is_baseline(variant: str) -> bool:
    return variant.startswith(BASELINE_PREFIX)


def write_rows(run_dir: Path, protocol: str, rows: Iterable[ResultRow]) -> Path:
    """Replace ``<run_dir>/results/<protocol>.csv`` with ``rows`` (atomically)."""
    frame = pd.DataFrame([asdict(row) for row in rows], columns=list(COLUMNS))
    path = RunDir(Path(run_dir)).results_csv(protocol)
    return atomic_write_text(path, frame.to_csv(index=False))


def read_rows(runs_root: Path) -> pd.DataFrame:
    """Every row under ``runs_root/*/results/*.csv`` as one frame with :data:`COLUMNS` and
    ``run``, the folder of the run the row came from."""
    frames = []
    for path in sorted(Path(runs_root).glob(f"*/{RunDir.RESULTS_DIR}/*.csv")):
        frame = pd.read_csv(path, keep_default_na=False, na_values=["nan", "NaN"])
        frames.append(frame.assign(run=path.parent.parent.name))
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return pd.DataFrame(columns=[*COLUMNS, "run"])
    frame = pd.concat(frames, ignore_index=True)
    for column in ("value", "ci_low", "ci_high"):  # files written before intervals existed lack them
        frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else math.nan
    for column in ("extractor", "note", "condition"):
        frame[column] = frame[column].fillna("").astype(str)
    return frame[[*COLUMNS, "run"]]


assert tuple(field.name for field in fields(ResultRow)) == COLUMNS
