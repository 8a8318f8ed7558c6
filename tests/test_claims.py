"""The claim check, from hand-written rows and per-sample values: one primary metric per claim,
paired differences where the same images were scored, the strongest floor, Holm across claims,
and the verdicts holds / fails / equivalent / underpowered / missing each where they belong."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kpbench.claims import (
    ENCODER_CLAIM,
    KEY_VS_RANDOM_CLAIM,
    NEAREST_NEIGHBOUR,
    NOISE_CLAIM,
    NUM_PATCHES_CLAIM,
    ORDER_CLAIM,
    PRACTICAL_MARGINS,
    PRIOR_MASK,
    PRIOR_MASK_CLAIM,
    RANDOM_TRAINED_CLAIM,
    STUDY_CLAIM,
    ClaimResult,
    Evidence,
    Side,
    cell,
    check_claims,
    claims_frame,
    list_claims,
    realism_sentence,
    role,
    variant_label,
)
from kpbench.results import COLUMNS, SAMPLE_COLUMNS

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


def key(variant: str, metric: str, value: float, half: float = 0.01, **kw) -> dict:
    return row(variant, "patches", "key", metric, value, value - half, value + half, **kw)


def per_seed(variant: str, metric: str, values: list[float], extractor: str = INCEPTION) -> list[dict]:
    """FID/KID rows: no interval of their own, one row per seed."""
    return [row(variant, "fid", "key patches", metric, value, seed=seed, extractor=extractor)
            for seed, value in enumerate(values)]


def claim(results: list[ClaimResult], text: str) -> ClaimResult:
    matches = [result for result in results if result.claim == text]
    assert len(matches) == 1, [result.claim for result in results]
    return matches[0]


def samples_of(variant: str, condition: str, metric: str, values: np.ndarray,
               protocol: str = "patches", ids: np.ndarray | None = None) -> pd.DataFrame:
    """Per-sample values (seeds, images) as read_samples returns them."""
    seeds, images = values.shape
    ids = np.arange(100, 100 + images) if ids is None else ids
    return pd.DataFrame({
        "variant": variant, "condition": condition, "metric": metric, "extractor": "",
        "sample": np.tile(ids, seeds), "repeat": 0, "value": values.ravel(),
        "seed": np.repeat(np.arange(seeds), images), "protocol": protocol, "run": f"{variant}-run"})


def rows_from(samples: pd.DataFrame) -> pd.DataFrame:
    """The rows whose values those samples are (mean per seed)."""
    keys = ["variant", "protocol", "condition", "metric", "seed"]
    means = samples.groupby(keys)["value"].mean().reset_index()
    return frame(*(row(r.variant, r.protocol, r.condition, r.metric, r.value, seed=r.seed)
                   for r in means.itertuples()))


# --- registry and roles ----------------------------------------------------------------------


def test_every_claim_declares_one_primary_metric_and_realism_is_decided_on_kid() -> None:
    claims = {claim.name: claim for claim in list_claims()}
    assert claims["realism"].primary == "kid" and claims["realism"].secondary == ("fid",)
    for claim_ in claims.values():
        assert claim_.primary and "appearance_l1" != claim_.primary
    assert claims["prior_mask"].primary == "mask_iou" and "nearest neighbour" in claims["prior_mask"].floors


def test_roles_come_from_the_variant_registry_and_run_labels() -> None:
    full_random = role("full-random")
    assert full_random is not None and full_random.variant == "full" and full_random.patch_source == "random"
    n5 = role("full-n5")
    assert n5 is not None and n5.n_patches == 5 and not n5.default_settings
    depth = role("depth_concat")
    assert depth is not None and depth.variant == "depth_concat" and depth.default_settings
    assert role(PRIOR_MASK) is None and role("not_a_variant") is None


def test_cell_from_rows_keeps_bounded_intervals_and_never_pools_extractors() -> None:
    rows = frame(key("full", "mask_iou", 0.01, seed=0), key("full", "mask_iou", 0.03, seed=1),
                 key("full", "mask_iou", 0.0, seed=2))
    stats = cell(rows, "full", "patches", "key", "mask_iou")
    assert stats is not None and stats.seeds == 3 and stats.low == 0.0  # t * sd would go below 0
    rows = frame(*per_seed("full", "fid", [30.0]), *per_seed("full", "fid", [5.0], extractor="clip"))
    with pytest.raises(ValueError, match="several extractors"):
        cell(rows, "full", "fid", "key patches", "fid")
    assert cell(rows, "cgan", "fid", "key patches", "fid", extractor=INCEPTION) is None


# --- realism: KID decides, never appearance L1 --------------------------------------------------


def realism_rows() -> pd.DataFrame:
    return frame(
        *per_seed("full", "kid", [0.020, 0.021, 0.022, 0.020, 0.021]),
        *per_seed("full", "fid", [30.0, 31.0, 32.0, 30.0, 31.0]),
        key("full", "appearance_l1", 0.10),
        # nomask: better appearance L1 (what it optimises), clearly worse KID -> the claim holds.
        *per_seed("nomask", "kid", [0.040, 0.041, 0.043, 0.042, 0.040]),
        *per_seed("nomask", "fid", [50.0, 51.0, 52.0, 50.0, 51.0]),
        key("nomask", "appearance_l1", 0.05),
        # autoencoder: KID within the margin of full's -> equivalent.
        *per_seed("autoencoder", "kid", [0.0205, 0.0210, 0.0215, 0.0205, 0.0210]),
        # cgan: KID rows from another extractor only -> missing, said once.
        *per_seed("cgan", "kid", [0.03], extractor="clip"),
        # full-random is the full model under another condition, not a compared model.
        *per_seed("full-random", "kid", [0.5]),
    )


def test_realism_claims_are_decided_on_kid_with_fid_secondary() -> None:
    results = check_claims(realism_rows())
    nomask = claim(results, realism_sentence("nomask"))
    assert nomask.verdict == "holds" and nomask.primary.startswith("KID")
    primary = [item for item in nomask.evidence if item["role"] == "primary"]
    assert [item["metric"] for item in primary] == ["kid"]
    assert {item["metric"] for item in nomask.evidence if item["role"] == "secondary"} == {"fid"}
    assert "appearance" not in nomask.reason
    assert "unpaired" in nomask.difference
    equivalent = claim(results, realism_sentence("autoencoder"))
    assert equivalent.verdict == "equivalent" and f"+-{PRACTICAL_MARGINS['kid']:g}" in equivalent.reason
    missing = claim(results, realism_sentence("cgan"))
    assert missing.verdict == "missing" and missing.reason.count("missing rows") == 1
    assert "common to full and cgan" in missing.reason
    assert realism_sentence("full-random") not in {result.claim for result in results}


# --- masks: the stronger floor decides -------------------------------------------------------


def test_mask_claim_is_decided_against_the_stronger_floor() -> None:
    # The held-out car set of issue 18: above the prior mask, not above the nearest neighbour.
    rows = frame(row("full", "patches", "key", "mask_iou", 0.317, 0.292, 0.341),
                 row(PRIOR_MASK, "patches", "key", "mask_iou", 0.268, 0.251, 0.288),
                 row(NEAREST_NEIGHBOUR, "patches", "key", "mask_iou", 0.305, 0.284, 0.325))
    result = claim(check_claims(rows), PRIOR_MASK_CLAIM)
    assert result.verdict == "underpowered"
    assert "stronger floor: nearest neighbour" in result.reason
    assert "nearest neighbour 0.305" in result.difference
    assert "would decide it" in result.power
    holds = claim(check_claims(frame(key("full", "mask_iou", 0.62), key(PRIOR_MASK, "mask_iou", 0.41),
                                     key(NEAREST_NEIGHBOUR, "mask_iou", 0.45))), PRIOR_MASK_CLAIM)
    assert holds.verdict == "holds" and "(nearest neighbour absent)" not in holds.reason
    fails = claim(check_claims(frame(key("full", "mask_iou", 0.30), key(PRIOR_MASK, "mask_iou", 0.41))),
                  PRIOR_MASK_CLAIM)
    assert fails.verdict == "fails" and "(nearest neighbour absent)" in fails.reason
    missing = claim(check_claims(frame(key("full", "mask_iou", 0.62))), PRIOR_MASK_CLAIM)
    assert missing.verdict == "missing" and "prior mask" in missing.reason


def test_paired_samples_decide_where_the_cells_intervals_overlap() -> None:
    """Both models vary a lot from image to image, in step: the cells overlap, the paired
    difference does not."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0.2, 0.9, 200)
    model = np.clip(images[None, :] + 0.03 + rng.normal(0, 0.01, (3, 200)), 0, 1)
    floor = np.clip(images[None, :] + rng.normal(0, 0.01, (1, 200)), 0, 1)
    samples = pd.concat([samples_of("full", "key", "mask_iou", model),
                         samples_of(PRIOR_MASK, "key", "mask_iou", floor)], ignore_index=True)
    result = claim(check_claims(rows_from(samples), samples), PRIOR_MASK_CLAIM)
    assert result.verdict == "holds" and "paired, 3 vs 1 seeds x 200 images" in result.difference
    cells = [item for item in result.evidence if item["role"] == "primary"]
    assert cells[0]["low"] > 0
    # Without the per-sample values, the same rows cannot decide it.
    assert claim(check_claims(rows_from(samples)), PRIOR_MASK_CLAIM).verdict == "underpowered"
    # Values on other images are never paired.
    shifted = samples.copy()
    shifted.loc[shifted["variant"] == PRIOR_MASK, "sample"] += 1
    unpaired = claim(check_claims(rows_from(shifted), shifted), PRIOR_MASK_CLAIM)
    assert "unpaired: the image ids differ (200 vs 200, 199 shared)" in unpaired.difference


