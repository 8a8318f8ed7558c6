"""Everything the report reads besides the result rows, gathered in one pass before anything is
rendered: training logs, image grids, specs, configs and the runs' provenance. Files that cannot
be read become ``problems`` (listed at the end of the page), in the order the page shows them."""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from kpbench.claims import ClaimResult
from kpbench.paths import RunDir, WorkDir
from kpbench.report.aggregation import BoxSourceVerdicts, ordered_protocols, variant_order
from kpbench.results import is_baseline
from kpbench.variant import reference_name as variant_reference_name

IMAGE_TYPES: dict[str, str] = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
}
MAX_IMAGES_PER_GROUP = 6
# Captions of known protocol grids, by (protocol folder, file stem).
IMAGE_CAPTIONS: dict[tuple[str, str], str] = {
    ("patches", "key"): "Columns: real image with its key boxes, the input patches, the generated "
    "image, the predicted mask (when the model has one), the nearest-neighbour baseline's answer.",
    ("patches", "random"): "As above, with random patches of the same count and size distribution.",
    ("patches", "memorisation"): "Memorisation check: left column the generated image, right column "
    "the nearest training image in 16x16 pixels. Near-copies would mean the model memorised "
    "training images.",
}
# Images shown first within a protocol's folder (the rest follow in natural order).
IMAGE_ORDER: tuple[str, ...] = ("key", "random", "memorisation")
MAX_IMAGE_BYTES = 4 << 20
DIAGNOSTIC_KEYS: tuple[str, ...] = (
    "mask_iou", "prior_mask_iou", "spatial_l1", "spatial_l1_empty", "spatial_l1_prior", "appearance_l1",
)
_RUN_NAME = re.compile(r"^(?P<variant>.+)-seed(?P<seed>\d+)$")


@dataclass(frozen=True)
class ReportData:
    """The rows and what was computed from them (no files read yet)."""

    workdir: WorkDir
    name: str
    title: str
    rows: pd.DataFrame
    stats: pd.DataFrame
    summary: pd.DataFrame
    descriptions: dict[str, str]
    variants: list[str]
    protocols: list[str]
    claims: list[ClaimResult] = field(default_factory=list)
    claims_error: str = ""  # why the claims could not be checked
    run_labels: dict[str, str] = field(default_factory=dict)  # run folder -> label (label_runs)
    # The claim check once per box source the runs were trained on; None: one source only.
    box_source_claims: BoxSourceVerdicts | None = None

    def seeds(self, variant: str) -> list[int]:
        return sorted({int(seed) for seed in self.rows.loc[self.rows["variant"] == variant, "seed"]})

    @property
    def trained(self) -> list[str]:
        """The variants that are trained runs (no baselines), in display order."""
        return [variant for variant in self.variants if not is_baseline(variant)]

    def run_dir(self, variant: str, seed: int) -> Path:
        """The folder of the run shown as ``variant`` (a label) with ``seed``."""
        names = sorted(self.rows.loc[(self.rows["variant"] == variant) & (self.rows["seed"] == seed), "run"])
        if names:
            return self.workdir.runs / str(names[0])
        labelled = sorted(n for n, text in self.run_labels.items() if text == variant)
        matching = [n for n in labelled if n.endswith(f"-seed{seed}")]
        return self.workdir.runs / (matching[0] if matching else f"{variant}-seed{seed}")

    def runs(self) -> list[tuple[str, int]]:
        """(variant, seed) of every trained run with rows (baselines have no run of their own)."""
        return [(variant, seed) for variant in self.trained for seed in self.seeds(variant)]


@dataclass
class RunLog:
    """What a run's ``log.jsonl`` says about training: diagnostics by step and collapse warnings."""

    name: str  # the run folder, e.g. full-seed0
    variant: str
    seed: int | None
    diagnostics: dict[int, dict[str, float]] = field(default_factory=dict)
    warnings: list[tuple[int | None, str]] = field(default_factory=list)
    # The precision of each training session (start, then every resume): "off", "bf16" or "fp16",
    # what ``--amp`` resolved to on the training device. Empty for logs written before it was logged.
    precisions: list[str] = field(default_factory=list)

    @property
    def precision(self) -> str | None:
        """The precisions in the order the run used them, e.g. "bf16" or "bf16 then off"."""
        changes = [p for k, p in enumerate(self.precisions) if k == 0 or p != self.precisions[k - 1]]
        return " then ".join(changes) or None


