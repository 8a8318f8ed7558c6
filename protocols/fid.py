"""``fid``: FID, KID, precision and recall of generated images against real training images, next
to the same metrics for real held-out images (the real-vs-real floor).

- **Generated set:** ``--realism-z K`` images per test patch set (each with its own z), for up to
  ``--fid-samples`` test images: N = K x patch sets.
- **Reference:** ``--fid-reference-samples`` training images (a fixed seeded subset, the same for
  every run), whose features are computed once and cached by dataset manifest (which holds the
  split), preprocessing, image indices (hence N), extractor and its weights.
- **Floor** (``baseline:real``): N real images that are not in the reference (the test split
  first, then other training images), scored against the same reference with the same features:
  what a generator whose samples were real images would score at this N. FID is biased at small
  N by an amount that depends on N, so it is read against this floor and compared only at equal
  N and extractor (rows carry both); KID is unbiased and has a bootstrap interval.

When the extractor's weights cannot be found offline, the rows carry no number but a note saying
why and how to fix it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kpbench import fid as fid_metrics
from kpbench.errors import KpbenchError
from kpbench.metricinfo import register_metric
from kpbench.protocol import EvalContext, Protocol, register_protocol, request_option
from kpbench.results import BASELINE_PREFIX, ResultRow

NAME = "fid"
CONDITION = "key patches"
REAL = f"{BASELINE_PREFIX}real"  # the real-vs-real floor's rows
METRICS = ("fid", "kid", "kid_std", "precision", "recall")
# The reference and the floor's images are drawn with this fixed seed, not the run's: every run
# of a dataset is scored against the same real images, whose features are then cached once.
REAL_SELECTION_SEED = 0


@dataclass(frozen=True)
class FidOptions:
    fid_samples: int = request_option(2048)  # test patch sets behind FID/KID (capped by the test split size)
    realism_z: int = request_option(1)  # images generated per test patch set, each with its own z
    fid_reference_samples: int = 2048  # training images in the real reference (capped)
    extractor: str = "inception"  # a registered feature extractor (kpbench.fid)
    inception_weights: Path | None = None  # torch-fidelity's Inception weights file

    def __post_init__(self) -> None:
        if self.fid_samples < 2 or self.realism_z < 1 or self.fid_reference_samples < 2:
            raise KpbenchError("fid needs fid_samples >= 2, realism_z >= 1 and fid_reference_samples >= 2")

register_metric("fid", "FID", "lower", order=170)
register_metric("kid", "KID", "lower", order=180)
register_metric("kid_std", "KID std", None, order=190)  # a spread: no direction
register_metric("precision", "precision", "higher", order=200)
register_metric("recall", "recall", "higher", order=210)


def real_selection(dataset: Any, reference_size: int, heldout_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(reference, held-out) dataset indices: ``reference_size`` training images (a seeded subset,
    capped by the split) and ``heldout_size`` images outside it, test split first (fewer when the
    data has no more)."""
    train = np.random.default_rng(REAL_SELECTION_SEED).permutation(dataset.split_indices("train"))
    reference = np.sort(train[:reference_size])
    pool = np.concatenate([dataset.split_indices("test"), train[reference_size:]])
    return reference, pool[:heldout_size]


