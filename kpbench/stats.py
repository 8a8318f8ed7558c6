"""Uncertainty: intervals of cells and of differences between runs, Holm's correction, power.

Two kinds of data reach a report:

- **Per-sample values** (mask IoU, appearance L1, SSIM, ...: ``kpbench.results.read_samples``),
  one per test image and seed, the same images for every run. A cell (one model under one
  condition) is a matrix (seeds, images). Its interval is a **hierarchical bootstrap**
  (:func:`hierarchical_estimate`): resample the seeds, then the images, and take the mean; the
  95 % percentile interval of those means covers both the training-seed and the test-set
  variation, and (a percentile interval of means of bounded values) never leaves the metric's
  range. Two models scored on the same images are compared on the **paired** difference
  (:func:`paired_difference`): each model's seeds are resampled independently (they are
  different trainings; the two conditions of one run share theirs), the *same* resampled images
  are used for both, so what the images have in common (an easy face is easy for both) cancels.
- **Per-seed values** (FID, KID, classification accuracy: one number per run, maybe with its own
  interval): :func:`per_seed_estimate` combines the spread of the seed values (which already
  contains each value's own sampling noise) with the within-seed intervals as a floor, with
  Student's t on seeds - 1 degrees of freedom; differences (:func:`unpaired_difference`) are
  unpaired, Welch-Satterthwaite.

Where a model has a single seed, its training variance cannot be seen; a caller may pass the
seed variance **pooled** over the other models of the report (``pooled_seed_var``), which is then
added as a normal term. Every bootstrap is vectorised (weights x matrix products) and seeded from
the identity of what it resamples (:func:`stable_rng`).

Preference data (the user study's answers): :func:`wilson_interval` and
:func:`binomial_p_value` for a preference rate, :func:`bradley_terry` for one score per model,
:func:`pairwise_agreement` for how much participants agree.

Decisions over several claims: :func:`holm` (Holm-Bonferroni, family-wise error
:data:`FAMILY_ALPHA`). Power: :func:`power_statement` says how many seeds or test images would
decide a comparison at the observed variance, assuming the standard error shrinks as 1/sqrt(n).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

CONFIDENCE = 0.95
# The family-wise error rate of one report's claims under Holm's procedure: the usual 5 %,
# the complement of the intervals' confidence.
FAMILY_ALPHA = 1 - CONFIDENCE
BOOTSTRAP_RESAMPLES = 2000
# A model needs this many seeds for its own between-seed variance; with fewer, a pooled
# estimate is used where one is given (with one seed, a variance cannot be computed at all).
MIN_SEEDS_FOR_OWN_VARIANCE = 2
# Test images below which an interval over them means little: the percentile bootstrap of a mean
# of n values is as wide as a normal interval of the plug-in standard error, sqrt((n - 1) / n)
# times the sample's, where Student's t on n - 1 degrees of freedom is right; its nominal 95 %
# then covers 60 % (n = 2), 85 % (5), 89.8 % (9) and 90.4 % (10) of normal data, 93 % at 20. One
# image gives no interval at all (:func:`bootstrap_ci`). `data prepare` and `train` warn below it.
MIN_TEST_IMAGES_FOR_INTERVAL = 10


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread while bootstraps run: their products are small ((R, k) @ (k, n)
    with R = 2000, n ~ 300), and a BLAS thread pool on a busy 2-core machine made them ~10x
    slower than one thread (measured with benchmarks/claims.py). threadpoolctl comes with
    scikit-learn."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def stable_rng(*parts: object) -> np.random.Generator:
    """A generator seeded from ``parts`` (names of what is resampled), the same in every process."""
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def bootstrap_ci(values: Sequence[float] | np.ndarray, seed: int,
                 confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES
                 ) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (NaNs dropped); (nan, nan) for
    fewer than 2 values; a point interval when every value is equal. (One run's row.)"""
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
class Estimate:
    """A mean (of one cell, or a difference of two) with its 95 % interval and what it rests on.

    ``var_seed`` and ``var_image`` split the variance of the estimate into what resampling only
    the seeds and only the images gives (for :func:`power_statement`); ``draws`` are the
    bootstrap replicates (None for per-seed estimates, which are t-based with ``df`` degrees of
    freedom). ``seeds`` is the smaller side's seed count for a difference.
    """

    mean: float
    low: float
    high: float
    seeds: int
    images: int  # 0: per-seed values only
    var_seed: float
    var_image: float
    paired: bool  # a difference on the same images, image by image
    df: float = math.inf
    note: str = ""  # e.g. that a pooled seed variance was used
    draws: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def se(self) -> float:
        return math.sqrt(max(self.var_seed + self.var_image, 0.0))

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def p_value(self, null: float = 0.0) -> float:
        """Two-sided p of ``mean == null``: from the bootstrap replicates where there are some
        (twice the smaller tail, at least 1/(R+1)), else Student's t / normal."""
        if self.draws is not None and len(self.draws):
            below = float(np.mean(self.draws <= null))
            above = float(np.mean(self.draws >= null))
            return float(min(1.0, max(2 * min(below, above), 1.0 / (len(self.draws) + 1))))
        if not self.se > 0:
            return math.nan if not math.isfinite(self.mean) else (0.0 if self.mean != null else 1.0)
        from scipy import stats

        t = abs(self.mean - null) / self.se
        return float(2 * (stats.t.sf(t, self.df) if math.isfinite(self.df) else stats.norm.sf(t)))


