"""The claim check and the report's cell intervals at a report's scale, on synthetic values.

Every registered variant at default settings (the full model and 8 others), each with SEEDS
seeds scored on IMAGES test images: ``patches`` (key and random; mask IoU, appearance L1,
PSNR, SSIM, image and order dependence), ``noise`` (13 conditions x 4 metrics) and per-seed KID
and FID, plus the two floors. Prints the seconds :func:`kpbench.claims.check_claims` and
:func:`kpbench.report.aggregation.aggregate` take and how many claims were decided. Target: a
few seconds for ~40 claims x 5 seeds x 300 images.

    PYTHONPATH=. python benchmarks/claims.py [--seeds 5] [--images 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from kpbench.claims import check_claims
from kpbench.metricinfo import list_metrics
from kpbench.report.aggregation import aggregate
from kpbench.variant import list_variants

PATCH_METRICS = ("mask_iou", "appearance_l1", "psnr", "ssim")
NOISE_CONDITIONS = ("swapped", *(f"{target} sigma={s:g}" for target in ("all", "one")
                                 for s in (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)))


def synthetic(seeds: int, images: int, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows, samples) for every registered variant and the floors."""
    image_effect = rng.uniform(0.2, 0.8, images)  # (n,) shared by every model: paired values
    ids = np.arange(images) * 7
    samples, rows = [], []

    def add(variant: str, protocol: str, condition: str, metric: str, values: np.ndarray) -> None:
        for seed in range(values.shape[0]):
            samples.append(pd.DataFrame({
                "variant": variant, "condition": condition, "metric": metric, "extractor": "",
                "sample": ids, "repeat": 0, "value": values[seed], "seed": seed, "protocol": protocol,
                "run": f"{variant}-{seed}"}))
            rows.append((variant, seed, protocol, condition, metric, float(values[seed].mean()), images))

    for number, spec in enumerate(list_variants()):
        quality = 0.05 * number
        for condition in ("key", "random"):
            for metric in PATCH_METRICS:
                add(spec.name, "patches", condition, metric,
                    np.clip(image_effect - quality + rng.normal(0, 0.05, (seeds, images)), 0, 1))
        for metric in ("image_dependence", "image_order_dependence"):
            add(spec.name, "patches", "key", metric, rng.uniform(0, 0.6, (seeds, images)))
        for condition in NOISE_CONDITIONS:
            for metric in PATCH_METRICS:
                add(spec.name, "noise", condition, metric,
                    np.clip(image_effect - quality + rng.normal(0, 0.05, (seeds, images)), 0, 1))
        for seed in range(seeds):
            kid = 0.02 + 0.001 * number + rng.normal(0, 0.001)
            rows.append((spec.name, seed, "fid", "key patches", "kid", kid, images))
            rows.append((spec.name, seed, "fid", "key patches", "fid", 30 + number + rng.normal(0, 1),
                         images))
    for floor in ("baseline:prior_mask", "baseline:nearest_neighbour"):
        for condition in ("key", "random"):
            add(floor, "patches", condition, "mask_iou", np.tile(image_effect - 0.2, (seeds, 1)))
    frame = pd.DataFrame(rows, columns=["variant", "seed", "protocol", "condition", "metric", "value", "n"])
    frame["extractor"] = np.where(frame["protocol"] == "fid", "inception", "")
    return frame.assign(note="", ci_low=np.nan, ci_high=np.nan), pd.concat(samples, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--images", type=int, default=300)
    args = parser.parse_args()
    rows, samples = synthetic(args.seeds, args.images, np.random.default_rng(0))
    started = time.perf_counter()
    list_metrics()  # imports every protocol (a report has done this before it checks claims)
    print(f"registries   {time.perf_counter() - started:6.2f} s (imports, once per process)")
    started = time.perf_counter()
    results = check_claims(rows, samples)
    claims_seconds = time.perf_counter() - started
    started = time.perf_counter()
    stats = aggregate(rows, samples)
    table_seconds = time.perf_counter() - started
    verdicts = pd.Series([result.verdict for result in results]).value_counts().to_dict()
    print(f"{len(results)} claims, {args.seeds} seeds x {args.images} images, {len(samples):,} values")
    print(f"check_claims {claims_seconds:6.2f} s  verdicts {verdicts}")
    print(f"aggregate    {table_seconds:6.2f} s  {len(stats)} cells")


if __name__ == "__main__":
    main()
