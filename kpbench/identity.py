"""Run identity: which settings make two runs different models, and the run's directory name.

A run's identity is everything that changes what it learns: the variant and every field of its
TrainConfig except the operational ones (``train.OPERATIONAL_FIELDS``: length, device, workers,
logging). Its directory name is the variant, then one readable tag per identity setting that
differs from the default, in a fixed order, then the seed::

    full-seed0                                     the paper's setting on the built-in data
    full-random-n5-seed1                           trained on 5 random patches per image
    nomask-data-celeba-6k-preset-celeba-w0.25-b32-seed2

Settings without a tag of their own (learning rate, Adam betas, D/G steps, flips, split seed,
test fraction, edge model) add one tag ``x<hash>`` of their non-default values, so names stay
unique. Names are a pure function of the settings: the same command always finds the same run.
Reports label a run by its variant and the tags that differ *within* the report
(:func:`distinguishing_tags`), so a report of runs that share a scale reads ``full``,
``full-random``, ``full-n5``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Tag:
    """One readable piece of a run name: the config field (dotted for data fields) and its text."""

    field: str
    text: Callable[[Any], str]
    data: bool = False  # a property of the data: kept in the labels of no-learning baselines


def _source_text(source: str) -> str:
    if source.startswith("builtin"):
        return source.replace(":", "")  # builtin:600 -> builtin600
    name = re.split(r"[\\/]", source.rstrip("/\\"))[-1] or "root"
    return "data-" + re.sub(r"[^A-Za-z0-9._-]+", "_", name)


# In name order. Values equal to the default give no tag.
TAGS: tuple[Tag, ...] = (
    Tag("data.source", _source_text, data=True),
    Tag("data.preset", lambda v: f"preset-{v}", data=True),
    Tag("data.size", lambda v: f"s{v}", data=True),
    Tag("data.crop", lambda v: f"crop{v}", data=True),
    Tag("patch_source", str),  # "random"
    Tag("data.n_patches", lambda v: f"n{v}", data=True),
    Tag("width", lambda v: f"w{v:g}"),
    Tag("batch_size", lambda v: f"b{v}"),
    Tag("init", lambda v: f"init-{v}"),
    Tag("lambda_decay_epochs", lambda v: f"decay{v}"),
)
SEED_SEPARATOR = "-seed"


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def _defaults() -> dict[str, Any]:
    from kpbench.train import TrainConfig  # lazily: train imports this module

    return _flatten(TrainConfig().to_dict())


def _identity_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    from kpbench.train import OPERATIONAL_FIELDS

    return {k: v for k, v in _flatten(config).items()
            if k.split(".")[0] not in OPERATIONAL_FIELDS and k not in ("variant", "seed")}


def run_tags(config: Mapping[str, Any], variant_init: str | None = None) -> list[tuple[str, str]]:
    """``[(field, tag text), ...]`` of a config (``TrainConfig.to_dict()``) in name order.
    ``variant_init``: the variant's own initialisation, which needs no tag when chosen explicitly."""
    defaults = _defaults()
    values = _identity_fields(config)
    tags: list[tuple[str, str]] = []
    for tag in TAGS:
        value = values.get(tag.field, defaults.get(tag.field))
        if value == defaults.get(tag.field) or (tag.field == "init" and value == variant_init):
            continue
        tags.append((tag.field, tag.text(value)))
    tagged = {tag.field for tag in TAGS}
    rest = {k: v for k, v in sorted(values.items()) if k not in tagged and v != defaults.get(k)}
    if rest:
        digest = hashlib.sha1(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:6]
        tags.append(("other", f"x{digest}"))
    return tags


def run_name(config: Mapping[str, Any], variant_init: str | None = None) -> str:
    """The directory name of a run: ``<variant>[-<tag>...]-seed<k>``."""
    parts = [str(config["variant"]), *(text for _, text in run_tags(config, variant_init))]
    return "-".join(parts) + f"{SEED_SEPARATOR}{int(config['seed'])}"


def legacy_run_name(variant: str, seed: int) -> str:
    """The name every run had before names carried their settings."""
    return f"{variant}{SEED_SEPARATOR}{seed}"


def distinguishing_tags(runs: Mapping[str, Sequence[tuple[str, str]]]) -> dict[str, list[tuple[str, str]]]:
    """Run name -> the tags of that run that not every run in ``runs`` (name -> tags) shares."""
    if not runs:
        return {}
    shared = set.intersection(*(set(tags) for tags in runs.values()))
    return {name: [tag for tag in tags if tag not in shared] for name, tags in runs.items()}


def label(variant: str, tags: Sequence[tuple[str, str]], data_only: bool = False) -> str:
    """``variant`` plus tag texts; ``data_only`` keeps the data tags alone (for the rows of a
    no-learning baseline, which does not depend on how a model was trained)."""
    data_fields = {tag.field for tag in TAGS if tag.data}
    kept = [text for field, text in tags if not data_only or field in data_fields]
    return "-".join([variant, *kept])


def stored_tags(stored: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The tags of a run from its config.json: as written when the run started, or for runs from
    before names carried settings, computed from the stored config (whose lambda decay was
    resolved to the run's length, so it gives no tag)."""
    if "tags" in stored:
        return [(str(field), str(text)) for field, text in stored["tags"]]
    config = dict(stored["config"]) | {"lambda_decay_epochs": None}
    return run_tags(config, (stored.get("spec") or {}).get("init", "dcgan"))