@dataclass(frozen=True)
class EmbeddedImage:
    """One image file of a run: its bytes as a data URI, or why it is not embedded."""

    variant: str
    name: str  # file name
    label: str  # run folder / path inside it
    data_uri: str = ""
    too_large: str = ""  # set instead of data_uri for files over MAX_IMAGE_BYTES


@dataclass(frozen=True)
class ImagePanel:
    heading: str
    caption: str
    images: list[EmbeddedImage]


@dataclass(frozen=True)
class Sources:
    """The files behind the page's later sections; ``problems``: files that could not be read."""

    logs: list[RunLog]
    panels: list[ImagePanel] | None  # None: images left out
    omitted_images: list[str]
    reference_name: str  # the variant the others are compared with (kpbench.variant.reference_name)
    reference_spec: tuple[int, dict[str, str]] | None  # (seed, flat spec) of its first run
    specs: dict[str, dict[str, str] | None]  # other trained variant -> flat spec (None: none found)
    configs: dict[tuple[str, int], dict[str, str]]
    provenance: dict[tuple[str, int], dict[str, str]]
    problems: list[str]


PRECISION_USED = "amp (used)"  # the training configuration's row for RunLog.precision


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested JSON as ``{"a.b": "value"}``; leaves other than strings as compact JSON."""
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value if isinstance(value, str) else json.dumps(value)}


def gather(data: ReportData, include_images: bool = True) -> Sources:
    """Read every file the page shows, in page order (so ``problems`` lists them in that order)."""
    problems: list[str] = []
    logs = run_logs(data, problems)
    panels, omitted = (image_panels(data, problems) if include_images else (None, []))
    reference_name = variant_reference_name()
    reference_spec = None
    specs: dict[str, dict[str, str] | None] = {}
    reference = _first_run_json(data, reference_name, RunDir.SPEC_FILE, problems)
    if reference is not None:
        reference_spec = reference[0], flatten(reference[1])
        for variant in data.trained:
            if variant != reference_name:
                found = _first_run_json(data, variant, RunDir.SPEC_FILE, problems)
                specs[variant] = flatten(found[1]) if found else None
    configs = _flat_per_run(data, RunDir.CONFIG_FILE, problems)
    # config.json holds what was asked ("amp": "auto"); the log says what ran.
    precision = {log.name: log.precision for log in logs}
    for (variant, seed), flat in configs.items():
        if used := precision.get(data.run_dir(variant, seed).name):
            flat[PRECISION_USED] = used
    provenance = _flat_per_run(data, f"{RunDir.RESULTS_DIR}/{RunDir.PROVENANCE_FILE}", problems)
    return Sources(logs, panels, omitted, reference_name, reference_spec, specs, configs, provenance,
                   problems)


def read_json(path: Path, problems: list[str]) -> Any:
    """Parsed JSON, or None when the file is absent; unreadable files are added to ``problems``."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        problems.append(f"{path}: {error}")
        return None


def _flat_per_run(data: ReportData, filename: str,
                  problems: list[str]) -> dict[tuple[str, int], dict[str, str]]:
    found = {}
    for variant, seed in data.runs():
        parsed = read_json(data.run_dir(variant, seed) / filename, problems)
        if parsed is not None:
            found[variant, seed] = flatten(parsed)
    return found


def _first_run_json(data: ReportData, variant: str, filename: str,
                    problems: list[str]) -> tuple[int, Any] | None:
    """``(seed, parsed)`` for the lowest seed of ``variant`` whose run has ``filename``."""
    seeds = data.seeds(variant)
    if not seeds:  # a variant without rows: look at any of its runs on disk
        found = sorted(data.workdir.runs.glob(f"*-seed*/{filename}"))
        seeds = sorted(int(m.group(1)) for p in found
                       if data.run_labels.get(p.parent.name, _RUN_NAME.sub(r"\g<variant>", p.parent.name))
                       == variant and (m := re.search(r"-seed(\d+)$", p.parent.name)))
    for seed in seeds:
        parsed = read_json(data.run_dir(variant, seed) / filename, problems)
        if parsed is not None:
            return seed, parsed
    return None


