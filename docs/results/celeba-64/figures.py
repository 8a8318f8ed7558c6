"""generated.png for docs/results/celeba-64: model outputs only, no photo pixels.

Usage: python figures.py WORKDIR OUT.png [SEED]
Rows: the first 8 test images. Columns: the true mask (the union of the key boxes), then for each
variant its generated image and, where it has one, its predicted mask, from the image's key
patches with a fixed z.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from kpbench.grids import save_grid
from kpbench.paths import WorkDir
from kpbench.runs import load_run
from kpbench.samples import make_sample_dataset

VARIANTS = ("full", "naive_gan", "nomask", "autoencoder", "cgan")
ROWS = 8


def main(workdir: str, out: str, seed: int = 0) -> None:
    work = WorkDir.resolve(workdir)
    first = load_run(work.run_dir(VARIANTS[0], seed))
    test = make_sample_dataset(first.config.data, "test", 0, work, flip=False)
    items = [test[i] for i in range(ROWS)]
    patches = torch.stack([item["patches"] for item in items])
    columns = [torch.stack([item["mask"] for item in items])]
    for variant in VARIANTS:
        run = load_run(work.run_dir(variant, seed))
        image, mask = run.generate(patches, rng=torch.Generator().manual_seed(0))
        columns.append(image)
        if mask is not None:
            columns.append(mask)
    save_grid(Path(out), columns)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
