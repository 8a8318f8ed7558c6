"""``classification``: the part encoder as a feature extractor from patches alone.

Features of every sample's key patches from (a) the trained encoder, (b) a randomly
initialised encoder of the same architecture, (c) raw patch pixels (each patch downsampled to
8 x 8, concatenated). A scikit-learn linear classifier (standardise + logistic regression) is
scored by stratified k-fold cross-validation on the dataset's labels; rows give the mean
accuracy over folds and its standard deviation, so the gain from training is visible.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from kpbench.protocol import EvalContext, Protocol, register_protocol
from kpbench.results import ResultRow

NAME = "classification"
RAW_SIDE = 8


def raw_pixels(patches: torch.Tensor) -> torch.Tensor:
    """(B, N, 3, S, S) -> (B, N * 3 * 8 * 8) downsampled pixels."""
    batch, count = patches.shape[:2]
    small = F.adaptive_avg_pool2d(patches.flatten(0, 1), RAW_SIDE)
    return small.reshape(batch, count * 3 * RAW_SIDE * RAW_SIDE)


def cross_validated_accuracy(features: np.ndarray, labels: np.ndarray, folds: int,
                             seed: int) -> tuple[float, float, int]:
    """Mean and std of accuracy over stratified folds, and the number of folds used."""
    counts = np.bincount(labels)
    folds = int(min(folds, counts[counts > 0].min()))
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(classifier, features, labels, cv=splitter)
    return float(scores.mean()), float(scores.std()), folds


def run(context: EvalContext) -> list[ResultRow]:
    samples = context.samples("all")
    random_encoder = context.run.untrained(seed=context.seed)
    extractors = {
        "encoder:trained": context.run.encode,
        "encoder:random_init": random_encoder.encode,
        "raw_pixels": raw_pixels,
    }
    features: dict[str, list[np.ndarray]] = {name: [] for name in extractors}
    labels: list[np.ndarray] = []
    limit = context.options.classify_samples
    with torch.no_grad():
        for batch in context.batches(samples, limit=limit, spread=True):
            labels.append(batch["label"].cpu().numpy())
            for name, extract in extractors.items():
                features[name].append(extract(batch["patches"]).float().cpu().numpy())
    label_array = np.concatenate(labels)
    present = np.unique(label_array)
    rows = []
    for name, chunks in features.items():
        if len(present) < 2 or np.bincount(label_array)[present].min() < 2:
            note = "needs at least 2 classes with 2 samples each"
            rows.append(context.row(NAME, name, "accuracy", math.nan, len(label_array), name, note))
            continue
        _, labels_dense = np.unique(label_array, return_inverse=True)
        mean, spread, folds = cross_validated_accuracy(np.concatenate(chunks), labels_dense,
                                                       context.options.folds, context.seed)
        note = f"{folds}-fold stratified CV, {len(present)} classes, chance {1 / len(present):.3f}"
        rows.append(context.row(NAME, name, "accuracy", mean, len(label_array), name, note))
        rows.append(context.row(NAME, name, "accuracy_std", spread, len(label_array), name, note))
    return rows


PROTOCOL = register_protocol(Protocol(
    name=NAME,
    description="Linear classification (standardise + logistic regression, stratified k-fold) "
    "of the dataset's labels from patch features alone: the trained part encoder vs a randomly "
    "initialised one of the same architecture vs raw patch pixels.",
    run=run,
))
