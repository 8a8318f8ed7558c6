"""The claim check, from hand-written rows: every claim holds, fails and is inconclusive at least
once, intervals come from the rows (or from seeds where rows have none), missing data is named."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from kpbench.claims import (
    ENCODER_CLAIM,
    KEY_VS_RANDOM_CLAIM,
    MIN_INPUT_DEPENDENCE,
    NOISE_CLAIM,
    NUM_PATCHES_CLAIM,
    ORDER_CLAIM,
    PRIOR_MASK,
    PRIOR_MASK_CLAIM,
    RANDOM_TRAINED_CLAIM,
    STUDY_CLAIM,
    ClaimResult,
    ablation_claim,
    cell,
    check_claims,
    claims_frame,
    compare,
)
from kpbench.results import COLUMNS
from kpbench.stats import CellStats

NAN = math.nan
INCEPTION = "inception-v3-compat"


def row(variant: str, protocol: str, condition: str, metric: str, value: float,
        low: float = NAN, high: float = NAN, *, seed: int = 0, extractor: str = "") -> dict:
    """One tidy row as :data:`kpbench.results.COLUMNS` names it."""
    return {"variant": variant, "seed": seed, "protocol": protocol, "condition": condition,
            "metric": metric, "value": value, "n": 100, "extractor": extractor, "note": "",
            "ci_low": low, "ci_high": high}


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(COLUMNS))


def key(variant: str, metric: str, value: float, low: float, high: float, **kw) -> dict:
    return row(variant, "patches", "key", metric, value, low, high, **kw)


def fid_rows(variant: str, metric: str, values: list[float], extractor: str = INCEPTION) -> list[dict]:
    """FID/KID rows: no bootstrap interval, one row per seed."""
    return [row(variant, "fid", "key patches", metric, value, seed=seed, extractor=extractor)
            for seed, value in enumerate(values)]


def claim(results: list[ClaimResult], text: str) -> ClaimResult:
    matches = [result for result in results if result.claim == text]
    assert len(matches) == 1, [result.claim for result in results]
    return matches[0]


# --- cells and comparisons -------------------------------------------------------------------


def test_cell_averages_duplicates_within_a_seed_before_combining_seeds() -> None:
    rows = frame(
        key("full", "mask_iou", 0.60, 0.58, 0.62, seed=0),
        key("full", "mask_iou", 0.62, 0.60, 0.64, seed=0),  # duplicate of seed 0
        key("full", "mask_iou", 0.61, 0.59, 0.63, seed=1),
    )
    stats = cell(rows, "full", "patches", "key", "mask_iou")
    assert stats is not None
    assert stats.seeds == 2
    assert stats.mean == pytest.approx(0.61)
    assert stats.low == pytest.approx(0.59)  # bootstrap bounds averaged; seed spread is 0
    assert stats.high == pytest.approx(0.63)


def test_cell_without_row_intervals_takes_its_interval_from_seeds() -> None:
    rows = frame(*fid_rows("full", "fid", [30.0, 31.0, 32.0]))
    stats = cell(rows, "full", "fid", "key patches", "fid", extractor=INCEPTION)
    assert stats is not None
    assert stats.seeds == 3 and stats.mean == pytest.approx(31.0)
    assert stats.low < 30.0 and stats.high > 32.0  # t-interval of three seed values
    one_seed = cell(frame(*fid_rows("full", "fid", [30.0])), "full", "fid", "key patches", "fid",
                    extractor=INCEPTION)
    assert one_seed is not None and math.isnan(one_seed.low)


def test_cell_is_none_when_missing_and_never_pools_extractors() -> None:
    rows = frame(*fid_rows("full", "fid", [30.0]), *fid_rows("full", "fid", [5.0], extractor="clip"),
                 row("full", "patches", "key", "ssim", NAN))
    assert cell(rows, "cgan", "fid", "key patches", "fid", extractor=INCEPTION) is None
    assert cell(rows, "full", "patches", "key", "ssim") is None  # a row, but no value
    with pytest.raises(ValueError, match="several extractors"):
        cell(rows, "full", "fid", "key patches", "fid")


def test_compare_follows_the_metric_direction_and_the_separation_rule() -> None:
    low = CellStats(0.1, NAN, 1, 0.09, 0.11)
    high = CellStats(0.5, NAN, 1, 0.45, 0.55)
    near = CellStats(0.12, NAN, 1, 0.10, 0.14)
    no_interval = CellStats(0.9, NAN, 1, NAN, NAN)
    assert compare(high, low, "mask_iou") == "better"
    assert compare(high, low, "appearance_l1") == "worse"
    assert compare(low, high, "fid") == "better"
    assert compare(low, near, "ssim") == "tie"
    assert compare(no_interval, low, "ssim") == "tie"  # no interval differs from nothing
    assert compare(None, low, "ssim") == "missing"
    with pytest.raises(ValueError):
        compare(low, high, "kid_std")


# --- claim 5: predicted masks vs the prior mask ------------------------------------------------


def test_prior_mask_claim_holds_fails_and_is_inconclusive() -> None:
    holds = claim(check_claims(frame(key("full", "mask_iou", 0.62, 0.60, 0.64),
                                     key(PRIOR_MASK, "mask_iou", 0.41, 0.40, 0.42))), PRIOR_MASK_CLAIM)
    assert holds.verdict == "holds"
    assert holds.reason == "full 0.620 [0.600, 0.640] vs prior mask 0.410 [0.400, 0.420] (better)"
    assert {(item["variant"], item["seeds"]) for item in holds.evidence} == {("full", 1), (PRIOR_MASK, 1)}

    fails = claim(check_claims(frame(key("full", "mask_iou", 0.41, 0.40, 0.42),
                                     key(PRIOR_MASK, "mask_iou", 0.62, 0.60, 0.64))), PRIOR_MASK_CLAIM)
    assert fails.verdict == "fails"

    overlapping = claim(check_claims(frame(key("full", "mask_iou", 0.45, 0.40, 0.50),
                                           key(PRIOR_MASK, "mask_iou", 0.41, 0.38, 0.44))),
                        PRIOR_MASK_CLAIM)
    assert overlapping.verdict == "inconclusive" and "(tie)" in overlapping.reason

    missing = claim(check_claims(frame(key("full", "mask_iou", 0.62, 0.60, 0.64))), PRIOR_MASK_CLAIM)
    assert missing.verdict == "inconclusive"
    assert "prior mask" in missing.reason and "no patches/key mask_iou rows" in missing.reason


# --- claim 1: the full model vs each ablation --------------------------------------------------


def ablation_rows() -> pd.DataFrame:
    return frame(
        # full: good appearance, a mask, FID around 30 over three seeds.
        key("full", "appearance_l1", 0.10, 0.09, 0.11),
        key("full", "mask_iou", 0.60, 0.58, 0.62),
        *fid_rows("full", "fid", [30.0, 31.0, 32.0]),
        *fid_rows("full", "kid", [0.020, 0.021, 0.022]),
        # naive_gan: worse appearance, same mask IoU, worse FID -> holds.
        key("naive_gan", "appearance_l1", 0.20, 0.19, 0.21),
        key("naive_gan", "mask_iou", 0.60, 0.57, 0.63),
        *fid_rows("naive_gan", "fid", [50.0, 51.0, 52.0]),
        *fid_rows("naive_gan", "kid", [0.020, 0.022, 0.021]),
        # cgan: no mask, better appearance and FID -> fails.
        key("cgan", "appearance_l1", 0.05, 0.04, 0.06),
        *fid_rows("cgan", "fid", [10.0, 11.0, 12.0]),
        *fid_rows("cgan", "kid", [0.020, 0.021, 0.022]),
        # autoencoder: better mask, worse appearance -> mixed, inconclusive.
        key("autoencoder", "appearance_l1", 0.30, 0.29, 0.31),
        key("autoencoder", "mask_iou", 0.80, 0.78, 0.82),
        # nomask: FID from another extractor only, appearance overlapping -> inconclusive.
        key("nomask", "appearance_l1", 0.105, 0.095, 0.115),
        *fid_rows("nomask", "fid", [20.0, 21.0], extractor="clip"),
    )


def test_ablation_claims_one_per_present_ablation() -> None:
    results = check_claims(ablation_rows())
    naive = claim(results, ablation_claim("naive_gan"))
    assert naive.verdict == "holds"
    assert ("appearance_l1: full 0.100 [0.0900, 0.110] vs naive_gan 0.200 [0.190, 0.210] (better)"
            in naive.reason)
    assert f"fid ({INCEPTION}): full 31.0" in naive.reason and "(better)" in naive.reason
    assert "mask_iou" in naive.reason and "(tie)" in naive.reason
    assert {item["metric"] for item in naive.evidence} == {"fid", "kid", "appearance_l1", "mask_iou"}

    cgan = claim(results, ablation_claim("cgan"))
    assert cgan.verdict == "fails"
    assert "mask_iou" not in cgan.reason  # cgan has no mask: not compared, not missing

    autoencoder = claim(results, ablation_claim("autoencoder"))
    assert autoencoder.verdict == "inconclusive"
    assert "(better)" in autoencoder.reason and "(worse)" in autoencoder.reason
    assert "no fid rows for autoencoder" in autoencoder.reason

    nomask = claim(results, ablation_claim("nomask"))
    assert nomask.verdict == "inconclusive"
    assert "no fid rows with an extractor common to full and nomask" in nomask.reason
    assert [result.claim for result in results[:4]] == [
        ablation_claim(name) for name in ("naive_gan", "nomask", "autoencoder", "cgan")]


def test_ablation_with_nothing_comparable_names_what_is_missing() -> None:
    rows = frame(key("full", "appearance_l1", 0.10, 0.09, 0.11),
                 row("cgan", "classification", "raw_pixels", "accuracy", 0.5))
    result = claim(check_claims(rows), ablation_claim("cgan"))
    assert result.verdict == "inconclusive"
    assert "no patches/key appearance_l1 rows for cgan" in result.reason
    assert "no fid rows for cgan" in result.reason


# --- claim 2: key vs random patches ---------------------------------------------------------


def patch_rows(key_values: dict[str, tuple[float, float, float]],
               random_values: dict[str, tuple[float, float, float]]) -> pd.DataFrame:
    return frame(*(row("full", "patches", "key", metric, *numbers) for metric, numbers in key_values.items()),
                 *(row("full", "patches", "random", metric, *numbers)
                   for metric, numbers in random_values.items()))


def test_key_vs_random_holds_fails_and_is_inconclusive() -> None:
    good = {"mask_iou": (0.6, 0.58, 0.62), "appearance_l1": (0.10, 0.09, 0.11), "ssim": (0.5, 0.48, 0.52)}
    bad = {"mask_iou": (0.4, 0.38, 0.42), "appearance_l1": (0.20, 0.19, 0.21), "ssim": (0.5, 0.47, 0.53)}
    holds = claim(check_claims(patch_rows(good, bad)), KEY_VS_RANDOM_CLAIM)
    assert holds.verdict == "holds"
    assert "mask_iou: key 0.600 [0.580, 0.620] vs random 0.400 [0.380, 0.420] (better)" in holds.reason
    assert claim(check_claims(patch_rows(bad, good)), KEY_VS_RANDOM_CLAIM).verdict == "fails"
    same = claim(check_claims(patch_rows(good, good)), KEY_VS_RANDOM_CLAIM)
    assert same.verdict == "inconclusive" and "(better)" not in same.reason
    missing = claim(check_claims(patch_rows(good, {})), KEY_VS_RANDOM_CLAIM)
    assert missing.verdict == "inconclusive" and "no patches/random mask_iou rows for full" in missing.reason


# --- claim 3: the encoder as a feature extractor ----------------------------------------------


def accuracy_rows(trained: float, random_init: float, raw: float | None, half: float = 0.02) -> pd.DataFrame:
    values = {"encoder:trained": trained, "encoder:random_init": random_init, "raw_pixels": raw}
    return frame(*(row("full", "classification", condition, "accuracy", value, value - half, value + half,
                       extractor=condition)
                   for condition, value in values.items() if value is not None))


def test_encoder_claim_holds_fails_and_is_inconclusive() -> None:
    holds = claim(check_claims(accuracy_rows(0.8, 0.6, 0.4)), ENCODER_CLAIM)
    assert holds.verdict == "holds"
    assert "encoder:trained 0.800 [0.780, 0.820] vs encoder:random_init 0.600" in holds.reason
    assert claim(check_claims(accuracy_rows(0.5, 0.7, 0.3)), ENCODER_CLAIM).verdict == "fails"
    tie = claim(check_claims(accuracy_rows(0.8, 0.6, 0.59)), ENCODER_CLAIM)
    assert tie.verdict == "inconclusive" and "(tie)" in tie.reason
    missing = claim(check_claims(accuracy_rows(0.8, 0.6, None)), ENCODER_CLAIM)
    assert missing.verdict == "inconclusive" and "raw_pixels" in missing.reason
    assert claim(check_claims(frame()), ENCODER_CLAIM).verdict == "inconclusive"


# --- claim 4: noise ---------------------------------------------------------------------------


def noise_rows(curve: dict[float, float], swapped: float | None = 0.2, dependence: float = 0.5,
               half: float = 0.01) -> pd.DataFrame:
    """SSIM of full under noise on all patches (sigma -> value), the swapped floor, and
    image_dependence; every cell +- ``half``."""
    rows = [row("full", "patches", "key", "image_dependence", dependence, dependence - half,
                dependence + half)]
    rows += [row("full", "noise", f"all sigma={sigma:g}", "ssim", value, value - half, value + half)
             for sigma, value in curve.items()]
    rows += [row("full", "noise", f"one sigma={sigma:g}", "ssim", 0.0, 0.0, 0.0) for sigma in curve]
    if swapped is not None:
        rows.append(row("full", "noise", "swapped", "ssim", swapped, swapped - half, swapped + half))
    return frame(*rows)


def test_noise_claim_holds_when_small_noise_costs_little_and_input_matters() -> None:
    result = claim(check_claims(noise_rows({0: 0.8, 0.05: 0.75, 0.1: 0.68, 0.2: 0.5, 0.4: 0.3})), NOISE_CLAIM)
    assert result.verdict == "holds"
    assert "r(0.05)=0.92" in result.reason and "r(0.4)=0.17" in result.reason  # large sigmas: shown
    assert "robust to noise up to sigma=0.1" in result.reason
    conditions = [item["condition"] for item in result.evidence]
    assert conditions[0] == "key" and "swapped" in conditions and "all sigma=0.4" in conditions
    assert not any(condition.startswith("one ") for condition in conditions)  # target "all" only


def test_noise_claim_fails_when_small_noise_already_costs_much() -> None:
    first_step = claim(check_claims(noise_rows({0: 0.8, 0.05: 0.4, 0.1: 0.3})), NOISE_CLAIM)
    assert first_step.verdict == "fails" and "r(0.05)=0.33, r(0.1)=0.17 < 0.75" in first_step.reason
    # A cliff beyond the small-noise range is reported, not judged.
    cliff = claim(check_claims(noise_rows({0: 0.8, 0.05: 0.78, 0.1: 0.75, 0.2: 0.3})), NOISE_CLAIM)
    assert cliff.verdict == "holds" and "r(0.2)=0.17" in cliff.reason
    unmeasured = claim(check_claims(noise_rows({0: 0.8, 0.4: 0.3})), NOISE_CLAIM)
    assert unmeasured.verdict == "inconclusive" and "no sigma in (0, 0.1]" in unmeasured.reason


def test_noise_claim_fails_for_a_model_that_ignores_its_input() -> None:
    rows = noise_rows({0: 0.5, 0.05: 0.5, 0.1: 0.5}, swapped=0.5, dependence=0.001, half=0.001)
    result = claim(check_claims(rows), NOISE_CLAIM)
    assert result.verdict == "fails"
    assert "does not (demonstrably) depend on its input" in result.reason
    assert "robustness to noise means nothing" in result.reason
    assert f"{MIN_INPUT_DEPENDENCE:g}" in result.reason


def test_noise_claim_is_inconclusive_without_a_scale_or_data() -> None:
    no_scale = claim(check_claims(noise_rows({0: 0.5, 0.05: 0.5}, swapped=0.49)), NOISE_CLAIM)
    assert no_scale.verdict == "inconclusive" and "not separated" in no_scale.reason
    no_swap = claim(check_claims(noise_rows({0: 0.8, 0.05: 0.75}, swapped=None)), NOISE_CLAIM)
    assert no_swap.verdict == "inconclusive" and "no noise/swapped ssim rows for full" in no_swap.reason
    only_clean = claim(check_claims(noise_rows({0: 0.8})), NOISE_CLAIM)
    assert only_clean.verdict == "inconclusive" and "nonzero-sigma" in only_clean.reason
    no_dependence = claim(check_claims(frame()), NOISE_CLAIM)
    assert no_dependence.verdict == "inconclusive"
    assert "image_dependence" in no_dependence.reason


# --- all claims together ----------------------------------------------------------------------


def test_check_claims_on_no_rows_is_all_inconclusive_and_claims_frame_tabulates() -> None:
    results = check_claims(frame())
    assert [result.claim for result in results] == [KEY_VS_RANDOM_CLAIM, ENCODER_CLAIM, NOISE_CLAIM,
                                                     PRIOR_MASK_CLAIM]
    assert {result.verdict for result in results} == {"inconclusive"}
    assert all(result.reason for result in results)
    table = claims_frame(results)
    assert list(table.columns) == ["claim", "verdict", "reason"]
    assert len(table) == 4 and table["claim"].iloc[0] == KEY_VS_RANDOM_CLAIM


# --- the experiments of issue "experiments as plans": order, random-trained, other N ----------


def order(variant: str, value: float, half: float = 0.01) -> dict:
    return key(variant, "image_order_dependence", value, value - half, value + half)


def uses_input(variant: str, value: float = 0.5) -> dict:
    return key(variant, "image_dependence", value, value - 0.02, value + 0.02)


def test_order_claim_holds_fails_and_is_inconclusive() -> None:
    holds = claim(check_claims(frame(order("full", 0.0, 0.0), order("depth_concat", 0.4),
                                     order("siamese_concat", 0.3), uses_input("depth_concat"),
                                     uses_input("siamese_concat"))), ORDER_CLAIM)
    assert holds.verdict == "holds" and "depth_concat 0.400" in holds.reason
    # A concatenating model that uses its input but learned to ignore the order contradicts the
    # paper's reason.
    fails = claim(check_claims(frame(order("full", 0.0, 0.0), order("depth_concat", 0.01, 0.005),
                                     uses_input("depth_concat"))), ORDER_CLAIM)
    assert fails.verdict == "fails" and "contradicts" in fails.reason
    # ... one that ignores its input altogether says nothing about order.
    ignores = claim(check_claims(frame(order("full", 0.0, 0.0), order("depth_concat", 0.01, 0.005),
                                       uses_input("depth_concat", 0.01))), ORDER_CLAIM)
    assert ignores.verdict == "inconclusive" and "image_dependence not clearly above" in ignores.reason
    unclear = claim(check_claims(frame(order("full", 0.0, 0.0), order("siamese_concat", 0.05, 0.03),
                                       uses_input("siamese_concat"))), ORDER_CLAIM)
    assert unclear.verdict == "inconclusive"
    missing = claim(check_claims(frame(order("depth_concat", 0.4))), ORDER_CLAIM)
    assert missing.verdict == "inconclusive" and "no patches/key image_order_dependence rows for full" in (
        missing.reason)
    assert ORDER_CLAIM not in {r.claim for r in check_claims(frame(order("full", 0.0)))}  # nothing to judge


def test_random_trained_claim_compares_each_model_on_its_own_patches() -> None:
    def rows(key_iou: float, random_iou: float) -> pd.DataFrame:
        return frame(key("full", "mask_iou", key_iou, key_iou - 0.02, key_iou + 0.02),
                     row("full-random", "patches", "random", "mask_iou", random_iou, random_iou - 0.02,
                         random_iou + 0.02),
                     # full on random patches (the test-time swap) must not be what is compared
                     row("full", "patches", "random", "mask_iou", 0.1, 0.08, 0.12))
    holds = claim(check_claims(rows(0.6, 0.5)), RANDOM_TRAINED_CLAIM)
    assert holds.verdict == "holds" and "full 0.600" in holds.reason and "full-random 0.500" in holds.reason
    assert claim(check_claims(rows(0.5, 0.6)), RANDOM_TRAINED_CLAIM).verdict == "fails"
    assert claim(check_claims(rows(0.55, 0.56)), RANDOM_TRAINED_CLAIM).verdict == "inconclusive"


def test_num_patches_claim_needs_every_n_to_beat_its_own_prior() -> None:
    def rows(n5_iou: float) -> pd.DataFrame:
        return frame(key("full-n2", "mask_iou", 0.5, 0.48, 0.52),
                     key(f"{PRIOR_MASK}-n2", "mask_iou", 0.3, 0.28, 0.32),
                     key("full-n5", "mask_iou", n5_iou, n5_iou - 0.02, n5_iou + 0.02),
                     key(f"{PRIOR_MASK}-n5", "mask_iou", 0.45, 0.43, 0.47))
    holds = claim(check_claims(rows(0.7)), NUM_PATCHES_CLAIM)
    assert holds.verdict == "holds" and "N=2" in holds.reason and "N=5" in holds.reason
    assert claim(check_claims(rows(0.46)), NUM_PATCHES_CLAIM).verdict == "inconclusive"  # N=5 ties
    assert claim(check_claims(rows(0.3)), NUM_PATCHES_CLAIM).verdict == "fails"


def test_study_claim_reads_preferences_against_one_half() -> None:
    def rows(*rates: tuple[str, float, float, float]) -> pd.DataFrame:
        return frame(*(row("full", "user_study", f"vs {other}", "preference", value, low, high)
                       for other, value, low, high in rates))
    assert claim(check_claims(rows(("nomask", 0.7, 0.6, 0.8), ("cgan", 0.65, 0.55, 0.74))),
                 STUDY_CLAIM).verdict == "holds"
    assert claim(check_claims(rows(("nomask", 0.7, 0.6, 0.8), ("cgan", 0.3, 0.2, 0.4))),
                 STUDY_CLAIM).verdict == "fails"
    unclear = claim(check_claims(rows(("nomask", 0.55, 0.45, 0.65))), STUDY_CLAIM)
    assert unclear.verdict == "inconclusive" and "overlaps 0.5" in unclear.reason
    assert STUDY_CLAIM not in {result.claim for result in check_claims(frame())}
