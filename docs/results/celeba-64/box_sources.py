"""The box-source confound on CelebA-6k: full and autoencoder trained on kpbench's EdgeBoxes and on
the authors' published boxes, each evaluated on its own and on the other source's key patches.

Prints, per model and metric, the 2 x 2 table (trained on x evaluated on) of means with their
95 % hierarchical-bootstrap intervals (seeds, then the 300 test images), the no-learning floors
of each evaluation source, and the paired differences that answer two questions:

- does the training source matter? (trained on the authors' minus trained on kpbench's boxes,
  both evaluated on the same source: same images, independent seeds)
- does the evaluation source matter? (a model evaluated on the other source minus on its own:
  the same runs, the same images)

    python docs/results/celeba-64/box_sources.py WORKDIR/runs
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from kpbench.results import read_samples
from kpbench.stats import hierarchical_estimate, one_blas_thread, paired_difference, stable_rng

AUTHORS = "boxes-authors_boxes.a89f"  # the run tag and box-source name of authors_boxes.csv
SOURCES = {"kpbench": "edgeboxes", "authors": AUTHORS}
METRICS = ("mask_iou", "ssim")
FLOORS = ("baseline:prior_mask", "baseline:nearest_neighbour")


def trained_on(run: str) -> str:
    return "authors" if AUTHORS in run else "kpbench"


def cell(samples: pd.DataFrame, variant: str, train: str, evaluate: str, metric: str) -> pd.DataFrame:
    """(seeds, images) values of ``variant`` trained on ``train``, scored on ``evaluate``'s boxes."""
    own = train == evaluate
    condition = "key" if own else f"key@{SOURCES[evaluate]}"
    chosen = samples[(samples["variant"] == variant) & (samples["metric"] == metric)
                     & (samples["condition"] == condition)
                     & (samples["run"].map(trained_on) == train)]
    return chosen.groupby(["seed", "sample"])["value"].mean().unstack("sample")


def floor(samples: pd.DataFrame, name: str, evaluate: str, metric: str) -> pd.DataFrame:
    """The floor on ``evaluate``'s boxes, from the runs trained on that source (their own rows)."""
    chosen = samples[(samples["variant"] == name) & (samples["metric"] == metric)
                     & (samples["condition"] == "key") & (samples["run"].map(trained_on) == evaluate)]
    return chosen.groupby(["seed", "sample"])["value"].mean().unstack("sample").iloc[:1]


def show(estimate: object) -> str:
    return f"{estimate.mean:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"  # type: ignore[attr-defined]


def main() -> None:
    runs = Path(sys.argv[1])
    samples = read_samples(runs)
    samples = samples[samples["protocol"].str.startswith("patches") & samples["seed"].isin([0, 1, 2])]
    rng = stable_rng("box-sources")
    for metric in METRICS:
        for variant in ("full", "autoencoder"):
            cells = {(t, e): cell(samples, variant, t, e, metric) for t in SOURCES for e in SOURCES}
            images = sorted(set.intersection(*(set(c.columns) for c in cells.values())))
            matrix = {key: c[images].to_numpy() for key, c in cells.items()}
            print(f"\n{variant}, {metric} ({len(images)} test images; seeds per cell "
                  f"{sorted({m.shape[0] for m in matrix.values()})})")
            header = ('trained on', 'evaluated on kpbench boxes', 'evaluated on authors boxes')
            print(f"  {header[0]:<10} {header[1]:<28} {header[2]:<28}")
            for train in SOURCES:
                row = [show(hierarchical_estimate(matrix[(train, e)], rng)) for e in SOURCES]
                print(f"  {train:<10} {row[0]:<28} {row[1]:<28}")
            for name in FLOORS:
                if variant != "full":
                    break
                row = []
                for evaluate in SOURCES:
                    values = floor(samples, name, evaluate, metric)
                    row.append(show(hierarchical_estimate(values[images].to_numpy(), rng))
                               if not values.empty else "-")
                print(f"  {name.split(':')[1]:<10} {row[0]:<28} {row[1]:<28}   (floor)")
            for evaluate in SOURCES:
                diff = paired_difference(matrix[("authors", evaluate)], matrix[("kpbench", evaluate)], rng)
                print(f"  trained on authors' minus kpbench's boxes, evaluated on {evaluate}: {show(diff)}")
            for train in SOURCES:
                other = next(e for e in SOURCES if e != train)
                diff = paired_difference(matrix[(train, other)], matrix[(train, train)], rng, same_runs=True)
                print(f"  trained on {train}: evaluated on {other}'s minus its own boxes: {show(diff)}")


if __name__ == "__main__":
    with one_blas_thread():
        main()
