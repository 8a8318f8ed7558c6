"""The statistics behind cells and verdicts, on synthetic data with known answers."""

from __future__ import annotations

import math

import numpy as np

from kpbench.stats import (
    FAMILY_ALPHA,
    Estimate,
    hierarchical_estimate,
    holm,
    paired_difference,
    per_seed_estimate,
    power_statement,
    stable_rng,
    unpaired_difference,
)

TRUE_DIFFERENCE = 0.02


def two_models(rng: np.random.Generator, seeds: int = 5, images: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, images) per-image scores of two models on the same images: a shared image effect
    (an easy image is easy for both, so the samples are positively correlated), a training-seed
    effect per model and per-image noise; model a is better by TRUE_DIFFERENCE."""
    image = rng.normal(0.0, 0.1, images)
    a = 0.6 + TRUE_DIFFERENCE + rng.normal(0, 0.01, (seeds, 1)) + image + rng.normal(0, 0.05, (seeds, images))
    b = 0.6 + rng.normal(0, 0.01, (seeds, 1)) + image + rng.normal(0, 0.05, (seeds, images))
    return a, b


def test_paired_hierarchical_bootstrap_covers_a_known_difference_at_its_nominal_rate() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    for replication in range(200):
        a, b = two_models(rng)
        estimate = paired_difference(a, b, stable_rng("coverage", replication), resamples=500)
        covered += estimate.low <= TRUE_DIFFERENCE <= estimate.high
    assert 0.90 <= covered / 200 <= 0.99


def test_paired_interval_is_narrower_than_the_unpaired_one_for_correlated_samples() -> None:
    a, b = two_models(np.random.default_rng(1))
    paired = paired_difference(a, b, stable_rng("paired"))
    cell_a, cell_b = (hierarchical_estimate(m, stable_rng("cell", i)) for i, m in enumerate((a, b)))
    unpaired_width = 2 * 1.96 * math.sqrt(cell_a.se ** 2 + cell_b.se ** 2)
    assert paired.low < TRUE_DIFFERENCE < paired.high
    assert paired.high - paired.low < 0.6 * unpaired_width
    assert paired.paired and paired.images == a.shape[1] and paired.seeds == a.shape[0]


def test_bootstrap_is_deterministic_given_its_seed() -> None:
    a, b = two_models(np.random.default_rng(2))
    first, second = (paired_difference(a, b, stable_rng("same")) for _ in range(2))
    assert (first.low, first.high) == (second.low, second.high)


def test_bounded_metrics_keep_bounded_intervals() -> None:
    rng = np.random.default_rng(3)
    rare = (rng.random((3, 40)) < 0.02).astype(float)  # a precision-like metric near 0
    cell = hierarchical_estimate(rare, stable_rng("rare"))
    assert 0.0 <= cell.low <= cell.mean <= cell.high <= 1.0
    spread = per_seed_estimate([0.001, 0.03, 0.0], bounds=(0.0, 1.0))  # t * sd would go below 0
    assert spread.low == 0.0 and spread.high <= 1.0
    assert per_seed_estimate([0.001, 0.03, 0.0]).low < 0  # unbounded, for contrast


def test_per_seed_estimate_combines_within_and_between_seed_variance() -> None:
    # Seeds agree perfectly but each value has its own interval: the within-seed variance is a floor.
    agree = per_seed_estimate([0.5, 0.5, 0.5], [0.4, 0.4, 0.4], [0.6, 0.6, 0.6])
    assert agree.low < 0.45 and agree.high > 0.55
    # One seed, no interval of its own: nothing to form an interval from.
    assert not per_seed_estimate([0.5]).has_interval
    # One seed with a pooled seed variance: an interval, and the note says it was pooled.
    pooled = per_seed_estimate([0.5], [0.48], [0.52], pooled_seed_var=0.01)
    assert pooled.has_interval and pooled.high - pooled.low > 0.3 and "pooled" in pooled.note
    difference = unpaired_difference(per_seed_estimate([1.0, 1.1, 0.9]), per_seed_estimate([0.0, 0.1, -0.1]))
    assert difference.low > 0 and not difference.paired


def test_holm_rejects_in_order_and_stops_at_the_first_failure() -> None:
    rejected, levels = holm([0.01, 0.04, 0.03, math.nan])
    # 0.01 <= 0.05/3 rejected; 0.03 > 0.05/2: stop, so 0.04 is not rejected either.
    assert rejected == [True, False, False, False]
    assert levels[0] == FAMILY_ALPHA / 3 and levels[2] == FAMILY_ALPHA / 2 and math.isnan(levels[3])
    assert holm([0.01])[0] == [True] and holm([0.04, 0.04])[0] == [False, False]


def test_power_statement_scales_seeds_or_images_at_the_observed_variance() -> None:
    images_only = Estimate(0.01, -0.03, 0.05, 5, 100, 0.0, (0.02 / 1.96) ** 2, True)  # z SE = 2 mean
    text = power_statement(images_only, margin=None)
    assert "test images (now 100)" in text and "seeds" not in text
    needed = int(text.split("~")[1].split(" ")[0].replace(",", ""))
    assert 390 <= needed <= 410  # the SE must halve: 4x the images
    seeds_only = Estimate(0.01, -0.01, 0.03, 3, 0, (0.01 / 1.96) ** 2, 0.0, False)
    assert "seeds per model (now 3)" in power_statement(seeds_only, margin=None)