# --- multiplicity, equivalence, power -----------------------------------------------------------


def near_miss_rows() -> list[dict]:
    """Two claims with p ~= 0.03 each (one seed, given intervals): each holds alone, neither
    survives Holm's correction for two."""
    half = 0.0128  # 95 % half-width: SE of the difference 0.0092, z = 2.17
    return [key("full", "mask_iou", 0.62, half), key(PRIOR_MASK, "mask_iou", 0.60, half),
            key("full", "ssim", 0.52, half), row("full", "patches", "random", "ssim", 0.50, 0.50 - half,
                                                   0.50 + half)]


def test_holm_changes_a_verdict_when_claims_are_decided_together() -> None:
    rows = near_miss_rows()
    mask_alone = claim(check_claims(frame(*rows[:2])), PRIOR_MASK_CLAIM)
    ssim_alone = claim(check_claims(frame(*rows[2:])), KEY_VS_RANDOM_CLAIM)
    assert mask_alone.verdict == ssim_alone.verdict == "holds"
    assert 0.02 < mask_alone.p_value < 0.04 and mask_alone.holm_level == pytest.approx(0.05)
    together = [claim(check_claims(frame(*rows)), text) for text in (PRIOR_MASK_CLAIM, KEY_VS_RANDOM_CLAIM)]
    for result in together:
        assert result.verdict == "underpowered" and "2 claims)" in result.reason
    # The smaller p is tested at 0.05 / 2 and is not below it, so testing stops there.
    assert sorted(result.holm_level for result in together) == pytest.approx([0.025, 0.05])


