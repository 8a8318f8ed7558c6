"""Tidy result rows: the one format every protocol writes and every report reads.

A row is ``(variant, seed, protocol, condition, metric, value, n, extractor, note, ci_low,
ci_high)``; the last two are the 95 % bootstrap interval of a per-sample metric's mean (NaN for
metrics without per-sample values, such as FID). Baselines that need no learning (the prior
mask, the nearest training image) are rows too, with ``variant`` = ``baseline:<name>``. Rows of one
protocol for one run live in ``<run>/results/<protocol>.csv``; re-running the protocol replaces
that file, so results are never duplicated. Comparison across runs happens only in reports.

Per-sample metrics also keep their values, one per test image (and per repeat where a protocol
draws several z for one image), in ``<run>/results/<protocol>.samples.csv.gz``
(:data:`SAMPLE_COLUMNS`; ``sample`` is the test image's dataset index). They are written with
the rows (:func:`write_rows`) and read by :func:`read_samples`, so that two runs scored on the
same images can be compared image by image (paired: :mod:`kpbench.stats`).
"""

from __future__ import annotations

import gzip
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kpbench.io import atomic_write_bytes, atomic_write_text
from kpbench.paths import RunDir

COLUMNS: tuple[str, ...] = (
    "variant", "seed", "protocol", "condition", "metric", "value", "n", "extractor", "note",
    "ci_low", "ci_high",
)
BASELINE_PREFIX = "baseline:"  # variant names of rows that come from a baseline, not a trained run

# Whether a bigger value is better is registered with each metric
# (:func:`kpbench.metricinfo.register_metric`), not here; reports state it next to every column.
__all__ = ["BASELINE_PREFIX", "COLUMNS", "SAMPLE_COLUMNS", "SAMPLE_KEYS", "ResultRow", "SampleMatrix",
           "is_baseline", "read_rows", "read_samples", "sample_matrices", "write_rows"]

# One per-sample value: the row it belongs to (variant, condition, metric, extractor; protocol and
# seed are the file's and the run's), the test image's dataset index and the repeat (z draw).
SAMPLE_COLUMNS: tuple[str, ...] = ("variant", "condition", "metric", "extractor", "sample", "repeat",
                                   "value")
SAMPLE_KEYS: tuple[str, ...] = ("sample", "repeat")  # a value's identity within its row


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


def write_rows(run_dir: Path, protocol: str, rows: Iterable[ResultRow],
               samples: pd.DataFrame | None = None) -> Path:
    """Replace ``<run_dir>/results/<protocol>.csv`` with ``rows`` and its per-sample values with
    ``samples`` (:data:`SAMPLE_COLUMNS`; None or empty: the protocol has none, and an older file is
    removed so that values never outlive their rows). Each file is replaced atomically, the samples
    first: a reader never sees rows next to values of another evaluation that finished."""
    files = RunDir(Path(run_dir))
    frame = pd.DataFrame([asdict(row) for row in rows], columns=list(COLUMNS))
    samples_path = files.results_samples(protocol)
    if samples is not None and not samples.empty:
        missing = set(SAMPLE_COLUMNS) - set(samples.columns)
        if missing:
            raise ValueError(f"per-sample values lack columns {sorted(missing)}")
        buffer = io.BytesIO()
        # mtime=0: the same values give the same bytes
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
            handle.write(samples[list(SAMPLE_COLUMNS)].to_csv(index=False).encode("utf-8"))
        atomic_write_bytes(samples_path, buffer.getvalue())
    else:
        samples_path.unlink(missing_ok=True)
    return atomic_write_text(files.results_csv(protocol), frame.to_csv(index=False))


def read_samples(runs_root: Path) -> pd.DataFrame:
    """Every per-sample value under ``runs_root/*/results/*.samples.csv.gz`` as one frame with
    :data:`SAMPLE_COLUMNS`, ``seed`` (the run's, from its rows), ``protocol`` and ``run``.
    Files without a rows file beside them are ignored."""
    frames = []
    for path in sorted(Path(runs_root).glob(f"*/{RunDir.RESULTS_DIR}/*{RunDir.SAMPLES_SUFFIX}")):
        protocol = path.name[:-len(RunDir.SAMPLES_SUFFIX)]
        rows_path = path.with_name(f"{protocol}.csv")
        if not rows_path.is_file():
            continue
        seeds = pd.read_csv(rows_path, usecols=["seed"])["seed"].unique()
        if len(seeds) != 1:
            continue  # rows of no run, or of several: nothing to key the values by
        frame = pd.read_csv(path, keep_default_na=False, na_values=["nan", "NaN"],
                            dtype={"variant": str, "condition": str, "metric": str, "extractor": str})
        frames.append(frame.assign(seed=int(seeds[0]), protocol=protocol, run=path.parent.parent.name))
    columns = [*SAMPLE_COLUMNS, "seed", "protocol", "run"]
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


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


@dataclass(frozen=True)
class SampleMatrix:
    """The per-sample values of one cell: ``values`` (seeds, images), NaN where a seed lacks an
    image; rows follow ``seeds`` and columns ``ids`` (dataset indices), both sorted; the repeats
    (z draws) of one image are averaged."""

    seeds: np.ndarray  # (k,)
    ids: np.ndarray  # (n,)
    values: np.ndarray  # (k, n)


def sample_matrices(samples: pd.DataFrame | None, keys: Sequence[str]) -> dict[tuple[Any, ...], SampleMatrix]:
    """Cell key (the values of ``keys``, e.g. variant, protocol, condition, metric) -> its
    :class:`SampleMatrix`, from :func:`read_samples`' frame (``seed`` and ``sample`` columns)."""
    if samples is None or samples.empty:
        return {}
    frame = samples.assign(extractor=samples["extractor"].fillna("").astype(str)) if "extractor" in keys \
        else samples
    seeds_all = frame["seed"].to_numpy(dtype=np.int64)
    ids_all = frame["sample"].to_numpy(dtype=np.int64)
    values_all = frame["value"].to_numpy(dtype=np.float64)
    matrices = {}
    for key, positions in frame.groupby(list(keys), sort=False).indices.items():
        seeds, seed_rows = np.unique(seeds_all[positions], return_inverse=True)
        ids, id_columns = np.unique(ids_all[positions], return_inverse=True)
        total = np.zeros((len(seeds), len(ids)))
        count = np.zeros((len(seeds), len(ids)))
        np.add.at(total, (seed_rows, id_columns), values_all[positions])
        np.add.at(count, (seed_rows, id_columns), 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            matrices[key if isinstance(key, tuple) else (key,)] = SampleMatrix(seeds, ids, total / count)
    return matrices


assert tuple(field.name for field in fields(ResultRow)) == COLUMNS
