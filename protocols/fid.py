"""``fid``: FID and KID of generated images against the held-out real test images.

One generated image per test image (from its key patches), up to ``--fid-samples``. Features come
from the chosen extractor (the standard ``inception`` by default); the real images' statistics
are cached by dataset manifest, preprocessing, extractor and N. When the extractor's weights
cannot be found offline, the rows carry no number but a note saying why and how to fix it.
"""

from __future__ import annotations

import math

from kpbench import metrics
from kpbench.protocol import EvalContext, Protocol, register_protocol
from kpbench.results import ResultRow

NAME = "fid"
CONDITION = "key patches"


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


PROTOCOL = register_protocol(Protocol(
    name=NAME,
    description="FID and KID (torch-fidelity) of images generated from the test images' key "
    "patches against those held-out real images, with precision (fidelity) and recall "
    "(coverage) of the generated features (torch-fidelity, k = 3). FID is biased below 2048 "
    "samples and only comparable at equal N and extractor; KID is unbiased.",
    run=run,
))