def test_equivalent_and_underpowered_arise_on_rows_built_for_them() -> None:
    def key_vs_random(key_ssim: float, random_ssim: float, half: float) -> ClaimResult:
        return claim(check_claims(frame(key("full", "ssim", key_ssim, half),
                                        row("full", "patches", "random", "ssim", random_ssim,
                                            random_ssim - half, random_ssim + half))), KEY_VS_RANDOM_CLAIM)
    equivalent = key_vs_random(0.500, 0.501, 0.002)
    assert equivalent.verdict == "equivalent" and not equivalent.power
    underpowered = key_vs_random(0.52, 0.50, 0.05)
    assert underpowered.verdict == "underpowered"
    assert "seeds" in underpowered.power or "images" in underpowered.power
    # One value per seed and no interval: more seeds, said so.
    single = claim(check_claims(frame(*per_seed("full", "kid", [0.02]), *per_seed("nomask", "kid", [0.03]))),
                   realism_sentence("nomask"))
    assert single.verdict == "underpowered" and "more seeds" in single.power


def test_underpowered_says_how_many_images_would_decide_it() -> None:
    rng = np.random.default_rng(1)
    images = rng.uniform(0.2, 0.9, 50)
    key_values = images[None, :] + 0.004 + rng.normal(0, 0.02, (2, 50))
    random_values = images[None, :] + rng.normal(0, 0.02, (2, 50))
    samples = pd.concat([samples_of("full", "key", "ssim", key_values),
                         samples_of("full", "random", "ssim", random_values)], ignore_index=True)
    result = claim(check_claims(rows_from(samples), samples), KEY_VS_RANDOM_CLAIM)
    assert result.verdict == "underpowered" and "(now 50)" in result.power
    assert "paired, 2 seeds x 50 images" in result.difference  # the two conditions share their runs


# --- the other claims ---------------------------------------------------------------------


def accuracy_rows(trained: float, random_init: float, raw: float | None, half: float = 0.02) -> pd.DataFrame:
    values = {"encoder:trained": trained, "encoder:random_init": random_init, "raw_pixels": raw}
    return frame(*(row("full", "classification", condition, "accuracy", value, value - half, value + half,
                       extractor=condition)
                   for condition, value in values.items() if value is not None))


