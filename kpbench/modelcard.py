"""Exported models: a run's generator as safetensors plus a JSON card, loadable without the run.

    export_model(run_dir, out_dir)      # -> out_dir/model.json + out_dir/generator.safetensors
    model = load_model(path)            # a run folder or an exported folder -> TrainedRun

The folder ``kpbench export-model`` writes::

    generator.safetensors   the generator's state dict (weights and batch-norm statistics)
    model.json              the card: variant spec, training settings, data manifest hash,
                            training step, the weights file's SHA-256, and the run's headline
                            metrics with their 95 % intervals and how they were measured
                            (when it has result rows)

Loading reads the card and the tensors (:mod:`kpbench.tensorfile`): nothing is unpickled, and
the weights must match the hash the card records.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from kpbench.config import TrainConfig
from kpbench.errors import KpbenchError
from kpbench.io import atomic_write_json, sha256_file
from kpbench.paths import RunDir
from kpbench.runs import TrainedRun, build_untrained_generator, load_run
from kpbench.runtime import pick_device
from kpbench.tensorfile import read_tensors, write_tensors
from kpbench.variant import VariantSpec

CARD_FILE = "model.json"
WEIGHTS_FILE = "generator.safetensors"
CARD_FORMAT = "kpbench-model"
CARD_VERSION = 1
# Settings that say where a run lived on the machine that trained it, not what it learned.
LOCAL_FIELDS = ("workdir",)


def is_exported(path: Path) -> bool:
    """Whether ``path`` is a folder that :func:`export_model` wrote."""
    return (Path(path) / CARD_FILE).is_file()


def _finite(value: Any) -> float | None:
    """A JSON-safe number: NaN (no value, no interval) becomes null."""
    number = float(value)
    return number if math.isfinite(number) else None


def headline_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The report's summary cells of this run alone (its headline metrics and the floors measured
    beside it), each with its mean, 95 % interval, seeds and samples; [] before any evaluation."""
    from kpbench.report.aggregation import aggregate, summary_table
    from kpbench.results import read_rows, read_samples

    rows = read_rows(run_dir.parent)
    rows = rows[rows["run"] == run_dir.name]
    if rows.empty:
        return []
    samples = read_samples(run_dir.parent)
    samples = samples[samples["run"] == run_dir.name]
    summary = summary_table(rows, stats=aggregate(rows, samples))
    return [
        {"protocol": cell["protocol"], "condition": cell["condition"], "metric": cell["metric"],
         "extractor": cell["extractor"], "variant": cell["variant"], "direction": cell["direction"],
         "mean": _finite(cell["mean"]), "ci_low": _finite(cell["low"]), "ci_high": _finite(cell["high"]),
         "n": int(cell["n_max"]) if math.isfinite(float(cell["n_max"])) else None,
         "note": str(cell["notes"])}
        for cell in summary.to_dict("records")
    ]


def export_model(run_dir: Path | str, out_dir: Path | str) -> Path:
    """Write the trained run's generator and card to ``out_dir``; returns the card's path."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if is_exported(run_dir):
        raise KpbenchError(f"{run_dir} is already an exported model; export the run it came from")
    if out_dir.exists() and not out_dir.is_dir():
        raise KpbenchError(f"{out_dir} exists and is not a folder")
    run = load_run(run_dir, device="cpu")
    files = RunDir(run_dir)
    stored = json.loads(files.config.read_text())
    weights = write_tensors(out_dir / WEIGHTS_FILE, run.generator.state_dict(),
                            metadata={"format": "pt", "kpbench": CARD_FORMAT})
    training = run.config.to_dict()
    for name in LOCAL_FIELDS:
        training.pop(name, None)
    card = {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "run": run_dir.name,
        "step": run.step,
        "variant": run.spec.to_dict(),
        "training": training,
        "data_manifest": stored.get("data_manifest"),
        "train_images": stored.get("train_images"),
        "weights": {"file": WEIGHTS_FILE, "sha256": sha256_file(weights)},
        "metrics": headline_metrics(run_dir),
        # How the metrics were measured (generation batch size and batch-norm mode per protocol,
        # package versions): the run's results/provenance.json, when it has been evaluated.
        "evaluation": json.loads(files.provenance.read_text()) if files.provenance.is_file() else None,
    }
    return atomic_write_json(out_dir / CARD_FILE, card)


def read_card(folder: Path) -> dict[str, Any]:
    """An exported model's card, checked for the fields loading needs."""
    path = Path(folder) / CARD_FILE
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise KpbenchError(f"cannot read model card {path}: {error}") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise KpbenchError(f"{path} is not a kpbench model card (no \"format\": \"{CARD_FORMAT}\")")
    if card.get("format_version") != CARD_VERSION:
        raise KpbenchError(f"{path} has card format version {card.get('format_version')!r}; this kpbench "
                           f"reads version {CARD_VERSION}")
    missing = [key for key in ("variant", "training", "weights", "step") if key not in card]
    if missing:
        raise KpbenchError(f"model card {path} lacks {', '.join(missing)}")
    return card


def load_exported(folder: Path | str, device: str | torch.device | None = "cpu") -> TrainedRun:
    """The generator an exported folder holds, in eval mode on ``device``."""
    folder = Path(folder)
    card = read_card(folder)
    weights = folder / str(card["weights"].get("file", WEIGHTS_FILE))
    if not weights.is_file():
        raise KpbenchError(f"{weights} is missing; export the model again")
    expected = card["weights"].get("sha256")
    if expected is not None and sha256_file(weights) != expected:
        raise KpbenchError(f"{weights} does not match the SHA-256 its card records; export the model again")
    tensors, _ = read_tensors(weights)
    try:
        spec = VariantSpec.from_dict(card["variant"])
        config = TrainConfig.from_dict(card["training"])
    except (TypeError, ValueError) as error:
        raise KpbenchError(f"model card {folder / CARD_FILE} has unreadable settings ({error})") from None
    generator = build_untrained_generator(spec, config)
    try:
        generator.load_state_dict(tensors)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise KpbenchError(f"{weights} does not fit variant {spec.name}'s generator ({first})") from None
    device = pick_device(device)
    return TrainedRun(folder, spec, config, int(card["step"]), generator.to(device).eval(), device)


def load_model(path: Path | str, device: str | torch.device | None = "cpu") -> TrainedRun:
    """A trained run's generator from its run folder (:func:`kpbench.runs.load_run`) or from a
    folder :func:`export_model` wrote."""
    path = Path(path)
    return load_exported(path, device) if is_exported(path) else load_run(path, device)
