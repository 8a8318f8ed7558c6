"""A diagnostic for the realism result: period-2 ("checkerboard") energy of each run's outputs
against its KID.

For every run of the five objective variants (kpbench's boxes, all seeds), the generator's images
for the first 300 test images (key patches, batch-norm batch statistics as in evaluation, a fixed
z) and the real test images are filtered with the 2x2 kernel [[1, -1], [-1, 1]] / 4 on stride-2
blocks, whose response is the image's component at the Nyquist frequency in both directions;
the mean absolute response is the run's checkerboard energy (real images: the floor). Printed
per variant and per run beside the run's KID row, with the Spearman correlation over runs.

    python docs/results/celeba-64/checkerboard.py WORKDIR
"""

from __future__ import annotations

import sys

import pandas as pd
import torch
from scipy.stats import spearmanr

from kpbench.paths import WorkDir
from kpbench.results import read_rows
from kpbench.runs import list_runs, load_run
from kpbench.samples import make_sample_dataset

VARIANTS = ("full", "naive_gan", "nomask", "autoencoder", "cgan")
IMAGES = 300
BATCH = 50


def checkerboard(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) in [-1, 1] -> (B,) mean |[[1, -1], [-1, 1]] / 4| response on 2x2 blocks."""
    a, b = images[..., ::2, ::2], images[..., ::2, 1::2]
    c, d = images[..., 1::2, ::2], images[..., 1::2, 1::2]
    return ((a - b - c + d) / 4).abs().mean(dim=(1, 2, 3))


def main(workdir: str) -> None:
    torch.set_num_threads(1)
    work = WorkDir.resolve(workdir)
    kid = read_rows(work.runs)
    kid = kid[(kid["protocol"] == "fid") & (kid["metric"] == "kid") & (kid["variant"].isin(VARIANTS))]
    kid = kid.groupby("run")["value"].first()
    records, real_energy = [], None
    for info in list_runs(work.runs):
        if info.variant not in VARIANTS or "boxes-" in info.name or info.name not in kid.index:
            continue
        run = load_run(info.run_dir)
        test = make_sample_dataset(run.config.data, "test", 0, work, flip=False)
        energies, reals = [], []
        generator = torch.Generator().manual_seed(0)
        for start in range(0, IMAGES, BATCH):
            items = [test[i] for i in range(start, min(start + BATCH, IMAGES))]
            patches = torch.stack([item["patches"] for item in items])
            image, _ = run.generate(patches, rng=generator)
            energies.append(checkerboard(image))
            reals.append(checkerboard(torch.stack([item["image"] for item in items])))
        real_energy = torch.cat(reals).mean().item()
        records.append({"run": info.name, "variant": info.variant, "seed": info.seed,
                        "checkerboard": torch.cat(energies).mean().item(), "kid": float(kid[info.name])})
    frame = pd.DataFrame(records)
    print(f"real test images (floor): checkerboard energy {real_energy:.4f}")
    summary = frame.groupby("variant").agg(runs=("run", "size"), checkerboard=("checkerboard", "mean"),
                                           checkerboard_sd=("checkerboard", "std"), kid=("kid", "mean"))
    print(summary.loc[[v for v in VARIANTS if v in summary.index]].round(4).to_string())
    rho, p = spearmanr(frame["checkerboard"], frame["kid"])
    print(f"Spearman correlation of checkerboard energy and KID over {len(frame)} runs: "
          f"{rho:.2f} (p = {p:.2g})")
    within = [spearmanr(g["checkerboard"], g["kid"])[0] for _, g in frame.groupby("variant") if len(g) > 2]
    print(f"within variants (across seeds): {', '.join(f'{r:.2f}' for r in within)}")
    print(frame.sort_values(["variant", "seed"]).round(4).to_string(index=False))


if __name__ == "__main__":
    main(sys.argv[1])
