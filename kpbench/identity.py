"""Run identity: which settings make two runs different models, and the run's directory name.

A run's identity is everything that changes what it learns: the variant and every field of its
TrainConfig except the operational ones (``config.OPERATIONAL_FIELDS``: length, device, workers,
logging). Its directory name is the variant, then one readable tag per identity setting that
differs from the default, in a fixed order, then the seed::

    full-seed0                                     the paper's setting on the built-in data
    full-random-n5-seed1                           trained on 5 random patches per image
    nomask-data-celeba_6k.0137-preset-celeba-w0.25-b32-seed2   a folder: name, path hash
    full-data-images.5e1c-preset-celeba-boxes-authors_boxes.8f3a-seed0   boxes from a file: its
                                                   stem and 4 hex digits of its content

Settings without a tag of their own add a hash of their non-default values, so names stay
unique: ``xd<hash>`` for data settings (split seed, test fraction, edge model), ``x<hash>`` for
training settings (learning rate, Adam betas, D/G steps, flips). Names are a pure function of
the settings: the same command always finds the same run.
Reports label a run by its variant, its conditions and the tags that differ *within* the report
(:func:`distinguishing_tags`), so a report of runs that share a scale reads ``full``,
``full-random``, ``full-n5``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kpbench.choices import EDGEBOXES
from kpbench.config import LOCATION_FIELDS, OPERATIONAL_FIELDS, TrainConfig
from kpbench.errors import KpbenchError
from kpbench.variant import get_variant


@dataclass(frozen=True)
class Tag:
    """One readable piece of a run name: the config field (dotted for data fields) and its text."""

    field: str
    text: Callable[[Any], str]
    data: bool = False  # a property of the data: kept in the labels of no-learning baselines
    condition: bool = False  # an experimental condition: always in report labels (never "shared")


def _source_text(source: str) -> str:
    """``builtin:600`` -> ``builtin600``; a folder -> ``data-<name>.<hash>``: its last path part
    (``-`` and other separators made ``_``) and 4 hex digits of its absolute path, so that two
    folders called ``photos`` are two datasets."""
    if source.startswith("builtin"):
        return source.replace(":", "")
    path = Path(source).expanduser()
    name = re.sub(r"[^A-Za-z0-9_]+", "_", path.name or "root")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:4]
    return f"data-{name}.{digest}"


def box_source_text(box_id: str) -> str:
    """The run-name tag of a box file's id: ``boxes-<stem>.<hash4>``."""
    return f"boxes-{_box_id_text(box_id)}"


def _box_id_text(box_id: str) -> str:
    """``authors_boxes.1a2b3c4d5e6f7a8b`` (a box file's stem and content hash) ->
    ``authors_boxes.1a2b``: 4 hex digits of the content, so that two versions of a file are two
    box sources."""
    stem, _, digest = box_id.rpartition(".")
    return f"{stem}.{digest[:4]}"


# In name order. Values equal to the default give no tag.
TAGS: tuple[Tag, ...] = (
    Tag("data.source", _source_text, data=True),
    Tag("data.preset", lambda v: f"preset-{v}", data=True),
    Tag("data.size", lambda v: f"s{v}", data=True),
    Tag("data.crop", lambda v: f"crop{v}", data=True),
    Tag("data.boxes_id", lambda v: box_source_text(v), data=True),
    Tag("patch_source", str, condition=True),  # "random"
    Tag("data.n_patches", lambda v: f"n{v}", data=True, condition=True),
    Tag("width", lambda v: f"w{v:g}"),
    Tag("batch_size", lambda v: f"b{v}"),
    Tag("init", lambda v: f"init-{v}", condition=True),
    Tag("lambda_decay_epochs", lambda v: f"decay{v}"),
)
# Identity settings without a tag of their own go into a hash tag: one for data settings (they
# change the test set, so baselines keep it), one for training settings.
DATA_HASH, TRAIN_HASH = "other-data", "other"
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
    return _flatten(TrainConfig().to_dict())


