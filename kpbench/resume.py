"""Which run a call of ``kpbench.train.train`` trains, and whether it continues one.

A run lives in ``<work>/runs/<name>`` (:func:`run_dir_for`; the name is kpbench.identity's).
Before any network is built, :func:`prepare_run` starts, continues or refuses it: a folder with a
checkpoint continues when its spec, its config (all but ``config.OPERATIONAL_FIELDS``; for
``config.LOCATION_FIELDS`` the content hash beside the path), data manifest and world size match
the request; one trained with other settings is refused unless ``restart`` discards it; anything
else starts over. It writes spec.json and config.json and returns the :class:`RunSetup`.
:func:`adopt_legacy_run` first renames folders written before names carried settings, so that
they continue. :class:`RunState` is where a run stands, as its checkpoint records it.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kpbench.config import LOCATION_FIELDS, OPERATIONAL_FIELDS, TrainConfig
from kpbench.distributed import Dist, barrier
from kpbench.errors import KpbenchError
from kpbench.identity import legacy_identity, legacy_run_name, run_name, run_tags
from kpbench.io import atomic_write_json
from kpbench.lock import RunLock
from kpbench.paths import RunDir, WorkDir
from kpbench.samples import PatchSampleDataset
from kpbench.variant import VariantSpec, get_variant


@dataclass
class RunState:
    """Where a run stands: saved in its checkpoint, and where a resumed run continues."""

    step: int = 0  # iterations done
    epoch: int = 0  # epoch of the next batch
    batch_in_epoch: int = 0  # batches of ``epoch`` already done
    lam: float = 0.0  # lambda of the last iteration


@dataclass(frozen=True)
class RunSetup:
    """A prepared run directory and what this call of ``train`` does in it: with which resolved
    config, how far, and whether it continues a checkpoint."""

    run_dir: Path
    config: TrainConfig  # with lambda_decay_epochs resolved
    steps_per_epoch: int
    total_steps: int
    resume: bool

    @property
    def files(self) -> RunDir:
        return RunDir(self.run_dir)


def _config_to_match(config: dict[str, Any], spec_init: str) -> dict[str, Any]:
    """The settings that must match to continue a run; ``init`` None means the spec's own."""
    values = {k: v for k, v in config.items() if k not in OPERATIONAL_FIELDS}
    for dotted in LOCATION_FIELDS:  # e.g. data.boxes: the content hash beside it is compared
        group, _, name = dotted.partition(".")
        values[group] = {k: v for k, v in values.get(group, {}).items() if k != name}
    return values | {"init": values.get("init") or spec_init}


def _without_locations(identity: dict[str, Any]) -> dict[str, Any]:
    """A run identity without where a plug-in variant's file was (its content hash stays)."""
    spec = dict(identity.get("spec") or {})
    if isinstance(spec.get("source"), dict):
        spec["source"] = {"sha256": spec["source"].get("sha256")}
    return identity | {"spec": spec}


def _differences(stored: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """``dotted.key: old -> new`` for each setting that differs, nested dicts key by key."""
    found = []
    for key in sorted(set(stored) | set(current)):
        old, new = stored.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            found.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return found


def run_dir_for(config: TrainConfig, spec: VariantSpec) -> Path:
    """``<work>/runs/<name>``: the name shows the variant, every identity setting that differs from
    the defaults, and the seed (kpbench.identity)."""
    return WorkDir.resolve(config.workdir).runs / run_name(config.to_dict(), get_variant(spec.name).init)


def adopt_legacy_run(run_dir: Path, config: TrainConfig, spec: VariantSpec) -> None:
    """Make runs written before names carried settings (config.json without "tags") fit the
    naming: the old ``<variant>-seed<k>`` folder (or whatever folder ``run_dir`` names) is renamed
    to ``run_dir`` when its settings give that name, so it continues; a folder in the way that
    holds another run (e.g. trained at another width) moves to its own name, so it is neither
    continued nor offered for deletion."""
    for folder in dict.fromkeys([run_dir, run_dir.parent / legacy_run_name(spec.name, config.seed)]):
        config_path = RunDir(folder).config
        if not config_path.is_file():
            continue
        stored = json.loads(config_path.read_text())
        if "tags" in stored:  # written under the current naming
            continue
        if run_name(*legacy_identity(stored, config.lambda_decay_epochs)) == run_dir.name:
            if folder != run_dir and not run_dir.exists():
                with RunLock(folder, "rename"):
                    folder.rename(run_dir)
            continue
        own_name = folder.parent / run_name(*legacy_identity(stored))
        if own_name != folder and not own_name.exists():
            with RunLock(folder, "rename"):
                folder.rename(own_name)


def prepare_run(config: TrainConfig, spec: VariantSpec, dataset: PatchSampleDataset,
                dist_info: Dist) -> RunSetup:
    """Start, continue or refuse. A run continues when its checkpoint exists and its spec, config
    (all but OPERATIONAL_FIELDS), data manifest and world size match; ``restart`` discards it."""
    run_dir = run_dir_for(config, spec)
    files = RunDir(run_dir)
    # From the request (a decay resolved below is no tag) and the variant's own initialisation.
    tags = run_tags(config.to_dict(), get_variant(spec.name).init)
    steps_per_epoch = len(dataset) // config.batch_size
    if steps_per_epoch == 0:
        raise KpbenchError(f"the training split has {len(dataset)} images, fewer than one batch of "
                           f"{config.batch_size}; use a smaller --batch-size or more data")
    total_steps = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    if config.restart and dist_info.main and run_dir.exists():
        shutil.rmtree(run_dir)
    barrier(dist_info)

    stored = None
    if files.config.exists() and files.checkpoint.exists():
        stored = json.loads(files.config.read_text())
    decay = config.lambda_decay_epochs
    if decay is None:  # resolved when the run starts and kept when a rerun extends it
        decay = (stored["config"]["lambda_decay_epochs"] if stored
                 else math.ceil(total_steps / steps_per_epoch))
    config = replace(config, lambda_decay_epochs=decay)
    identity = {"spec": spec.to_dict(), "config": _config_to_match(config.to_dict(), spec.init),
                "data_manifest": dataset.manifest_hash, "world_size": dist_info.world}
    if stored is not None:
        stored_spec = VariantSpec.from_dict(stored.get("spec", {}) | {"name": spec.name})
        previous = ({k: stored.get(k) for k in identity}
                    | {"config": _config_to_match(stored["config"], stored_spec.init),
                       # Read through from_dict: fields added since the run started take the
                       # value that reproduces it (e.g. image_skips=True, init="dcgan").
                       "spec": replace(stored_spec, description=spec.description).to_dict()})
        differences = _differences(_without_locations(previous), _without_locations(identity))
        if differences:
            raise KpbenchError(
                f"{run_dir} was trained with different settings ({'; '.join(differences)}); pass "
                "--restart to discard it and start over, or choose another --seed or --workdir")
    barrier(dist_info)  # every rank has read the old files before the main rank rewrites them
    if dist_info.main:
        if stored is None and run_dir.exists():  # files without a checkpoint: nothing to continue
            shutil.rmtree(run_dir)
        files.samples.mkdir(parents=True, exist_ok=True)
        files.checkpoint.parent.mkdir(exist_ok=True)
        atomic_write_json(files.spec, spec.to_dict())
        atomic_write_json(files.config, identity | {
            "name": run_dir.name, "tags": tags, "config": config.to_dict(),
            "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
            "train_images": len(dataset)})
    return RunSetup(run_dir, config, steps_per_epoch, total_steps, resume=stored is not None)