NO_ESTIMATE = Estimate(math.nan, math.nan, math.nan, 0, 0, math.nan, math.nan, False)


def bootstrap_weights(rng: np.random.Generator, size: int, resamples: int) -> np.ndarray:
    """(R, size) bootstrap weights: how often each item is drawn, divided by ``size`` (counts of
    ``size`` uniform draws per replicate, by one bincount over the flattened draws)."""
    draws = rng.integers(0, size, (resamples, size)) + (np.arange(resamples) * size)[:, None]
    counts = np.bincount(draws.ravel(), minlength=resamples * size).reshape(resamples, size)
    return counts / size


def _percentile(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def _seed_term(rng: np.random.Generator, seeds: int, pooled_seed_var: float | None,
               resamples: int) -> np.ndarray:
    """Replicates (R,) of the seed mean's deviation from a pooled between-seed variance, for a
    model with too few seeds of its own (zeros when none is given)."""
    if seeds >= MIN_SEEDS_FOR_OWN_VARIANCE or pooled_seed_var is None or not pooled_seed_var > 0:
        return np.zeros(resamples)
    return rng.normal(0.0, math.sqrt(pooled_seed_var / seeds), size=resamples)


def _finite_columns(*matrices: np.ndarray) -> np.ndarray:
    """Columns (images) where every matrix has a value for every seed."""
    keep = np.ones(matrices[0].shape[1], dtype=bool)
    for matrix in matrices:
        keep &= np.isfinite(matrix).all(axis=0)
    return keep


def hierarchical_estimate(values: np.ndarray, rng: np.random.Generator, *,
                          pooled_seed_var: float | None = None, confidence: float = CONFIDENCE,
                          resamples: int = BOOTSTRAP_RESAMPLES,
                          weights: Callable[[int], np.ndarray] | None = None) -> Estimate:
    """The mean of ``values`` (seeds, images) and its hierarchical-bootstrap interval (seeds,
    then images). Images missing for any seed are left out. NO_ESTIMATE when none remain.
    ``weights(size) -> (R, size)``: bootstrap weights to use instead of drawing new ones from
    ``rng`` (a table of many cells may share one draw per size: each cell's interval stays valid,
    and the draws are made once)."""
    matrix = np.atleast_2d(np.asarray(values, dtype=np.float64))
    matrix = matrix[:, _finite_columns(matrix)]
    seeds, images = matrix.shape
    if images == 0 or seeds == 0:
        return NO_ESTIMATE
    draw = weights or (lambda size: bootstrap_weights(rng, size, resamples))
    seed_w = draw(seeds)  # (R, k)
    image_w = draw(images)  # (R, n)
    resamples = len(image_w)
    pooled = _seed_term(rng, seeds, pooled_seed_var, resamples)
    draws = np.einsum("rn,rn->r", seed_w @ matrix, image_w) + pooled
    seed_means, image_means = matrix.mean(axis=1), matrix.mean(axis=0)
    var_seed = float(np.var(seed_w @ seed_means)) + float(np.var(pooled))
    var_image = float(np.var(image_w @ image_means))
    low, high = _percentile(draws, confidence) if images > 1 or seeds > 1 else (math.nan, math.nan)
    note = _pooled_note(seeds, pooled_seed_var)
    return Estimate(float(matrix.mean()), low, high, seeds, images, var_seed, var_image, False,
                    note=note, draws=draws)


def paired_difference(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, *,
                      same_runs: bool = False,
                      pooled_seed_var: tuple[float | None, float | None] = (None, None),
                      confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES) -> Estimate:
    """mean(a) - mean(b) for two models scored on the same images: ``a`` (seeds_a, images) and
    ``b`` (seeds_b, images), columns in the same image order. Seeds are resampled for each
    model independently (``same_runs``: jointly, when a and b are two conditions of the same
    runs, row i of both being seed i), then the images, the same draw for both sides (paired).
    ``pooled_seed_var``: per side, the pooled between-seed variance used when that side has
    fewer than :data:`MIN_SEEDS_FOR_OWN_VARIANCE` seeds (None: no seed term; e.g. a floor)."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired values need the same images: {a.shape[1]} vs {b.shape[1]} columns")
    if same_runs and a.shape[0] != b.shape[0]:
        raise ValueError("two conditions of the same runs need the same seeds")
    keep = _finite_columns(a, b)
    a, b = a[:, keep], b[:, keep]
    images = a.shape[1]
    if images == 0 or a.shape[0] == 0 or b.shape[0] == 0:
        return NO_ESTIMATE
    weights_a = bootstrap_weights(rng, a.shape[0], resamples)
    weights_b = weights_a if same_runs else bootstrap_weights(rng, b.shape[0], resamples)
    image_w = bootstrap_weights(rng, images, resamples)
    if same_runs:
        # One seed draw for both: the difference per seed, then the usual hierarchy.
        pooled = _seed_term(rng, a.shape[0], pooled_seed_var[0], resamples)
        pooled_b = np.zeros(resamples)
    else:
        pooled = _seed_term(rng, a.shape[0], pooled_seed_var[0], resamples)
        pooled_b = _seed_term(rng, b.shape[0], pooled_seed_var[1], resamples)
    side_a = np.einsum("rn,rn->r", weights_a @ a, image_w)
    side_b = np.einsum("rn,rn->r", weights_b @ b, image_w)
    draws = side_a - side_b + pooled - pooled_b
    if same_runs:
        var_seed = float(np.var(weights_a @ (a.mean(1) - b.mean(1))))
    else:
        var_seed = float(np.var(weights_a @ a.mean(1))) + float(np.var(weights_b @ b.mean(1)))
    var_seed += float(np.var(pooled)) + float(np.var(pooled_b))
    var_image = float(np.var(image_w @ (a.mean(0) - b.mean(0))))
    low, high = _percentile(draws, confidence)
    notes = [note for note in (_pooled_note(a.shape[0], pooled_seed_var[0]),
                               "" if same_runs else _pooled_note(b.shape[0], pooled_seed_var[1])) if note]
    return Estimate(float(a.mean() - b.mean()), low, high, min(a.shape[0], b.shape[0]), images,
                    var_seed, var_image, True, note="; ".join(dict.fromkeys(notes)), draws=draws)


def _pooled_note(seeds: int, pooled_seed_var: float | None) -> str:
    if seeds >= MIN_SEEDS_FOR_OWN_VARIANCE:
        return ""
    if pooled_seed_var is not None and pooled_seed_var > 0:
        return "seed variance pooled over the report's models with several seeds"
    return "one seed: training variance not measured"


def per_seed_estimate(values: Sequence[float] | np.ndarray, lows: Sequence[float] | np.ndarray | None = None,
                      highs: Sequence[float] | np.ndarray | None = None, *,
                      bounds: tuple[float, float] | None = None, pooled_seed_var: float | None = None,
                      images: int = 0, confidence: float = CONFIDENCE) -> Estimate:
    """The mean of one number per seed and its interval, combining both variance sources.

    The seed values' variance s^2 estimates between-seed plus within-seed variance, so
    Var(mean) = s^2 / k; as s^2 from 2-3 seeds can come out below the within-seed variance the
    rows' own intervals show (w^2, from their half-width / z), the larger of the two is used.
    One seed: w^2 plus the pooled between-seed variance where given. Student's t on k - 1
    degrees of freedom when s^2 decides, normal otherwise; the interval is clipped to
    ``bounds`` (never mean +- t sd past what the metric can take). ``images``: the samples behind
    each value (the rows' n), over which the within-seed variance would shrink."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v)
    v = v[keep]
    k = len(v)
    if k == 0:
        return NO_ESTIMATE
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    within = math.nan
    if lows is not None and highs is not None:
        half = (np.asarray(highs, dtype=np.float64)[keep] - np.asarray(lows, dtype=np.float64)[keep]) / 2
        if np.isfinite(half).all():
            within = float(np.mean((half / z) ** 2))
    mean = float(v.mean())
    df = math.inf
    note = ""
    if k >= MIN_SEEDS_FOR_OWN_VARIANCE:
        between = float(v.var(ddof=1))
        variance = max(between, within if math.isfinite(within) else 0.0) / k
        if between >= (within if math.isfinite(within) else 0.0):
            df = k - 1.0
        var_seed, var_image = variance, 0.0
    else:
        pooled = pooled_seed_var if pooled_seed_var is not None and pooled_seed_var > 0 else 0.0
        note = _pooled_note(k, pooled_seed_var)
        if not math.isfinite(within) and pooled == 0:
            return Estimate(mean, math.nan, math.nan, k, images, math.nan, math.nan, False, note=note)
        var_seed, var_image = pooled, within if math.isfinite(within) else 0.0
        variance = var_seed + var_image
        if pooled == 0 and lows is not None and highs is not None:
            # One seed and nothing to add: the row's own (bootstrap) interval, asymmetry kept.
            low, high = float(np.asarray(lows, dtype=np.float64)[keep][0]), float(
                np.asarray(highs, dtype=np.float64)[keep][0])
            return Estimate(mean, low, high, k, images, var_seed, var_image, False, note=note)
    quantile = float(stats.t.ppf(0.5 + confidence / 2, df)) if math.isfinite(df) else z
    low, high = mean - quantile * math.sqrt(variance), mean + quantile * math.sqrt(variance)
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Estimate(mean, low, high, k, images if var_image > 0 else 0, var_seed, var_image, False, df=df,
                    note=note)


def unpaired_difference(a: Estimate, b: Estimate, confidence: float = CONFIDENCE) -> Estimate:
    """a - b for per-seed estimates (unpaired): variances add, Welch-Satterthwaite degrees of
    freedom; no interval when either side has none."""
    from scipy import stats

    if not (a.has_interval and b.has_interval):
        return Estimate(a.mean - b.mean, math.nan, math.nan, min(a.seeds, b.seeds), 0,
                        math.nan, math.nan, False,
                        note="; ".join(dict.fromkeys(n for n in (a.note, b.note) if n)))
    va, vb = a.var_seed + a.var_image, b.var_seed + b.var_image
    total = va + vb
    if math.isfinite(a.df) and math.isfinite(b.df) and total > 0:
        df = total ** 2 / ((va ** 2 / a.df if va else 0.0) + (vb ** 2 / b.df if vb else 0.0))
    else:
        df = math.inf
    quantile = float(stats.t.ppf(0.5 + confidence / 2, df)) if math.isfinite(df) else float(
        stats.norm.ppf(0.5 + confidence / 2))
    mean = a.mean - b.mean
    half = quantile * math.sqrt(total)
    images = min(a.images, b.images) if a.images and b.images else max(a.images, b.images)
    return Estimate(mean, mean - half, mean + half, min(a.seeds, b.seeds), images,
                    a.var_seed + b.var_seed, a.var_image + b.var_image, False, df=df,
                    note="; ".join(dict.fromkeys(n for n in (a.note, b.note) if n)))


def holm(p_values: Sequence[float], alpha: float = FAMILY_ALPHA) -> tuple[list[bool], list[float]]:
    """Holm-Bonferroni: which hypotheses are rejected at family-wise error ``alpha``, and the
    level each was tested at (alpha / (m - rank); NaN p-values take no part and are never
    rejected). The smallest p is tested at alpha / m; testing stops at the first that is not
    below its level."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    m = len(indexed)
    rejected = [False] * len(p_values)
    levels = [math.nan] * len(p_values)
    stopped = False
    for rank, (p, index) in enumerate(indexed):
        levels[index] = alpha / (m - rank)
        if not stopped and p <= levels[index]:
            rejected[index] = True
        else:
            stopped = True
    return rejected, levels


def power_statement(estimate: Estimate, margin: float | None, alpha: float = FAMILY_ALPHA) -> str:
    """Roughly how many seeds or test images would decide ``estimate`` at the observed variance:
    either a difference shown at level ``alpha`` (|mean| > z * SE) or equivalence within
    ``margin`` (|mean| + z95 * SE < margin), with SE^2 = var_seed * k / k' + var_image * n / n'.
    Each resource is scaled alone, the other kept; "" when the estimate has no variance."""
    from scipy import stats

    if not (math.isfinite(estimate.var_seed) and math.isfinite(estimate.var_image)):
        return "no interval: more seeds needed (a single value per model)"
    if not estimate.se > 0:
        return ""
    target_var = 0.0
    distance = abs(estimate.mean)
    if distance > 0:
        target_var = max(target_var, (distance / float(stats.norm.ppf(1 - alpha / 2))) ** 2)
    if margin is not None and distance < margin:
        target_var = max(target_var, ((margin - distance) / float(stats.norm.ppf(0.5 + CONFIDENCE / 2))) ** 2)
    if not target_var > 0:
        return "the observed difference is 0: no amount of data decides it against 0"
    parts = []
    if estimate.var_seed > 0 and target_var > estimate.var_image and estimate.seeds:
        seeds = math.ceil(estimate.seeds * estimate.var_seed / (target_var - estimate.var_image))
        parts.append(f"~{seeds} seeds per model (now {estimate.seeds})")
    if estimate.var_image > 0 and target_var > estimate.var_seed and estimate.images:
        images = math.ceil(estimate.images * estimate.var_image / (target_var - estimate.var_seed))
        parts.append(f"~{images:,} test images (now {estimate.images:,})")
    if not parts:
        return "more seeds and test images together would be needed (neither alone suffices)"
    return " or ".join(parts) + " would decide it at the observed variance"


# --- compatibility: cells from rows alone -----------------------------------------------------


@dataclass(frozen=True)
class CellStats:
    mean: float
    std: float  # over seeds (ddof=1); nan for one seed
    seeds: int  # seeds with a value
    low: float  # interval; nan when none can be formed
    high: float


def cell_interval(values: Sequence[float], lows: Sequence[float], highs: Sequence[float],
                  confidence: float = CONFIDENCE, bounds: tuple[float, float] | None = None) -> CellStats:
    """Mean, spread and interval of one cell from its per-seed values and their intervals
    (bounds may be nan: a metric without per-sample values, such as FID): :func:`per_seed_estimate`."""
    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v)
    if not keep.any():
        return CellStats(math.nan, math.nan, 0, math.nan, math.nan)
    estimate = per_seed_estimate(v, lows, highs, bounds=bounds, confidence=confidence)
    std = float(v[keep].std(ddof=1)) if keep.sum() > 1 else math.nan
    return CellStats(estimate.mean, std, int(keep.sum()), estimate.low, estimate.high)


def separated(a_low: float, a_high: float, b_low: float, b_high: float) -> bool:
    """True when both intervals exist and do not overlap (used for the tables' best marks only;
    claims compare differences)."""
    bounds = (a_low, a_high, b_low, b_high)
    if any(math.isnan(x) for x in bounds):
        return False
    return a_high < b_low or b_high < a_low


# --- preference data (the user study, kpbench.study) -----------------------------------------

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (NaN, NaN for n = 0)."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def binomial_p_value(successes: int, n: int) -> float:
    """Two-sided exact binomial test of p = 0.5 (scipy.stats.binomtest)."""
    from scipy.stats import binomtest

    return float(binomtest(successes, n, 0.5).pvalue) if n else math.nan


def bradley_terry(wins: np.ndarray, iterations: int = 10_000, tolerance: float = 1e-12) -> np.ndarray:
    """Log strengths (centred to mean 0) from ``wins[i, j]`` = times i was preferred to j, by
    Hunter's (2004) MM algorithm. When the "beat" graph of the judged models is not strongly
    connected (a model or group never lost, or never won, against the rest) the maximum-likelihood
    strengths are not finite: then half a win each way is added to every pair that met (a stated
    prior, not used otherwise)."""
    from scipy.sparse.csgraph import connected_components

    wins = np.asarray(wins, dtype=np.float64)
    met = (wins + wins.T) > 0
    judged = np.flatnonzero(met.any(1))
    # Finite maximum-likelihood strengths exist only when every judged model can be reached
    # from every other through "beat" edges (Zermelo/Ford): otherwise add the prior.
    strong, _ = connected_components(wins[np.ix_(judged, judged)] > 0, directed=True, connection="strong")
    if len(judged) and strong > 1:
        wins = wins + 0.5 * met
    games = wins + wins.T
    strength = np.ones(len(wins))
    for _ in range(iterations):
        denominator = (games / (strength[:, None] + strength[None, :])).sum(1)
        updated = np.where(denominator > 0, wins.sum(1) / np.maximum(denominator, 1e-300), 1.0)
        updated = np.maximum(updated, 1e-300)
        updated /= np.exp(np.log(updated).mean())
        done = np.max(np.abs(updated - strength)) < tolerance
        strength = updated
        if done:
            break
    log_strength = np.log(strength)
    scores: np.ndarray = log_strength - log_strength.mean()
    return scores


def pairwise_agreement(choices_by_question: dict[str, list[str]]) -> tuple[float, int]:
    """Mean over questions (with two or more answers) of the fraction of participant pairs that
    chose the same image; and the number of such questions. Chance is 0.5 for two options."""
    rates = []
    for choices in choices_by_question.values():
        if len(choices) < 2:
            continue
        pairs = list(itertools.combinations(choices, 2))
        rates.append(sum(a == b for a, b in pairs) / len(pairs))
    return (float(np.mean(rates)) if rates else math.nan), len(rates)
