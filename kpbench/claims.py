"""Claim check: the paper's claims as kpbench tests them, each judged from the tidy result rows.
(Claim 5 and the raw-pixel half of claim 3 are the benchmark's own checks, not the paper's.)

Every verdict is computed from rows (:data:`kpbench.results.COLUMNS`), never written by hand.
A *cell* is one (variant, protocol, condition, metric, extractor) aggregated over seeds the way
the report does it: duplicate rows of one seed are averaged first (value, ci_low and ci_high),
then :func:`kpbench.stats.cell_interval` gives the mean and interval over seeds. Two cells
differ only when their intervals are separated (:func:`kpbench.stats.separated`), read through
the metric's direction (:data:`kpbench.results.METRIC_DIRECTION`).

Claims and their rules (:func:`check_claims`):

1. *The full model beats <ablation>*, for each ablation with rows: FID and KID (``fid``
   protocol, same extractor), appearance L1 and mask IoU (``patches``/``key``; mask IoU only
   where both models have a mask). Holds when at least one metric is better and none worse,
   fails when at least one is worse and none better, inconclusive otherwise.
2. *Key patches beat random patches* (full, ``patches``: key vs random on mask IoU, appearance
   L1, SSIM); the same rule.
3. *The trained encoder classifies better than a random one, which beats raw pixels* (full,
   ``classification`` accuracy): holds when both steps are better, fails when either is worse.
4. *The model is robust to a small amount of noise, and depends on its input* (the paper's words
   for the first half; full, ``noise``, SSIM, noise on all patches): see :func:`check_noise`.
5. *Predicted masks beat the prior mask* (full vs ``baseline:prior_mask``, ``patches``/``key``
   mask IoU): holds when better, fails when worse.
6. *Concatenating the patches makes the output depend on their order; the Siamese sum does
   not* (the paper's reason to reject its Fig. 4(b, c)): ``patches``/``key``
   image_order_dependence of ``depth_concat`` and ``siamese_concat`` clearly above
   :data:`MIN_ORDER_DEPENDENCE`, the full model's clearly below it. A concatenating model that
   does not clearly depend on its input (image_dependence) leaves the claim open: it would be
   order-invariant because it ignores the patches altogether.
7. *Training on key patches beats training on random patches* (the paper: random patches are
   "a more difficult problem"): run label ``full`` tested on key patches vs ``full-random``
   (trained on random patches, kpbench.identity) tested on random patches; the rule of 1.
8. *Models trained with other N still predict masks* ("proper images for a different number of
   inputs"): each ``full-n<K>`` beats its own prior mask (``baseline:prior_mask-n<K>``) on
   ``patches``/``key`` mask IoU; holds when all do, fails when any is worse.

9. *People find the full model's images more realistic than each other model's* (the paper's
   user study): ``user_study`` preference of ``full`` over each other model, interval above
   0.5 for all (holds), below 0.5 for any (fails), otherwise inconclusive.

Claims read run labels (``variant`` after kpbench.report.label_runs): ``full`` is the full
model with default settings, ``full-random`` the same trained on random patches.

A claim whose data is missing is inconclusive, and its reason says what is missing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from kpbench.results import BASELINE_PREFIX, COLUMNS, is_baseline, metric_direction
from kpbench.stats import CellStats, cell_interval, separated

Verdict = Literal["holds", "fails", "inconclusive"]
Outcome = Literal["better", "worse", "tie", "missing"]

FULL = "full"
ABLATIONS: tuple[str, ...] = ("naive_gan", "nomask", "autoencoder", "cgan",
                               "depth_concat", "siamese_concat", "independent_masks", "noskip")
ORDER_DEPENDENT: tuple[str, ...] = ("depth_concat", "siamese_concat")  # Fig. 4(b, c)
RANDOM_TRAINED = "full-random"
# Output change under a permutation of the patches, on the input-dependence scale: a model is
# order-dependent when its interval lies above this, order-invariant when below.
MIN_ORDER_DEPENDENCE = 0.05
ORDER_METRIC = "image_order_dependence"
PRIOR_MASK = f"{BASELINE_PREFIX}prior_mask"

PATCHES = "patches"
KEY = "key"
RANDOM = "random"
FID_PROTOCOL = "fid"
FID_CONDITION = "key patches"
CLASSIFICATION = "classification"
TRAINED_ENCODER = "encoder:trained"
RANDOM_ENCODER = "encoder:random_init"
RAW_PIXELS = "raw_pixels"
NOISE = "noise"
NOISE_TARGET = "all"  # noise on every input patch
SWAPPED = "swapped"  # each image given another image's patches, no noise

ABLATION_FEATURE_METRICS: tuple[str, ...] = ("fid", "kid")  # fid protocol, per extractor
ABLATION_PATCH_METRICS: tuple[str, ...] = ("appearance_l1", "mask_iou")  # patches/key
KEY_VS_RANDOM_METRICS: tuple[str, ...] = ("mask_iou", "appearance_l1", "ssim")
NOISE_METRIC = "ssim"
DEPENDENCE_METRIC = "image_dependence"

# The model depends on its input when the lower bound of its image_dependence interval exceeds
# this (0 = outputs ignore the input, 1 = outputs differ as much as real images do).
MIN_INPUT_DEPENDENCE = 0.05
# Relative score r(sigma) = (m(sigma) - m(swapped)) / (m(0) - m(swapped)): 1 = clean input,
# 0 = as bad as another image's patches. The paper: "robust to a small amount of noise". Small =
# sigma <= SMALL_NOISE_SIGMA on the [-1, 1] scale (5 % of the range); robust = r stays at least
# MIN_RELATIVE_UNDER_SMALL_NOISE there, i.e. small noise costs at most a quarter of what losing
# the input altogether costs.
SMALL_NOISE_SIGMA = 0.1
MIN_RELATIVE_UNDER_SMALL_NOISE = 0.75

KEY_VS_RANDOM_CLAIM = ("Key patches beat random patches (given at test time to a model trained "
                       "on key patches).")
ENCODER_CLAIM = "The trained encoder classifies better than a random one, which beats raw pixels."
NOISE_CLAIM = "The model is robust to a small amount of noise, and depends on its input."
PRIOR_MASK_CLAIM = "Predicted masks beat the prior mask."
ORDER_CLAIM = ("Concatenating the patches (Fig. 4(b, c)) makes the output depend on their order; "
               "the Siamese sum does not.")
RANDOM_TRAINED_CLAIM = ("Training on key patches beats training on random patches (each tested on "
                        "its own kind).")
NUM_PATCHES_CLAIM = "Models trained with another number of patches N still beat the prior mask."
STUDY_CLAIM = "People find the full model's images more realistic than each other model's (user study)."
STUDY = "user_study"
_N_LABEL = re.compile(r"^full-n(?P<n>\d+)$")

_SIGMA_PATTERN = re.compile(r"^(?P<target>\S+) sigma=(?P<sigma>\S+)$")


def ablation_claim(ablation: str) -> str:
    """The claim sentence for one ablation."""
    return f"The full model beats {ablation}."


@dataclass(frozen=True)
class ClaimResult:
    """One claim, its verdict, a short reason with the numbers, and the cells behind it
    (dicts with variant, protocol, condition, extractor, metric, mean, low, high, seeds)."""

    claim: str
    verdict: Verdict
    reason: str
    evidence: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Cell:
    """A cell's identity with its statistics (``stats`` None when no seed has a value)."""

    variant: str
    protocol: str
    condition: str
    metric: str
    extractor: str | None
    stats: CellStats | None
    missing: str  # why ``stats`` is None ("" when present)

    def evidence(self) -> dict[str, Any]:
        assert self.stats is not None
        return {
            "variant": self.variant, "protocol": self.protocol, "condition": self.condition,
            "extractor": self.extractor or "", "metric": self.metric, "mean": self.stats.mean,
            "low": self.stats.low, "high": self.stats.high, "seeds": self.stats.seeds,
        }

    def numbers(self) -> str:
        """``"0.620 [0.600, 0.640]"``; ``"0.620 (no interval)"`` when none can be formed."""
        assert self.stats is not None
        stats = self.stats
        if math.isnan(stats.low) or math.isnan(stats.high):
            return f"{_number(stats.mean)} (no interval)"
        return f"{_number(stats.mean)} [{_number(stats.low)}, {_number(stats.high)}]"

    def text(self, by_condition: bool = False) -> str:
        """``"full 0.620 [0.600, 0.640]"`` (named by its condition when ``by_condition``)."""
        name = self.condition if by_condition else variant_label(self.variant)
        return f"{name} {self.numbers()}"