def test_encoder_claim_needs_both_steps() -> None:
    assert claim(check_claims(accuracy_rows(0.8, 0.6, 0.4)), ENCODER_CLAIM).verdict == "holds"
    assert claim(check_claims(accuracy_rows(0.5, 0.7, 0.3)), ENCODER_CLAIM).verdict == "fails"
    assert claim(check_claims(accuracy_rows(0.8, 0.6, 0.59)), ENCODER_CLAIM).verdict == "underpowered"
    missing = claim(check_claims(accuracy_rows(0.8, 0.6, None)), ENCODER_CLAIM)
    assert missing.verdict == "missing" and "raw_pixels" in missing.reason


def noise_rows(curve: dict[float, float], swapped: float | None = 0.2, dependence: float = 0.5,
               half: float = 0.01) -> pd.DataFrame:
    rows = [key("full", "image_dependence", dependence, half)]
    rows += [row("full", "noise", f"all sigma={sigma:g}", "ssim", value, value - half, value + half)
             for sigma, value in curve.items()]
    if swapped is not None:
        rows.append(row("full", "noise", "swapped", "ssim", swapped, swapped - half, swapped + half))
    return frame(*rows)


def test_noise_claim_reads_r_with_an_interval() -> None:
    holds = claim(check_claims(noise_rows({0: 0.8, 0.05: 0.78, 0.1: 0.76, 0.4: 0.3})), NOISE_CLAIM)
    assert holds.verdict == "holds" and "r(0.05) = 0.967 [" in holds.difference + holds.reason
    assert "r(0.4) = 0.167" in holds.reason and "secondary" in holds.reason  # large sigma: shown only
    fails = claim(check_claims(noise_rows({0: 0.8, 0.05: 0.4, 0.1: 0.3})), NOISE_CLAIM)
    assert fails.verdict == "fails"
    ignores = claim(check_claims(noise_rows({0: 0.8, 0.05: 0.78}, dependence=0.001, half=0.001)), NOISE_CLAIM)
    assert ignores.verdict == "fails" and "image dependence" in ignores.difference
    missing = claim(check_claims(noise_rows({0: 0.8, 0.05: 0.78}, swapped=None)), NOISE_CLAIM)
    assert missing.verdict == "missing" and "swapped" in missing.reason


def order(variant: str, value: float, half: float = 0.01) -> dict:
    return key(variant, "image_order_dependence", value, half)


def test_order_claim_reads_concatenation_from_the_variant_specs() -> None:
    uses_input = key("depth_concat", "image_dependence", 0.5)
    holds = claim(check_claims(frame(order("full", 0.0, 0.0), order("depth_concat", 0.4), uses_input)),
                  ORDER_CLAIM)
    assert holds.verdict == "holds"
    ignored_order = frame(order("full", 0.0, 0.0), order("depth_concat", 0.01, 0.005), uses_input)
    fails = claim(check_claims(ignored_order), ORDER_CLAIM)
    assert fails.verdict == "fails"
    # cgan concatenates its patches too (its spec's encoder_fusion): it is held to the same test.
    cgan = claim(check_claims(frame(order("full", 0.0, 0.0), order("cgan", 0.4))), ORDER_CLAIM)
    assert cgan.verdict == "missing" and "image_dependence" in cgan.reason
    assert ORDER_CLAIM not in {r.claim for r in check_claims(frame(order("full", 0.0), order("nomask", 0.0)))}


def test_random_trained_and_other_n_claims_find_their_runs_by_label() -> None:
    rows = frame(key("full", "ssim", 0.6), row("full-random", "patches", "random", "ssim", 0.5, 0.49, 0.51),
                 row("full", "patches", "random", "ssim", 0.1, 0.09, 0.11))
    result = claim(check_claims(rows), RANDOM_TRAINED_CLAIM)
    assert result.verdict == "holds" and "full 0.600 vs full-random 0.500" in result.difference

    def n_rows(n5_iou: float) -> pd.DataFrame:
        return frame(key("full-n2", "mask_iou", 0.5), key(f"{PRIOR_MASK}-n2", "mask_iou", 0.3),
                     key(f"{NEAREST_NEIGHBOUR}-n2", "mask_iou", 0.35),
                     key("full-n5", "mask_iou", n5_iou), key(f"{PRIOR_MASK}-n5", "mask_iou", 0.45))
    assert claim(check_claims(n_rows(0.7)), NUM_PATCHES_CLAIM).verdict == "holds"
    assert claim(check_claims(n_rows(0.3)), NUM_PATCHES_CLAIM).verdict == "fails"
    reason = claim(check_claims(n_rows(0.7)), NUM_PATCHES_CLAIM).reason
    assert "N=2 stronger floor: nearest neighbour" in reason


