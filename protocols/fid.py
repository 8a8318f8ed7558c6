"""``fid``: FID and KID of generated images against the held-out real test images.

One generated image per test image (from its key patches), up to ``--fid-samples``. Features come
from the chosen extractor (the standard ``inception`` by default); the real images' statistics
are cached by dataset manifest, preprocessing, extractor and N. When the extractor's weights
cannot be found offline, the rows carry no number but a note saying why and how to fix it.
"""

from __future__ import annotations

import math
from typing import Any

from kpbench import metrics
from kpbench.metricinfo import register_metric
from kpbench.protocol import EvalContext, Protocol, register_protocol
from kpbench.results import ResultRow

NAME = "fid"
CONDITION = "key patches"

register_metric("fid", "FID", "lower", order=170)
register_metric("kid", "KID", "lower", order=180)
register_metric("kid_std", "KID std", None, order=190)  # a spread: no direction
register_metric("precision", "precision", "higher", order=200)
register_metric("recall", "recall", "higher", order=210)


def run(context: EvalContext) -> list[ResultRow]:
    options = context.options
    samples = context.samples("test")
    count = min(options.fid_samples, len(samples))
    try:
        # Resolve the extractor before generating anything, so a missing weights file costs nothing.
        metrics.load_extractor(options.extractor, options.inception_weights, context.device)
    except metrics.ExtractorUnavailable as error:
        return [context.row(NAME, CONDITION, metric, math.nan, count, options.extractor, str(error))
                for metric in ("fid", "kid", "precision", "recall")]
    generated = [context.generate(batch["patches"], tag=f"{NAME}-{number}")[0].cpu()
                 for number, batch in enumerate(context.batches(samples, limit=count))]
    reference = metrics.ReferenceSet.from_dataset(samples.dataset, samples.indices[:count],
                                                  samples.dataset.preprocess)
    result = metrics.compute_fid_kid(
        generated, reference, options.extractor, cache_dir=context.workdir.cache,
        weights_path=options.inception_weights, device=context.device,
    )
    return [
        context.row(NAME, CONDITION, "fid", result["fid"], result["n"], result["extractor"], result["note"]),
        context.row(NAME, CONDITION, "kid", result["kid"], result["n"], result["extractor"], result["note"]),
        context.row(NAME, CONDITION, "kid_std", result["kid_std"], result["n"], result["extractor"],
                    result["note"]),
        context.row(NAME, CONDITION, "precision", result["precision"], result["n"], result["extractor"],
                    result["note"]),
        context.row(NAME, CONDITION, "recall", result["recall"], result["n"], result["extractor"],
                    result["note"]),
    ]


def provenance(context: EvalContext) -> dict[str, Any]:
    """The feature extractor behind the FID rows and its weights' hash."""
    options = context.options
    try:
        loaded = metrics.load_extractor(options.extractor, options.inception_weights, context.device)
        weights = loaded.weights_hash
    except metrics.ExtractorUnavailable:
        weights = "unavailable"
    return {"fid_extractor": {"name": options.extractor, "weights_sha256": weights}}


PROTOCOL = register_protocol(Protocol(
    name=NAME,
    description="FID and KID (torch-fidelity) of images generated from the test images' key "
    "patches against those held-out real images, with precision (fidelity) and recall "
    "(coverage) of the generated features (torch-fidelity, k = 3). FID is biased below 2048 "
    "samples and only comparable at equal N and extractor; KID is unbiased.",
    run=run,
    order=20,
    summary=True,
    report_description=
    "FID and KID of generated images against held-out real images. FID is biased for N < 2048 "
    "samples (its covariance is not full rank); KID is unbiased.",
    provenance=provenance,
))