def run(context: EvalContext) -> list[ResultRow]:
    options = context.options.of(NAME, FidOptions)
    samples = context.samples("test")
    patch_sets = min(options.fid_samples, len(samples))
    n = patch_sets * options.realism_z
    try:
        # Resolve the extractor before generating anything, so a missing weights file costs nothing.
        loaded = fid_metrics.load_extractor(options.extractor, options.inception_weights, context.device)
    except fid_metrics.ExtractorUnavailable as error:
        return [context.row(NAME, CONDITION, metric, math.nan, n, options.extractor, str(error))
                for metric in METRICS if metric != "kid_std"]
    dataset = samples.dataset
    reference_indices, heldout_indices = real_selection(dataset, options.fid_reference_samples, n)
    reference = fid_metrics.reference_statistics(
        fid_metrics.ReferenceSet.from_dataset(dataset, reference_indices, dataset.preprocess),
        loaded, cache_dir=context.workdir.cache)
    about = (f"N={n} ({patch_sets} test patch sets x {options.realism_z} z); reference "
             f"{len(reference_indices)} training images")

    generated: list[torch.Tensor] = []  # (B, 3, S, S) batches, z draw by z draw
    for draw in range(options.realism_z):
        prefix = NAME if draw == 0 else f"{NAME}-z{draw}"  # draw 0 keeps the single-z tags
        generated += [context.generate(batch["patches"], tag=f"{prefix}-{number}")[0].cpu()
                      for number, batch in enumerate(context.batches(samples, limit=patch_sets))]
    result = fid_metrics.realism_from_features(fid_metrics.extract_features(generated, loaded), reference,
                                           loaded.spec.name)
    rows = _rows(context, context.variant, result, about)

    floor_about = (f"N={n} real images outside the reference (test split first); reference "
                   f"{len(reference_indices)} training images")
    if len(heldout_indices) < n:
        note = (f"no floor: needs {n} real images outside the {len(reference_indices)}-image "
                f"reference, the data has {len(heldout_indices)}; lower --fid-reference-samples "
                "or --realism-z")
        return rows + [context.row(NAME, CONDITION, metric, math.nan, n, loaded.spec.name, note, variant=REAL)
                       for metric in METRICS if metric != "kid_std"]
    floor = context.shared(
        ("realism_floor", loaded.spec.name, loaded.weights_hash, reference.key, n),
        lambda: fid_metrics.realism_from_features(
            fid_metrics.reference_statistics(
                fid_metrics.ReferenceSet.from_dataset(dataset, heldout_indices, dataset.preprocess),
                loaded, cache_dir=context.workdir.cache).features,
            reference, loaded.spec.name),
    )
    return rows + _rows(context, REAL, floor, floor_about)


def _rows(context: EvalContext, variant: str, result: fid_metrics.FidKidResult,
          about: str) -> list[ResultRow]:
    note = "; ".join(part for part in (about, result["note"]) if part)
    kid_note = f"{note}; 95 % interval: bootstrap over both sets' images"

    def row(metric: str, value: float, ci: tuple[float, float] = (math.nan, math.nan),
            text: str = note) -> ResultRow:
        return context.row(NAME, CONDITION, metric, value, result["n"], result["extractor"], text, ci,
                           variant=variant)

    return [
        row("fid", result["fid"]),
        row("kid", result["kid"], (result["kid_low"], result["kid_high"]), kid_note),
        row("kid_std", result["kid_std"], text=kid_note),
        row("precision", result["precision"]),
        row("recall", result["recall"]),
    ]


def provenance(context: EvalContext) -> dict[str, Any]:
    """The feature extractor behind the FID rows and its weights' hash."""
    options = context.options.of(NAME, FidOptions)
    try:
        loaded = fid_metrics.load_extractor(options.extractor, options.inception_weights, context.device)
        weights = loaded.weights_hash
    except fid_metrics.ExtractorUnavailable:
        weights = "unavailable"
    return {"fid_extractor": {"name": options.extractor, "weights_sha256": weights}}


PROTOCOL = register_protocol(Protocol(
    name=NAME,
    description="FID, KID (with a bootstrap interval), precision (fidelity) and recall (coverage, "
    "torch-fidelity, k = 3) of images generated from the test images' key patches (--realism-z "
    "per patch set) against real training images (--fid-reference-samples, features cached), "
    "with the same metrics for real held-out images at the same N (baseline:real, the floor a "
    "perfect generator would score). FID is biased below 2048 samples and only comparable at "
    "equal N and extractor; KID is unbiased.",
    run=run,
    options=FidOptions,
    order=20,
    summary=True,
    report_description=
    "FID, KID, precision and recall of generated images against real training images, next to "
    "real held-out images scored the same way at the same N (the real-vs-real floor). FID is "
    "biased for N < 2048 samples (its covariance is not full rank) and comparable only at equal "
    "N and extractor; KID is unbiased, with a bootstrap interval over images.",
    provenance=provenance,
))