def _identity_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in _flatten(config).items()
            if k.split(".")[0] not in OPERATIONAL_FIELDS and k not in ("variant", "seed")
            and k not in LOCATION_FIELDS}


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
    for field, prefix, is_data in ((DATA_HASH, "xd", True), (TRAIN_HASH, "x", False)):
        part = {k: v for k, v in rest.items() if k.startswith("data.") == is_data}
        if part:
            digest = hashlib.sha1(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()[:6]
            tags.append((field, f"{prefix}{digest}"))
    return tags


def run_name(config: Mapping[str, Any], variant_init: str | None = None) -> str:
    """The directory name of a run: ``<variant>[-<tag>...]-seed<k>``."""
    parts = [str(config["variant"]), *(text for _, text in run_tags(config, variant_init))]
    return "-".join(parts) + f"{SEED_SEPARATOR}{int(config['seed'])}"


def box_source_of(tags: Sequence[tuple[str, str]]) -> str:
    """The box source a run was trained on, from its tags: ``boxes-<stem>.<hash4>`` for a box
    file, else ``edgeboxes``. Runs of one source can be judged apart from the others'
    (kpbench.report.aggregation.judge_claims_by_box_source)."""
    return next((text for field, text in tags if field == "data.boxes_id"), EDGEBOXES)


def legacy_run_name(variant: str, seed: int) -> str:
    """The name every run had before names carried their settings."""
    return f"{variant}{SEED_SEPARATOR}{seed}"


def distinguishing_tags(runs: Mapping[str, Sequence[tuple[str, str]]],
                        untrained: Collection[str] = ()) -> dict[str, list[tuple[str, str]]]:
    """Run name -> the tags of that run that tell it apart in ``runs`` (name -> tags): those not
    every run shares, and always the experimental conditions (random patches, N, initialisation,
    hashed settings), so that ``full`` always means the full model under the default conditions
    at the scale the runs share. ``untrained``: runs without training settings (predictions made
    elsewhere), which share the data tags and leave the training tags to the trained runs."""
    if not runs:
        return {}
    data_fields = {tag.field for tag in TAGS if tag.data} | {DATA_HASH}
    trained = [set(tags) for name, tags in runs.items() if name not in untrained] or [set()]
    everyone = set.intersection(*(set(tags) for tags in runs.values()))
    shared = ({tag for tag in everyone if tag[0] in data_fields}
              | {tag for tag in set.intersection(*trained) if tag[0] not in data_fields})
    conditions = {tag.field for tag in TAGS if tag.condition} | {DATA_HASH, TRAIN_HASH}
    return {name: [tag for tag in tags if tag not in shared or tag[0] in conditions]
            for name, tags in runs.items()}


def label(variant: str, tags: Sequence[tuple[str, str]], data_only: bool = False) -> str:
    """``variant`` plus tag texts; ``data_only`` keeps the data tags alone (for the rows of a
    no-learning baseline, which does not depend on how a model was trained)."""
    data_fields = {tag.field for tag in TAGS if tag.data} | {DATA_HASH}
    kept = [text for field, text in tags if not data_only or field in data_fields]
    return "-".join([variant, *kept])


def stored_tags(stored: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The tags of a run from its config.json: as written when the run started, or for runs from
    before names carried settings, computed from the stored config (whose lambda decay was
    resolved to the run's length, so it gives no tag)."""
    if "tags" in stored:
        return [(str(field), str(text)) for field, text in stored["tags"]]
    return run_tags(*legacy_identity(stored))


def legacy_identity(stored: Mapping[str, Any], lambda_decay_epochs: int | None = None
                    ) -> tuple[dict[str, Any], str | None]:
    """(config, variant's own init) to name a run whose config.json predates names: its init is
    the one its spec.json recorded (dcgan before init was recorded), and the registered variant's
    init is the one that needs no tag; the resolved lambda decay becomes ``lambda_decay_epochs``."""
    config = dict(stored["config"])
    spec_init = (stored.get("spec") or {}).get("init", "dcgan")
    try:
        variant_init: str | None = get_variant(str(config["variant"])).init
    except KpbenchError:  # a variant that no longer exists: its own init is the stored one
        variant_init = spec_init
    return config | {"lambda_decay_epochs": lambda_decay_epochs, "init": spec_init}, variant_init
