"""Uncertainty: bootstrap intervals of per-sample metrics, intervals of cells over seeds, and
the one rule that decides whether two numbers differ.

- A protocol row of a per-sample metric carries the 95 % percentile-bootstrap interval of its
  mean (:func:`bootstrap_ci`, scipy's ``stats.bootstrap``, seeded from the row's identity).
- A report cell (one variant, one metric, several seeds) has mean and spread over seeds and an
  interval (:func:`cell_interval`): the seeds' bootstrap bounds averaged (the test images are
  the same for every seed, so their sampling errors move together), widened where needed to
  the t-interval of the seed means, so it covers both test-set and training-seed variation.
- Two cells differ only when their intervals do not overlap (:func:`separated`); a cell with
  no interval differs from nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def bootstrap_ci(values: Sequence[float] | np.ndarray, seed: int,
                 confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES
                 ) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (NaNs dropped); (nan, nan) for
    fewer than 2 values; a point interval when every value is equal."""
    from scipy import stats

    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    if len(data) < 2:
        return math.nan, math.nan
    if np.all(data == data[0]):
        return float(data[0]), float(data[0])
    result = stats.bootstrap((data,), np.mean, n_resamples=resamples, confidence_level=confidence,
                             method="percentile", vectorized=True, random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass(frozen=True)
class CellStats:
    mean: float
    std: float  # over seeds (ddof=1); nan for one seed
    seeds: int  # seeds with a value
    low: float  # interval; nan when none can be formed
    high: float


def cell_interval(values: Sequence[float], lows: Sequence[float], highs: Sequence[float],
                  confidence: float = CONFIDENCE) -> CellStats:
    """Mean, spread and interval of one cell from its per-seed values and bootstrap bounds
    (bounds may be nan: a metric without per-sample values, such as FID)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v)
    v = v[keep]
    lo = np.asarray(lows, dtype=np.float64)[keep]
    hi = np.asarray(highs, dtype=np.float64)[keep]
    if len(v) == 0:
        return CellStats(math.nan, math.nan, 0, math.nan, math.nan)
    mean = float(v.mean())
    std = float(v.std(ddof=1)) if len(v) > 1 else math.nan
    low = high = math.nan
    if np.isfinite(lo).all() and np.isfinite(hi).all():
        low, high = float(lo.mean()), float(hi.mean())
    if len(v) > 1:
        half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1)) * std / math.sqrt(len(v))
        low = mean - half if math.isnan(low) else min(low, mean - half)
        high = mean + half if math.isnan(high) else max(high, mean + half)
    return CellStats(mean, std, len(v), low, high)


def separated(a_low: float, a_high: float, b_low: float, b_high: float) -> bool:
    """True when both intervals exist and do not overlap."""
    bounds = (a_low, a_high, b_low, b_high)
    if any(math.isnan(x) for x in bounds):
        return False
    return a_high < b_low or b_high < a_low
