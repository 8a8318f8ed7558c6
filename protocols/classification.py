"""``classification``: the part encoder as a feature extractor from patches alone.

Features of every selected sample's key patches from (a) the trained encoder, (b) a randomly
initialised encoder of the same architecture, (c) raw patch pixels (each patch downsampled to
8 x 8, concatenated). Only classes with at least ``min_per_class`` images take part, each with the
same number of images (so face datasets with thousands of mostly single-photo identities still
give a balanced task). A scikit-learn linear classifier (standardise + logistic regression) is
scored by stratified k-fold cross-validation; rows give the accuracy over all held-out
predictions with a bootstrap interval, and the standard deviation of per-fold accuracy, so the
gain from training is visible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from kpbench.baselines import patch_pixels
from kpbench.errors import KpbenchError
from kpbench.fid import module_digest
from kpbench.metricinfo import register_metric
from kpbench.protocol import EvalContext, Protocol, register_protocol
from kpbench.results import ResultRow
from kpbench.runtime import derive_seed
from kpbench.samples import sample_batches

NAME = "classification"


@dataclass(frozen=True)
class ClassificationOptions:
    classify_samples: int = 2000  # images used at most (balanced over the classes)
    min_per_class: int = 5  # classes with fewer images are left out
    folds: int = 5  # stratified cross-validation folds

    def __post_init__(self) -> None:
        if self.folds < 2 or self.classify_samples < 4:
            raise KpbenchError("classification needs folds >= 2 and classify_samples >= 4")

register_metric("accuracy", "accuracy", "higher", order=220, bounds=(0.0, 1.0))
register_metric("accuracy_std", "accuracy std", None, order=230)  # a spread over folds: no direction


def shortfall(labels: np.ndarray, min_per_class: int, max_total: int) -> str | None:
    """Why ``labels`` (L,) cannot give 2 classes of ``min_per_class`` samples within
    ``max_total`` samples, or None when they can."""
    if min_per_class < 2:
        return f"--min-per-class {min_per_class}: cross-validation needs >= 2 samples per class"
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        return f"dataset has no labels: all {len(labels):,} images share one label"
    eligible = int((counts >= min_per_class).sum())
    if eligible < 2:
        return (f"only {eligible} of {len(classes):,} classes {'has' if eligible == 1 else 'have'} "
                f">= {min_per_class} samples; lower --min-per-class")
    if max_total < 2 * min_per_class:
        return (f"--classify-samples {max_total} cannot hold 2 classes x {min_per_class} samples; "
                "raise it or lower --min-per-class")
    return None


def select_balanced(labels: np.ndarray, min_per_class: int, max_total: int, seed: int,
                    keys: np.ndarray | None = None) -> np.ndarray:
    """Sorted positions into ``labels`` (L,): the same number of samples from every class with at
    least ``min_per_class`` samples, at most ``max_total`` in all; empty when :func:`shortfall`
    gives a reason.

    Each class gives its smallest eligible count of samples; when that exceeds ``max_total``,
    fewer per class (not below ``min_per_class``) and then a seeded random subset of the classes.
    ``keys`` (L,) are distinct sortable sample ids (e.g. file names; default the positions): the
    draws run over classes and keys in sorted order, so the chosen samples depend only on
    (key, label) pairs and ``seed``, not on the order the samples are stored in.
    """
    labels = np.asarray(labels)
    if shortfall(labels, min_per_class, max_total) is not None:
        return np.empty(0, dtype=np.int64)
    keys = np.arange(len(labels)) if keys is None else np.asarray(keys)
    classes, counts = np.unique(labels, return_counts=True)
    eligible = classes[counts >= min_per_class]  # sorted
    per_class = int(min(counts[counts >= min_per_class].min(),
                        max(min_per_class, max_total // len(eligible))))
    rng = np.random.default_rng(seed)
    chosen = eligible
    if len(eligible) * per_class > max_total:
        chosen = np.sort(rng.choice(eligible, size=max_total // per_class, replace=False))
    # Positions grouped by class, by key within a class: [starts[c], ends[c]) is class c's block.
    order = np.lexsort((keys, labels))
    starts = np.searchsorted(labels[order], chosen, side="left")
    ends = np.searchsorted(labels[order], chosen, side="right")
    picks = [order[start + rng.choice(end - start, size=per_class, replace=False)]
             for start, end in zip(starts, ends)]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def cross_validated_correct(features: np.ndarray, labels: np.ndarray, folds: int,
                            seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample correctness (L,) of held-out predictions and per-fold accuracy (folds,)."""
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    correct = cross_val_predict(classifier, features, labels, cv=splitter) == labels
    # The seeded splitter repeats the folds cross_val_predict used.
    per_fold = np.array([correct[test].mean() for _, test in splitter.split(features, labels)])
    return correct.astype(np.float64), per_fold


