"""Floors and uncertainty: the prior mask, input dependence, nearest neighbour, bootstrap intervals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kpbench.baselines import NearestNeighbour, input_dependence, swap
from kpbench.dataspec import DataSpec
from kpbench.diagnostics import prior_mask
from kpbench.metrics import mask_iou
from kpbench.paths import WorkDir
from kpbench.samples import make_sample_dataset
from kpbench.stats import bootstrap_ci, cell_interval, separated


def test_prior_mask_is_the_thresholded_mean_of_the_true_masks() -> None:
    # Three images on an 8x8 grid: a box at the top-left in two of them, at the bottom-right in one.
    top_left, bottom_right = [0, 0, 4, 4], [4, 4, 8, 8]
    boxes = np.array([[top_left], [top_left], [bottom_right]])
    prior = prior_mask(boxes, 8)
    assert prior.shape == (1, 8, 8)
    assert prior[0, :4, :4].eq(1).all() and prior.sum() == 16  # 2/3 >= 0.5 there, 1/3 elsewhere
    masks = torch.zeros(3, 1, 8, 8)
    masks[0, 0, :4, :4] = masks[1, 0, :4, :4] = masks[2, 0, 4:, 4:] = 1
    assert mask_iou(prior.expand(3, 1, 8, 8), masks).tolist() == [1.0, 1.0, 0.0]


class _IgnoresInput(torch.nn.Module):
    """Returns the same image and mask whatever the patches."""

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = patches.shape[0]
        return torch.full((b, 3, 8, 8), 0.3), torch.full((b, 1, 8, 8), 0.7)


class _CopiesInput(torch.nn.Module):
    """Returns the first patch as the image and its brightness as the mask."""

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return patches[:, 0], (patches[:, 0].mean(1, keepdim=True) > 0).float()


def test_input_dependence_is_zero_for_a_model_that_ignores_its_input() -> None:
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(16, 3, 8, 8, generator=generator) * 2 - 1
    patches = real[:, None].repeat(1, 3, 1, 1, 1)  # (B, N, 3, 8, 8): "patches" that are the image
    for model, expected in ((_IgnoresInput(), 0.0), (_CopiesInput(), 1.0)):
        own_image, own_mask = model(patches)
        swapped_image, swapped_mask = model(swap(patches))
        dependence = input_dependence(own_image, swapped_image, real)
        assert dependence.shape == (16,)
        assert dependence.mean().item() == pytest.approx(expected, abs=0.1)
    assert torch.equal(swap(torch.arange(4)), torch.tensor([3, 0, 1, 2]))  # nobody keeps their own


def test_nearest_neighbour_finds_the_training_item_with_the_same_patches(tmp_path: Path) -> None:
    samples = make_sample_dataset(DataSpec(source="builtin:24"), "train", 0, WorkDir(tmp_path), flip=False)
    neighbour = NearestNeighbour.fit(samples, batch_size=4)
    first, second = samples[7], samples[2]
    query = torch.stack([first["patches"], second["patches"]])
    images, masks = neighbour.by_patches(query + 0.01)
    assert torch.equal(images[0], first["image"]) and torch.equal(masks[1], second["mask"])
    assert not torch.equal(masks[0], masks[1])
    assert torch.equal(neighbour.by_image(samples[5]["image"][None])[0], samples[5]["image"])


def test_bootstrap_interval_covers_a_known_mean_at_about_the_stated_rate() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    trials = 200
    for trial in range(trials):
        values = rng.normal(0.4, 0.2, size=100)
        low, high = bootstrap_ci(values, seed=trial, resamples=500)
        assert low < values.mean() < high
        covered += low <= 0.4 <= high
    assert 0.88 <= covered / trials <= 0.99  # nominal 95 %
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)  # seeded
    assert bootstrap_ci([0.5, 0.5, 0.5], seed=0) == (0.5, 0.5)
    assert all(math.isnan(x) for x in bootstrap_ci([1.0], seed=0))


def test_cell_interval_combines_bootstrap_bounds_and_seed_spread() -> None:
    one = cell_interval([0.6], [0.58], [0.62])
    assert (one.mean, one.low, one.high, one.seeds) == (0.6, 0.58, 0.62, 1) and math.isnan(one.std)
    spread = cell_interval([0.5, 0.6, 0.7], [0.49, 0.59, 0.69], [0.51, 0.61, 0.71])
    assert spread.std == pytest.approx(0.1)
    assert spread.low < 0.5 and spread.high > 0.7  # the seeds' t-interval is wider than the bootstrap's
    fid = cell_interval([280.0, 300.0], [math.nan] * 2, [math.nan] * 2)  # no per-sample values
    assert fid.low < 280 and fid.high > 300
    assert math.isnan(cell_interval([280.0], [math.nan], [math.nan]).low)
    assert separated(0.58, 0.62, 0.40, 0.42) and not separated(0.58, 0.62, 0.61, 0.7)
    assert not separated(math.nan, math.nan, 0.1, 0.2)