def test_study_claim_reads_preferences_against_one_half() -> None:
    def rows(*rates: tuple[str, float, float, float]) -> pd.DataFrame:
        return frame(*(row("full", "user_study", f"vs {other}", "preference", value, low, high)
                       for other, value, low, high in rates))
    assert claim(check_claims(rows(("nomask", 0.7, 0.6, 0.8), ("cgan", 0.65, 0.55, 0.74))),
                 STUDY_CLAIM).verdict == "holds"
    assert claim(check_claims(rows(("nomask", 0.7, 0.6, 0.8), ("cgan", 0.3, 0.2, 0.4))),
                 STUDY_CLAIM).verdict == "fails"
    assert STUDY_CLAIM not in {result.claim for result in check_claims(frame())}


def test_no_rows_make_missing_claims_and_the_frame_tabulates_primary_metrics() -> None:
    results = check_claims(frame())
    assert {result.verdict for result in results} == {"missing"}
    assert [result.claim for result in results] == [KEY_VS_RANDOM_CLAIM, ENCODER_CLAIM, NOISE_CLAIM,
                                                     PRIOR_MASK_CLAIM]
    table = claims_frame(results)
    assert list(table.columns) == ["claim", "primary", "difference", "verdict", "power", "reason"]
    assert table["primary"].str.len().gt(0).all()
    assert set(SAMPLE_COLUMNS) >= {"sample", "value"}


def test_noise_claim_resamples_the_three_conditions_jointly_from_samples() -> None:
    rng = np.random.default_rng(2)
    images = rng.uniform(0.4, 0.8, 80)
    levels = {"all sigma=0": 0.0, "all sigma=0.05": -0.02, "swapped": -0.3}
    samples = pd.concat([samples_of("full", condition, "ssim", images[None, :] + shift
                                    + rng.normal(0, 0.01, (2, 80)), protocol="noise")
                         for condition, shift in levels.items()]
                        + [samples_of("full", "key", "image_dependence", rng.uniform(0.4, 0.6, (2, 80)))],
                        ignore_index=True)
    result = claim(check_claims(rows_from(samples), samples), NOISE_CLAIM)
    assert result.verdict == "holds"
    r = [item for item in result.evidence if item["what"].startswith("relative")][0]
    assert 0.9 < r["low"] < r["mean"] < r["high"] < 1.0 and "2 seeds x 80 images" in r["basis"]


def test_a_single_seed_model_borrows_the_pooled_seed_variance_and_says_so() -> None:
    """nomask has one seed; full's five seeds spread widely: nomask's interval takes that pooled
    between-seed variance, not only its test-image interval; the floor takes none."""
    full = [key("full", "mask_iou", value, 0.005, seed=seed)
            for seed, value in enumerate((0.5, 0.6, 0.7, 0.55, 0.65))]
    rows = frame(*full, key("nomask", "mask_iou", 0.66, 0.005), key(PRIOR_MASK, "mask_iou", 0.3, 0.005))
    evidence = Evidence(rows)
    pooled = evidence.pooled_seed_var(Side("nomask", "patches", "key", "mask_iou"))
    assert pooled == pytest.approx(np.var([0.5, 0.6, 0.7, 0.55, 0.65], ddof=1))
    cell_ = evidence.cell(Side("nomask", "patches", "key", "mask_iou"))
    assert cell_.high - cell_.low > 0.2 and "pooled" in cell_.note
    floor = evidence.cell(Side(PRIOR_MASK, "patches", "key", "mask_iou"))
    assert floor.high - floor.low < 0.02  # floors need no training: no seed variance


def test_missing_rows_are_named_once_each_with_the_models_that_lack_them() -> None:
    # Models trained with N=2 and N=4, no floor evaluated at either N: four absent cells, one cell kind.
    rows = frame(key("full-n2", "mask_iou", 0.5), key("full-n4", "mask_iou", 0.6))
    result = claim(check_claims(rows), NUM_PATCHES_CLAIM)
    assert result.verdict == "missing"
    assert result.reason.count("missing rows") == 1 and result.reason.count("patches/key mask_iou") == 1
    assert result.reason.startswith("missing rows: patches/key mask_iou for prior mask")
    for floor in (PRIOR_MASK, NEAREST_NEIGHBOUR):
        for n in (2, 4):
            assert f"{variant_label(f'{floor}-n{n}')}" in result.reason
    # The encoder claim lacks three cells of one model: the model is named once.
    encoder = claim(check_claims(frame(key("full", "mask_iou", 0.5))), ENCODER_CLAIM)
    assert encoder.reason.count(" for ") == 1 and encoder.reason.endswith(" for full")