def variant_label(variant: str) -> str:
    """``baseline:prior_mask`` -> ``prior mask``; trained variants unchanged."""
    if is_baseline(variant):
        return variant[len(BASELINE_PREFIX):].replace("_", " ")
    return variant


def _number(value: float) -> str:
    """Three significant digits, trailing zeros kept: 0.6 -> 0.600, 31.24 -> 31.2."""
    text = f"{value:#.3g}"
    return text[:-1] if text.endswith(".") else text


def _normalise(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with every column of :data:`COLUMNS` (missing intervals NaN, extractor "")."""
    frame = rows.copy()
    for column in COLUMNS:
        if column not in frame:
            frame[column] = "" if column in ("extractor", "note", "condition") else math.nan
    for column in ("value", "ci_low", "ci_high"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in ("variant", "protocol", "condition", "metric", "extractor"):
        frame[column] = frame[column].fillna("").astype(str)
    return frame


def _lookup(rows: pd.DataFrame, variant: str, protocol: str, condition: str, metric: str,
            extractor: str | None = None) -> _Cell:
    selected = rows[(rows["variant"] == variant) & (rows["protocol"] == protocol)
                    & (rows["condition"] == condition) & (rows["metric"] == metric)]
    if extractor is not None:
        selected = selected[selected["extractor"] == extractor]
    elif selected["extractor"].nunique() > 1:
        raise ValueError(f"{variant} {protocol}/{condition} {metric} has rows from several extractors "
                         f"({', '.join(sorted(selected['extractor'].unique()))}): name one")
    where = f"{protocol}/{condition} {metric}" + (f" ({extractor})" if extractor else "")
    if selected.empty:
        return _Cell(variant, protocol, condition, metric, extractor, None,
                     f"no {where} rows for {variant_label(variant)}")
    per_seed = (selected.groupby("seed", dropna=False)[["value", "ci_low", "ci_high"]]
                .mean().reset_index())
    stats = cell_interval(per_seed["value"].to_numpy(), per_seed["ci_low"].to_numpy(),
                          per_seed["ci_high"].to_numpy())
    if stats.seeds == 0:
        return _Cell(variant, protocol, condition, metric, extractor, None,
                     f"no {where} value for {variant_label(variant)}")
    return _Cell(variant, protocol, condition, metric, extractor, stats, "")


def cell(rows: pd.DataFrame, variant: str, protocol: str, condition: str, metric: str,
         extractor: str | None = None) -> CellStats | None:
    """Statistics of one cell over seeds: duplicate rows of a seed are averaged (value, ci_low,
    ci_high), then :func:`kpbench.stats.cell_interval` combines the seeds. None when no row
    matches or no seed has a value. ``extractor`` None matches any extractor, but rows from
    several extractors are never pooled: that raises ValueError."""
    return _lookup(_normalise(rows), variant, protocol, condition, metric, extractor).stats


def compare(a: CellStats | None, b: CellStats | None, metric: str) -> Outcome:
    """``a`` against ``b`` on ``metric``: "better"/"worse" when their intervals are separated
    (:func:`kpbench.stats.separated`) and ``a`` lies on the better/worse side for the metric's
    direction, "tie" when they are not separated (or either has no interval), "missing" when
    either cell is absent. A metric without a direction raises ValueError."""
    direction = metric_direction(metric)
    if direction is None:
        raise ValueError(f"{metric} has no direction: it cannot be better or worse")
    if a is None or b is None or a.seeds == 0 or b.seeds == 0:
        return "missing"
    if not separated(a.low, a.high, b.low, b.high):
        return "tie"
    a_higher = a.low > b.high
    return "better" if a_higher == (direction == "higher") else "worse"


def _compare_cells(a: _Cell, b: _Cell) -> Outcome:
    return compare(a.stats, b.stats, a.metric)


def _metric_label(item: _Cell) -> str:
    return f"{item.metric} ({item.extractor})" if item.extractor else item.metric


def _majority_verdict(pairs: Sequence[tuple[str, _Cell, _Cell]], by_condition: bool = False
                      ) -> tuple[Verdict, str, list[dict]]:
    """Verdict over labelled pairs (label, a, b) judged as a vs b: holds when at least one pair
    is better and none worse, fails when at least one is worse and none better, inconclusive
    otherwise (all ties, mixed, nothing comparable). The reason lists every comparison (cells
    named by variant, or by condition when ``by_condition``) and what is missing."""
    parts: list[str] = []
    missing: list[str] = []
    evidence: list[dict] = []
    outcomes: list[Outcome] = []
    for label, a, b in pairs:
        for item in (a, b):
            if item.stats is not None:
                evidence.append(item.evidence())
        outcome = _compare_cells(a, b)
        if outcome == "missing":
            missing.extend(item.missing for item in (a, b) if item.stats is None)
            continue
        outcomes.append(outcome)
        parts.append(f"{label}: {a.text(by_condition)} vs {b.text(by_condition)} ({outcome})")
    missing = list(dict.fromkeys(missing))
    if not outcomes:
        reason = "; ".join(missing) if missing else "no comparable rows"
        return "inconclusive", reason, evidence
    better, worse = "better" in outcomes, "worse" in outcomes
    if better and not worse:
        verdict: Verdict = "holds"
    elif worse and not better:
        verdict = "fails"
    else:
        verdict = "inconclusive"
    return verdict, "; ".join(parts + missing), evidence


def _has_rows(rows: pd.DataFrame, variant: str, protocol: str, condition: str, metric: str) -> bool:
    return bool(((rows["variant"] == variant) & (rows["protocol"] == protocol)
                 & (rows["condition"] == condition) & (rows["metric"] == metric)).any())


def _extractors(rows: pd.DataFrame, variant: str, protocol: str, condition: str) -> list[str]:
    selected = rows[(rows["variant"] == variant) & (rows["protocol"] == protocol)
                    & (rows["condition"] == condition)]
    return list(dict.fromkeys(selected["extractor"]))


def check_ablation(rows: pd.DataFrame, ablation: str) -> ClaimResult:
    """Claim 1 for one ablation: full vs ``ablation`` on FID and KID (each extractor both have
    rows for), appearance L1 and, where both have a mask, mask IoU (``patches``/``key``)."""
    rows = _normalise(rows)
    pairs: list[tuple[str, _Cell, _Cell]] = []
    full_extractors = _extractors(rows, FULL, FID_PROTOCOL, FID_CONDITION)
    ablation_extractors = _extractors(rows, ablation, FID_PROTOCOL, FID_CONDITION)
    shared = [extractor for extractor in full_extractors if extractor in ablation_extractors]
    for extractor in shared:
        for metric in ABLATION_FEATURE_METRICS:
            a = _lookup(rows, FULL, FID_PROTOCOL, FID_CONDITION, metric, extractor)
            b = _lookup(rows, ablation, FID_PROTOCOL, FID_CONDITION, metric, extractor)
            pairs.append((_metric_label(a), a, b))
    for metric in ABLATION_PATCH_METRICS:
        if metric == "mask_iou" and not (_has_rows(rows, FULL, PATCHES, KEY, metric)
                                         and _has_rows(rows, ablation, PATCHES, KEY, metric)):
            continue  # a model without a mask decoder has no mask to compare
        a = _lookup(rows, FULL, PATCHES, KEY, metric)
        b = _lookup(rows, ablation, PATCHES, KEY, metric)
        pairs.append((metric, a, b))
    verdict, reason, evidence = _majority_verdict(pairs)
    if not shared:
        if not ablation_extractors:
            gap = f"no fid rows for {ablation}"
        elif not full_extractors:
            gap = f"no fid rows for {FULL}"
        else:
            gap = f"no fid rows with an extractor common to {FULL} and {ablation}"
        reason = gap if reason == "no comparable rows" else f"{reason}; {gap}"
    return ClaimResult(ablation_claim(ablation), verdict, reason, evidence)


def check_key_vs_random(rows: pd.DataFrame) -> ClaimResult:
    """Claim 2: the full model on key vs random patches (mask IoU, appearance L1, SSIM); holds
    when at least one metric is better with key patches and none worse, fails the other way."""
    rows = _normalise(rows)
    pairs = [(metric, _lookup(rows, FULL, PATCHES, KEY, metric), _lookup(rows, FULL, PATCHES, RANDOM, metric))
             for metric in KEY_VS_RANDOM_METRICS]
    verdict, reason, evidence = _majority_verdict(pairs, by_condition=True)  # both cells are full
    return ClaimResult(KEY_VS_RANDOM_CLAIM, verdict, reason, evidence)


def check_encoder(rows: pd.DataFrame) -> ClaimResult:
    """Claim 3: classification accuracy of the full model's features, trained encoder vs
    random-init encoder vs raw pixels. Holds when both steps are better (separated), fails
    when either step is worse, inconclusive otherwise (ties or missing data)."""
    rows = _normalise(rows)
    trained, random_init, raw = (_lookup(rows, FULL, CLASSIFICATION, condition, "accuracy")
                                 for condition in (TRAINED_ENCODER, RANDOM_ENCODER, RAW_PIXELS))
    evidence = [item.evidence() for item in (trained, random_init, raw) if item.stats is not None]
    parts: list[str] = []
    outcomes: list[Outcome] = []
    for a, b in ((trained, random_init), (random_init, raw)):
        outcome = _compare_cells(a, b)
        outcomes.append(outcome)
        if outcome == "missing":
            parts.extend(item.missing for item in (a, b) if item.stats is None)
        else:
            parts.append(f"{a.text(by_condition=True)} vs {b.text(by_condition=True)} ({outcome})")
    parts = list(dict.fromkeys(parts))
    if "worse" in outcomes:
        verdict: Verdict = "fails"
    elif all(outcome == "better" for outcome in outcomes):
        verdict = "holds"
    else:
        verdict = "inconclusive"
    return ClaimResult(ENCODER_CLAIM, verdict, "; ".join(parts), evidence)


def _noise_sigmas(rows: pd.DataFrame, target: str) -> dict[float, str]:
    """sigma -> condition name for the noise conditions of ``target`` (e.g. "all sigma=0.1")."""
    found: dict[float, str] = {}
    selected = rows[(rows["variant"] == FULL) & (rows["protocol"] == NOISE)
                    & (rows["metric"] == NOISE_METRIC)]
    for condition in dict.fromkeys(selected["condition"]):
        match = _SIGMA_PATTERN.match(condition)
        if match is None or match["target"] != target:
            continue
        try:
            found[float(match["sigma"])] = condition
        except ValueError:
            continue
    return dict(sorted(found.items()))


def check_noise(rows: pd.DataFrame) -> ClaimResult:
    """Claim 4, full model, SSIM, noise on all patches.

    - *Depends on its input*: the lower bound of ``patches``/``key`` image_dependence exceeds
      :data:`MIN_INPUT_DEPENDENCE`. If not, the claim fails: robustness of a model that ignores
      its input means nothing.
    - *Robust to small noise*: r(sigma) = (m(sigma) - m(swapped)) / (m(0) - m(swapped)) is at
      least :data:`MIN_RELATIVE_UNDER_SMALL_NOISE` at every nonzero sigma up to
      :data:`SMALL_NOISE_SIGMA`. Otherwise the claim fails. Larger sigmas are reported in the
      reason, not judged (the paper claims nothing about them).

    Inconclusive when data is missing, when the dependence has no interval, or when m(0) is not
    separated from (above) m(swapped), so that r has no scale.
    """
    rows = _normalise(rows)
    dependence = _lookup(rows, FULL, PATCHES, KEY, DEPENDENCE_METRIC)
    if dependence.stats is None:
        return ClaimResult(NOISE_CLAIM, "inconclusive", dependence.missing)
    evidence = [dependence.evidence()]
    dependence_text = f"{DEPENDENCE_METRIC} {dependence.numbers()}"
    if math.isnan(dependence.stats.low):
        return ClaimResult(NOISE_CLAIM, "inconclusive",
                           f"{dependence_text} has no interval, so input dependence is not established",
                           evidence)
    if not dependence.stats.low > MIN_INPUT_DEPENDENCE:
        return ClaimResult(
            NOISE_CLAIM, "fails",
            f"{dependence_text} is not clearly above {MIN_INPUT_DEPENDENCE:g}: the model does not "
            "(demonstrably) depend on its input, so robustness to noise means nothing", evidence)

    sigmas = _noise_sigmas(rows, NOISE_TARGET)
    clean_condition = sigmas.pop(0.0, None)
    gaps = []
    if clean_condition is None:
        gaps.append(f"no {NOISE}/{NOISE_TARGET} sigma=0 {NOISE_METRIC} rows for {FULL}")
    if not sigmas:
        gaps.append(f"no {NOISE}/{NOISE_TARGET} nonzero-sigma {NOISE_METRIC} rows for {FULL}")
    swapped = _lookup(rows, FULL, NOISE, SWAPPED, NOISE_METRIC)
    if swapped.stats is None:
        gaps.append(swapped.missing)
    clean = _lookup(rows, FULL, NOISE, clean_condition, NOISE_METRIC) if clean_condition else None
    if clean is not None and clean.stats is None:
        gaps.append(clean.missing)
    noisy = {sigma: _lookup(rows, FULL, NOISE, condition, NOISE_METRIC)
             for sigma, condition in sigmas.items()}
    gaps.extend(item.missing for item in noisy.values() if item.stats is None)
    evidence.extend(item.evidence() for item in (clean, *noisy.values(), swapped)
                    if item is not None and item.stats is not None)
    if gaps:
        return ClaimResult(NOISE_CLAIM, "inconclusive", "; ".join(gaps), evidence)
    assert clean is not None and clean.stats is not None and swapped.stats is not None

    scale_text = f"{NOISE_METRIC} at sigma=0 {clean.numbers()} vs swapped {swapped.numbers()}"
    if _compare_cells(clean, swapped) != "better":
        return ClaimResult(NOISE_CLAIM, "inconclusive",
                           f"{scale_text} are not separated, so there is no scale to measure "
                           "degradation against", evidence)
    denominator = clean.stats.mean - swapped.stats.mean
    relative = {0.0: 1.0}
    for sigma, item in noisy.items():
        assert item.stats is not None
        relative[sigma] = (item.stats.mean - swapped.stats.mean) / denominator
    curve = ", ".join(f"r({sigma:g})={value:.2f}" for sigma, value in relative.items() if sigma > 0)
    head = f"{dependence_text} > {MIN_INPUT_DEPENDENCE:g}; relative {NOISE_METRIC} {curve}"
    small = {sigma: value for sigma, value in relative.items() if 0 < sigma <= SMALL_NOISE_SIGMA}
    if not small:
        return ClaimResult(NOISE_CLAIM, "inconclusive",
                           f"{head}: no sigma in (0, {SMALL_NOISE_SIGMA:g}] was measured", evidence)
    fragile = [f"r({sigma:g})={value:.2f}" for sigma, value in small.items()
               if value < MIN_RELATIVE_UNDER_SMALL_NOISE]
    if fragile:
        return ClaimResult(NOISE_CLAIM, "fails",
                           f"{head}: small noise already costs more than a quarter of the input's "
                           f"value ({', '.join(fragile)} < {MIN_RELATIVE_UNDER_SMALL_NOISE:g})", evidence)
    return ClaimResult(NOISE_CLAIM, "holds", f"{head}: robust to noise up to sigma={max(small):g} "
                       f"(r >= {MIN_RELATIVE_UNDER_SMALL_NOISE:g})", evidence)


def check_prior_mask(rows: pd.DataFrame) -> ClaimResult:
    """Claim 5: ``patches``/``key`` mask IoU of the full model vs the prior mask baseline; holds
    when better (separated), fails when worse, inconclusive on a tie or missing data."""
    rows = _normalise(rows)
    full = _lookup(rows, FULL, PATCHES, KEY, "mask_iou")
    prior = _lookup(rows, PRIOR_MASK, PATCHES, KEY, "mask_iou")
    evidence = [item.evidence() for item in (full, prior) if item.stats is not None]
    outcome = _compare_cells(full, prior)
    if outcome == "missing":
        reason = "; ".join(item.missing for item in (full, prior) if item.stats is None)
        return ClaimResult(PRIOR_MASK_CLAIM, "inconclusive", reason, evidence)
    verdict: Verdict = "holds" if outcome == "better" else "fails" if outcome == "worse" else "inconclusive"
    reason = f"{full.text()} vs {prior.text()} ({outcome})"
    return ClaimResult(PRIOR_MASK_CLAIM, verdict, reason, evidence)


def check_order(rows: pd.DataFrame) -> ClaimResult:
    """Claim 6: the concatenating variants present are order-dependent (interval above
    :data:`MIN_ORDER_DEPENDENCE`) and the full model is not (interval below it). Fails when a
    concatenating variant is clearly order-invariant or the full model clearly dependent."""
    rows = _normalise(rows)
    cells = [_lookup(rows, name, PATCHES, KEY, ORDER_METRIC) for name in (FULL, *ORDER_DEPENDENT)]
    present = [item for item in cells if item.stats is not None]
    evidence = [item.evidence() for item in present]
    full, others = cells[0], [item for item in cells[1:] if item.stats is not None]
    if full.stats is None or not others:
        missing = [item.missing for item in cells if item.stats is None]
        return ClaimResult(ORDER_CLAIM, "inconclusive", "; ".join(missing), evidence)
    threshold = MIN_ORDER_DEPENDENCE
    parts, outcomes = [], []
    for item in cells:
        if item.stats is None:
            continue
        expect_dependent = item.variant != FULL
        low, high = item.stats.low, item.stats.high
        uses_input = _lookup(rows, item.variant, PATCHES, KEY, DEPENDENCE_METRIC).stats
        if math.isnan(low) or math.isnan(high):
            outcome = "no interval"
        elif expect_dependent and not (uses_input is not None and uses_input.low > MIN_INPUT_DEPENDENCE):
            # A model that ignores its input is order-invariant for that reason alone.
            outcome = f"unclear: {DEPENDENCE_METRIC} not clearly above {MIN_INPUT_DEPENDENCE:g}"
        elif (low > threshold) if expect_dependent else (high < threshold):
            outcome = "as claimed"
        elif (high < threshold) if expect_dependent else (low > threshold):
            outcome = "contradicts"
        else:
            outcome = "unclear"
        outcomes.append(outcome)
        parts.append(f"{item.text()} ({'order-dependent' if expect_dependent else 'order-invariant'} "
                     f"expected: {outcome})")
    verdict: Verdict = ("fails" if "contradicts" in outcomes
                        else "holds" if all(o == "as claimed" for o in outcomes) else "inconclusive")
    reason = f"{ORDER_METRIC} vs {threshold:g}: " + "; ".join(parts)
    return ClaimResult(ORDER_CLAIM, verdict, reason, evidence)


def check_random_trained(rows: pd.DataFrame) -> ClaimResult:
    """Claim 7: ``full`` on key patches vs ``full-random`` on random patches (mask IoU,
    appearance L1, SSIM); the rule of claim 1."""
    rows = _normalise(rows)
    pairs = [(metric, _lookup(rows, FULL, PATCHES, KEY, metric),
              _lookup(rows, RANDOM_TRAINED, PATCHES, RANDOM, metric)) for metric in KEY_VS_RANDOM_METRICS]
    verdict, reason, evidence = _majority_verdict(pairs)
    return ClaimResult(RANDOM_TRAINED_CLAIM, verdict, reason, evidence)


def check_num_patches(rows: pd.DataFrame) -> ClaimResult:
    """Claim 8: every ``full-n<K>`` label beats ``baseline:prior_mask-n<K>`` on mask IoU."""
    rows = _normalise(rows)
    counts = {}  # full-n<K> label -> K
    for label in set(rows["variant"]):
        if match := _N_LABEL.match(label):
            counts[label] = int(match["n"])
    if not counts:
        return ClaimResult(NUM_PATCHES_CLAIM, "inconclusive", "no runs trained with another N (full-n<K>)")
    pairs = []
    for label in sorted(counts, key=counts.__getitem__):
        n = counts[label]
        pairs.append((f"N={n}", _lookup(rows, label, PATCHES, KEY, "mask_iou"),
                      _lookup(rows, f"{PRIOR_MASK}-n{n}", PATCHES, KEY, "mask_iou")))
    _, reason, evidence = _majority_verdict(pairs)
    outcomes = [_compare_cells(a, b) for _, a, b in pairs]
    # Every N must beat its prior: one worse fails the claim, one tie or gap leaves it open.
    verdict: Verdict = ("fails" if "worse" in outcomes
                        else "holds" if all(outcome == "better" for outcome in outcomes) else "inconclusive")
    return ClaimResult(NUM_PATCHES_CLAIM, verdict, reason, evidence)


def check_study(rows: pd.DataFrame) -> ClaimResult:
    """Claim 9: full's preference rate against each other model in the user study vs 0.5."""
    rows = _normalise(rows)
    selected = rows[(rows["variant"] == FULL) & (rows["protocol"] == STUDY)
                    & (rows["metric"] == "preference")]
    conditions = list(dict.fromkeys(selected["condition"]))
    if not conditions:
        return ClaimResult(STUDY_CLAIM, "inconclusive", f"no {STUDY} preference rows for {FULL}")
    cells = [_lookup(rows, FULL, STUDY, condition, "preference") for condition in conditions]
    evidence = [item.evidence() for item in cells if item.stats is not None]
    outcomes, parts = [], []
    for item in cells:
        stats = item.stats
        if stats is None or math.isnan(stats.low):
            outcome = "no interval"
        else:
            outcome = "above 0.5" if stats.low > 0.5 else "below 0.5" if stats.high < 0.5 else "overlaps 0.5"
        outcomes.append(outcome)
        parts.append(f"{item.condition}: {item.numbers() if stats is not None else item.missing} ({outcome})")
    verdict: Verdict = ("fails" if "below 0.5" in outcomes
                        else "holds" if all(o == "above 0.5" for o in outcomes) else "inconclusive")
    return ClaimResult(STUDY_CLAIM, verdict, "preference of full " + "; ".join(parts), evidence)


def check_claims(rows: pd.DataFrame) -> list[ClaimResult]:
    """Every claim, in order: one per ablation with rows (:data:`ABLATIONS`), then key vs random
    patches, the encoder, noise and the prior mask (those four always, inconclusive without
    data), then order dependence, random-trained and other-N runs where such runs have rows."""
    rows = _normalise(rows)
    present = set(rows["variant"])
    results = [check_ablation(rows, ablation) for ablation in ABLATIONS if ablation in present]
    results += [check_key_vs_random(rows), check_encoder(rows), check_noise(rows), check_prior_mask(rows)]
    if present & set(ORDER_DEPENDENT):
        results.append(check_order(rows))
    if RANDOM_TRAINED in present:
        results.append(check_random_trained(rows))
    if any(_N_LABEL.match(label) for label in present):
        results.append(check_num_patches(rows))
    if (rows["protocol"] == STUDY).any():
        results.append(check_study(rows))
    return results


def claims_frame(results: Sequence[ClaimResult]) -> pd.DataFrame:
    """``results`` as a table with columns claim, verdict, reason (for the report)."""
    return pd.DataFrame([(result.claim, result.verdict, result.reason) for result in results],
                        columns=["claim", "verdict", "reason"])