# --------------------------------------------------------------------------- training logs


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def read_run_log(path: Path, problems: list[str] | None = None, label: str | None = None) -> RunLog:
    """Parse one run's ``log.jsonl`` (lines that are not JSON objects are skipped and counted in
    ``problems``); a later entry for the same step replaces an earlier one. ``label``: how the
    report names the run (default: its folder name without the seed)."""
    name = path.parent.name
    match = _RUN_NAME.match(name)
    variant = label or (match["variant"] if match else name)
    log = RunLog(name, variant, int(match["seed"]) if match else None)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        if problems is not None:
            problems.append(f"{path}: {error}")
        return log
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if not isinstance(entry, dict):
            bad += 1
            continue
        step, logged = _finite(entry.get("step")), entry.get("diagnostics")
        if entry.get("event") == "diagnostics" and step is not None and isinstance(logged, dict):
            values = {key: v for key in DIAGNOSTIC_KEYS if (v := _finite(logged.get(key))) is not None}
            log.diagnostics[int(step)] = values
        elif entry.get("event") in ("start", "resume") and isinstance(entry.get("amp"), str):
            log.precisions.append(entry["amp"])
        elif entry.get("event") == "mask-collapse-warning":
            log.warnings.append((None if step is None else int(step), str(entry.get("message", ""))))
    if bad and problems is not None:
        problems.append(f"{path}: {bad} lines that are not JSON objects skipped")
    return log


def run_logs(data: ReportData, problems: list[str]) -> list[RunLog]:
    """Every ``runs/*/log.jsonl``, by variant (display order) and seed."""
    if not data.workdir.runs.is_dir():
        return []
    logs = [
        read_run_log(path, problems, data.run_labels.get(path.parent.name))
        for path in sorted(data.workdir.runs.glob(f"*/{RunDir.LOG_FILE}"))
        if path.is_file()
    ]
    rank = {variant: index for index, variant in enumerate(variant_order(log.variant for log in logs))}
    return sorted(logs, key=lambda log: (rank[log.variant], -1 if log.seed is None else log.seed, log.name))


# --------------------------------------------------------------------------- images


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_TYPES]
    return sorted(files, key=_natural_key)


def image_panels(data: ReportData, problems: list[str]) -> tuple[list[ImagePanel], list[str]]:
    """Image grids side by side across variants (each variant's first seed): the latest training
    samples, then each grid the protocols wrote under ``results/<protocol>/``; and what was left
    out."""
    panels: dict[str, list[tuple[str, Path, Path]]] = {}  # heading -> [(variant, image, run dir)]
    captions: dict[str, str] = {}  # heading -> what the grid shows
    omitted = []
    for variant in data.trained:
        run_dir = data.run_dir(variant, data.seeds(variant)[0])
        samples = image_files(RunDir(run_dir).samples)
        if samples:
            panels.setdefault("training samples, latest", []).append((variant, samples[-1], run_dir))
        results = RunDir(run_dir).results
        folders = {p.name: p for p in results.iterdir() if p.is_dir()} if results.is_dir() else {}
        for name in ordered_protocols(folders):
            images = image_files(folders[name])
            rank = {stem: index for index, stem in enumerate(IMAGE_ORDER)}
            images.sort(key=lambda path: rank.get(path.stem, len(rank)))  # stable: natural order kept
            for path in images[:MAX_IMAGES_PER_GROUP]:
                heading = f"{name} · {path.stem}"
                panels.setdefault(heading, []).append((variant, path, run_dir))
                if (name, path.stem) in IMAGE_CAPTIONS:
                    captions[heading] = IMAGE_CAPTIONS[name, path.stem]
            if len(images) > MAX_IMAGES_PER_GROUP:
                omitted.append(f"{variant}: {len(images) - MAX_IMAGES_PER_GROUP} more in results/{name}/")
    embedded = []
    for heading, shown in panels.items():
        read = [_embed(variant, path, run_dir, problems) for variant, path, run_dir in shown]
        embedded.append(ImagePanel(heading, captions.get(heading, ""), [i for i in read if i is not None]))
    return embedded, omitted


def _embed(variant: str, path: Path, run_dir: Path, problems: list[str]) -> EmbeddedImage | None:
    label = f"{run_dir.name}/{path.relative_to(run_dir).as_posix()}"
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            why = f"{label}: {size >> 20} MiB, too large to embed"
            return EmbeddedImage(variant, path.name, label, too_large=why)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError as error:
        problems.append(f"{path}: {error}")
        return None
    uri = f"data:{IMAGE_TYPES[path.suffix.lower()]};base64,{data}"
    return EmbeddedImage(variant, path.name, label, data_uri=uri)