def run(context: EvalContext) -> list[ResultRow]:
    samples = context.samples("all")
    options = context.options.of(NAME, ClassificationOptions)
    extractor_names = ("encoder:trained", "encoder:random_init", "raw_pixels")  # rows, in this order
    labels = samples.dataset.labels[samples.indices]  # (L,) without decoding any image
    reason = shortfall(labels, options.min_per_class, options.classify_samples)
    if reason is None and not context.run.can_encode:
        reason = f"variant {context.variant}'s generator has no encode(patches): no part features"
    if reason is not None:
        return [context.row(NAME, name, "accuracy", math.nan, 0, name, reason)
                for name in extractor_names]

    file_names = np.array([samples.dataset.records[index].file for index in samples.indices])
    positions = select_balanced(labels, options.min_per_class, options.classify_samples,
                                derive_seed(context.seed, NAME, "select"), keys=file_names)
    selected = labels[positions]
    classes = np.unique(selected)
    per_class = len(positions) // len(classes)
    folds = min(options.folds, per_class)
    eligible = int((np.bincount(labels) >= options.min_per_class).sum())
    used = f"{len(classes):,}" if len(classes) == eligible else f"{len(classes):,} of {eligible:,}"
    note = (f"{used} classes x {per_class} samples (min {options.min_per_class} per class), "
            f"{folds}-fold stratified CV, chance {1 / len(classes):.3g}")

    _, dense_labels = np.unique(selected, return_inverse=True)  # (M,) class ids 0..C-1

    def scores(extract: Callable[[torch.Tensor], torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample held-out correctness and per-fold accuracy of features from ``extract``."""
        with torch.no_grad():
            features = [extract(batch["patches"]).float().cpu().numpy()  # (B, D) from (B, N, 3, S, S)
                        for batch in sample_batches(samples, positions, context.options.batch_size,
                                                    context.device)]
        return cross_validated_correct(np.concatenate(features), dense_labels, folds, context.seed)

    # Only the trained encoder depends on the run; the random encoder (per seed and architecture,
    # named by its weights) and raw pixels are scored once per evaluation and shared.
    selection = (options.min_per_class, options.classify_samples, options.folds, context.seed,
                 positions.tobytes())
    random_encoder = context.run.untrained(seed=context.seed)
    results = {
        "encoder:trained": scores(context.run.encode),
        "encoder:random_init": context.shared(
            (NAME, "random_init", random_encoder.generator.fusion,
             module_digest(random_encoder.generator.encoder), *selection),
            lambda: scores(random_encoder.encode)),
        "raw_pixels": context.shared((NAME, "raw_pixels", *selection), lambda: scores(patch_pixels)),
    }
    rows = []
    for name, (correct, per_fold) in results.items():
        rows.append(context.sample_row(NAME, name, "accuracy", correct, extractor=name, note=note))
        rows.append(context.row(NAME, name, "accuracy_std", float(per_fold.std()), len(correct),
                                name, note))
    return rows


PROTOCOL = register_protocol(Protocol(
    name=NAME,
    description="Linear classification (standardise + logistic regression, stratified k-fold) "
    "of the dataset's labels from patch features alone, on classes with at least "
    "--min-per-class images, balanced to the same number of images each: the trained part "
    "encoder vs a randomly initialised one of the same architecture vs raw patch pixels.",
    run=run,
    options=ClassificationOptions,
    needs_model=True,  # the part encoder's features: not available for predictions made elsewhere
    order=30,
    summary=True,
    report_description=
    "The part encoder as a feature extractor from patches alone: a linear classifier under "
    "stratified k-fold cross-validation, compared with a randomly initialised encoder of the "
    "same architecture and with raw patch pixels.",
))
