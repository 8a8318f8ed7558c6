"""Predictions made elsewhere: export a dataset's evaluation inputs, score what any program made of them.

    export_inputs(spec, workdir, out, protocols, options, seed)    # kpbench export
    check_outputs(inputs, outputs_dir) -> OutputCheck              # counts problems; errors raise
    import_predictions(workdir, inputs_dir, name, outputs_dir)     # the run folder (eval --predictions)
    load_prediction_run(run_dir, device) -> PredictionRun          # what evaluate() scores

Every generation request of a protocol goes through ``EvalContext.generate(patches, tag)`` with a
tag that names the protocol, its batch and its z draw. Export runs the protocols that need only
outputs with a :class:`RecordingRun` in place of a network: each request row becomes a patch set
with a stable id ``<tag>.<call>.<row>`` (``call``: how many earlier requests had that tag, e.g.
the swapped and reordered inputs that reuse a batch's z), written as a PNG strip with its z. Import
runs the same protocols with a :class:`PredictionRun`, which serves the stored image (and mask)
of the id the protocol asks for next, so every protocol, floor, interval, per-sample value, the
report and the claim check treat it as they treat a trained run, with no branch of their own.
Protocols that read a network's internals (:attr:`kpbench.protocol.Protocol.needs_model`) are
skipped for predictions with one notice. The folder layout is documented in docs/predictions.md.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from kpbench.config import TrainConfig
from kpbench.dataspec import DataSpec
from kpbench.errors import KpbenchError
from kpbench.paths import RunDir, WorkDir
from kpbench.runtime import derive_seed

if TYPE_CHECKING:
    from kpbench.protocol import EvalOptions, Protocol
    from kpbench.runs import TrainedRun

FORMAT = 1  # bump when the folder layout changes
MANIFEST_FILE = "manifest.json"
REQUESTS_FILE = "requests.csv"
INPUTS_DIR = "inputs"  # <id>.png: the N patches side by side; <id>.npy with --arrays: exact floats
OUTPUTS_DIR = "outputs"  # where a program writes <id>.png (and <id>.mask.png) by default
Z_FILE = "z.npy"  # (M, z_dim) float32, row k for request k: the z a built-in model would use
MASK_SUFFIX = ".mask"
REQUEST_COLUMNS = ("id", "protocol", "tag", "call", "row", "n_patches", "z_seed", "patch_mean")
# At export the fid protocol's requests are recorded, not scored: a weightless extractor and a
# small real reference make its (discarded) scores cheap; neither changes the requests.
EXPORT_EXTRACTOR = "random-conv"
EXPORT_REFERENCE_SAMPLES = 16
PATCH_MEAN_TOLERANCE = 1e-4  # a served request's patches must match the exported ones (float rounding aside)
BN_MODE = "predictions"  # what provenance records as the generation's batch-norm mode
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.]*(-[A-Za-z0-9_.]+)*")


@dataclass(frozen=True)
class PredictionSpec:
    """What evaluation reads of a run's variant: its name (the rows' variant), whether it predicts
    masks, and the z size of the reference model (the z exported with each request)."""

    name: str
    mask_decoder: bool
    z_dim: int


def request_id(tag: str, call: int, row: int) -> str:
    """The stable id of one output: the protocol's tag, the tag's call number, the batch row."""
    return f"{tag}.{call}.{row}"


def z_seed(seed: int, tag: str, row: int) -> int:
    """A 31-bit seed per (tag, row): outputs meant to share a z (the same patch set's swapped,
    reordered or noisy inputs) share it, for programs that draw their own z."""
    return derive_seed(seed, "eval", tag, row) % 2**31


def patch_strip(patches: Tensor) -> np.ndarray:
    """(N, 3, S, S) in [-1, 1] -> uint8 (S, N * S, 3): patch j in columns [j * S, (j + 1) * S)."""
    pixels = ((patches.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (N, 3, S, S)
    return pixels.permute(2, 0, 3, 1).flatten(1, 2).numpy()  # (S, N * S, 3)


class _Calls:
    """How many requests each tag has had so far (the ``call`` part of an id)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def next(self, tag: str | None) -> tuple[str, int]:
        if tag is None:
            raise KpbenchError("a request without a tag cannot be matched to stored outputs")
        call = self.counts.get(tag, 0)
        self.counts[tag] = call + 1
        return tag, call


def _no_internals(name: str) -> NoReturn:
    raise KpbenchError(f"{name} has no network: outputs made elsewhere give no part-encoder features")


@dataclass
class OutputsOnlyRun:
    """What evaluation needs of a run, for outputs that no kpbench network makes."""

    run_dir: Path
    spec: PredictionSpec
    config: TrainConfig
    device: torch.device
    step: int = 0
    bn_mode: str = BN_MODE
    calls: _Calls = field(default_factory=_Calls)

    supports_variable_n = True  # the requests say N; a program that cannot take it says so itself
    can_encode = False  # no part features: protocols that need them are skipped (needs_model)

    @property
    def n_patches(self) -> int:
        return self.config.n_patches

    def with_bn_mode(self, mode: str) -> OutputsOnlyRun:
        return self  # no batch-norm layers here

    def origin(self) -> dict[str, Any]:
        """For ``results/provenance.json``: outputs made elsewhere, no training to record (the
        seed is the one the inputs were exported for)."""
        return {"predictions": {"seed": self.config.seed}}

    def evaluation_options(self, options: EvalOptions) -> EvalOptions:
        return options

    def unavailable(self, protocol: Protocol, box_shift: str = "") -> str | None:
        """Why ``protocol`` cannot score these outputs: it needs a network's internals, or other
        inputs than were exported (another box source)."""
        if protocol.needs_model:
            return model_notice([protocol])
        if box_shift:
            return (f"{self.spec.name}: outputs made elsewhere answer the exported inputs only, not "
                    f"another box source ({box_shift.lstrip('@')}); skipped")
        return None

    def generate(self, patches: Tensor, z: Tensor | None = None, rng: torch.Generator | None = None,
                 key: str | None = None) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def encode(self, patches: Tensor) -> NoReturn:
        _no_internals(self.spec.name)

    def untrained(self, seed: int = 0) -> TrainedRun:
        _no_internals(self.spec.name)


@dataclass
class Request:
    id: str
    protocol: str
    tag: str
    call: int
    row: int
    n_patches: int
    z_seed: int
    patch_mean: float

    def csv_row(self) -> list[Any]:
        return [self.id, self.protocol, self.tag, self.call, self.row, self.n_patches, self.z_seed,
                f"{self.patch_mean:.9g}"]


def model_notice(protocols: Sequence[Protocol]) -> str:
    """The one line said when protocols that need a network are skipped for predictions."""
    names = ", ".join(p.name for p in protocols)
    return (f"{names}: {'needs' if len(protocols) == 1 else 'need'} a network's internals (the part "
            "encoder), not available for predictions made elsewhere; skipped")


@dataclass(frozen=True)
class ExportedInputs:
    """An export folder: its manifest and requests (in request order)."""

    folder: Path
    manifest: dict[str, Any]
    requests: dict[str, Request]

    @classmethod
    def read(cls, folder: Path) -> ExportedInputs:
        folder = Path(folder).expanduser().resolve()
        path = folder / MANIFEST_FILE
        if not path.is_file():
            raise KpbenchError(f"{folder} has no {MANIFEST_FILE}: not a folder written by `kpbench export`")
        try:
            manifest = json.loads(path.read_text())
            if manifest.get("format") != FORMAT:
                raise KpbenchError(f"{path} has format {manifest.get('format')!r}; this kpbench reads "
                                   f"format {FORMAT}: export again")
            with (folder / REQUESTS_FILE).open(newline="") as handle:
                requests = {}
                for record in csv.DictReader(handle):
                    request = Request(record["id"], record["protocol"], record["tag"], int(record["call"]),
                                      int(record["row"]), int(record["n_patches"]), int(record["z_seed"]),
                                      float(record["patch_mean"]))
                    requests[request.id] = request
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise KpbenchError(f"cannot read the export in {folder}: {error}") from None
        return cls(folder, manifest, requests)

    @property
    def data_spec(self) -> DataSpec:
        return DataSpec(**self.manifest["data"])

    @property
    def side(self) -> int:
        return int(self.manifest["image_side"])

    def options(self, options: EvalOptions) -> EvalOptions:
        """``options`` with the request-defining ones as exported."""
        fixed: dict[str, Any] = {name: tuple(value) if isinstance(value, list) else value
                                 for name, value in self.manifest["options"].items()}
        return options.with_settings(fixed)

    def replaced_settings(self, options: EvalOptions) -> dict[str, tuple[Any, Any]]:
        """Setting -> (given, exported) for each request setting that ``options`` sets away from
        its default and that :meth:`options` replaces with another exported value (the export
        fixed the inputs, so the given value cannot apply)."""
        defaults = type(options)()  # EvalOptions' defaults (kpbench.protocol imports this module)
        replaced = {}
        for name, exported in self.manifest["options"].items():
            exported = tuple(exported) if isinstance(exported, list) else exported
            given = options.setting(name)
            if given != exported and given != defaults.setting(name):
                replaced[name] = (given, exported)
        return replaced


@dataclass
class OutputCheck:
    """What :func:`check_outputs` found; problems that leave scores meaningful are warnings."""

    images: int = 0
    masks: int = 0
    clipped: list[str] = field(default_factory=list)  # ids with values outside the range
    unmatched: int = 0  # files that match no request


def output_paths(outputs: Path, identity: str) -> tuple[Path | None, Path | None]:
    """The image and mask files of ``identity`` in ``outputs`` (PNG first, then .npy), or None."""
    def first(stem: str) -> Path | None:
        return next((p for p in (outputs / f"{stem}.png", outputs / f"{stem}.npy") if p.is_file()), None)

    return first(identity), first(identity + MASK_SUFFIX)


def read_output(path: Path, channels: int, side: int) -> tuple[Tensor, bool]:
    """One output file -> (channels, side, side) float, and whether values left the range
    ([-1, 1] for images, [0, 1] for masks; clipped). PNG: 8-bit, 0..255 mapped onto the range
    exactly as kpbench maps real images. Raises KpbenchError with a one-line reason."""
    low = -1.0 if channels == 3 else 0.0
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            values = torch.from_numpy(np.asarray(array, dtype=np.float32))
            if values.dim() == 2 and channels == 1:
                values = values[None]
            elif values.dim() == 3 and values.shape[-1] == channels and values.shape[0] != channels:
                values = values.permute(2, 0, 1)
        else:
            with Image.open(path) as image:
                mode = "RGB" if channels == 3 else "L"
                pixels = np.asarray(image.convert(mode) if image.mode != mode else image)
            values = torch.from_numpy(pixels.copy())
            values = values.permute(2, 0, 1) if values.dim() == 3 else values[None]
            values = values.float().div_(127.5).sub_(1.0) if channels == 3 else values.float().div_(255.0)
    except (OSError, ValueError) as error:
        raise KpbenchError(f"cannot read {path}: {error}") from None
    if tuple(values.shape) != (channels, side, side):
        shape = "x".join(str(s) for s in values.shape)
        raise KpbenchError(f"{path.name} is {shape}, expected {channels}x{side}x{side} "
                           f"({'RGB' if channels == 3 else 'one channel'}, {side} x {side} pixels)")
    outside = bool(((values < low) | (values > 1.0) | ~torch.isfinite(values)).any())
    return values.nan_to_num(0.0).clamp(low, 1.0), outside


def check_outputs(inputs: ExportedInputs, outputs: Path, warn: bool = True) -> OutputCheck:
    """Check that ``outputs`` holds an image for every request (and a mask for every request or for
    none), of the export's size and in range. Missing files, wrong sizes, unreadable files and
    masks for only some ids are errors, all found in one pass and said in one line (each kind
    counted, its first named); values outside the range are clipped with one counted warning;
    files matching no id are counted and ignored (``warn``: say these two, else only count them)."""
    if not outputs.is_dir():
        raise KpbenchError(f"no outputs folder {outputs}: write <id>.png for every id of "
                           f"{inputs.folder / REQUESTS_FILE} there")
    check = OutputCheck()
    missing, wrong, without_mask = [], [], []
    for identity in inputs.requests:
        image, mask = output_paths(outputs, identity)
        if image is None:
            missing.append(identity)
            continue
        check.images += 1
        check.masks += mask is not None
        if mask is None:
            without_mask.append(identity)
        for path, channels in ((image, 3), (mask, 1)):
            if path is None:
                continue
            try:
                _, outside = read_output(path, channels, inputs.side)
            except KpbenchError as error:
                wrong.append(str(error))
                continue
            if outside:
                check.clipped.append(path.stem)
    total = len(inputs.requests)
    problems = []
    if missing:
        problems.append(f"{len(missing):,} missing (first: {missing[0]}.png)")
    if wrong:
        problems.append(f"{len(wrong):,} unusable (first: {wrong[0]})")
    if 0 < check.masks < check.images:  # of the images found: a missing image is counted above
        problems.append(f"{len(without_mask):,} of {check.images:,} found without the mask the others have "
                        f"(first: {without_mask[0]}{MASK_SUFFIX}.png)")
    if problems:
        raise KpbenchError(f"outputs in {outputs} cannot be scored ({total:,} ids): {'; '.join(problems)}; "
                           f"write <id>.png ({inputs.side} x {inputs.side} RGB) for every id of "
                           f"{REQUESTS_FILE}, and <id>{MASK_SUFFIX}.png for every id or for none")
    known = set(inputs.requests)
    check.unmatched = sum(1 for path in outputs.iterdir() if path.suffix in (".png", ".npy")
                          and path.stem.removesuffix(MASK_SUFFIX) not in known)
    if check.clipped and warn:
        warnings.warn(f"{len(check.clipped):,} of {check.images + check.masks:,} output files have values "
                      f"outside [-1, 1] (images) or [0, 1] (masks), clipped (first: {check.clipped[0]})",
                      stacklevel=2)
    if check.unmatched and warn:
        warnings.warn(f"{check.unmatched:,} files in {outputs} match no request id; ignored", stacklevel=2)
    return check


# --- a run that serves stored outputs -----------------------------------------------------------


@dataclass
class PredictionRun(OutputsOnlyRun):
    """Serves the outputs a program wrote, request by request, in place of a network."""

    inputs: ExportedInputs | None = None
    outputs: Path = Path()

    def evaluation_options(self, options: EvalOptions) -> EvalOptions:
        """The requests are fixed by the export: its request options replace ``options``'."""
        assert self.inputs is not None
        return self.inputs.options(options)

    def origin(self) -> dict[str, Any]:
        assert self.inputs is not None
        return {"predictions": {"seed": self.config.seed, "inputs": str(self.inputs.folder),
                                "outputs": str(self.outputs), "requests": len(self.inputs.requests),
                                "masks": self.spec.mask_decoder}}

    def unavailable(self, protocol: Protocol, box_shift: str = "") -> str | None:
        assert self.inputs is not None
        if not protocol.needs_model and protocol.name not in self.inputs.manifest["protocols"]:
            return (f"{self.spec.name}: {self.inputs.folder} holds no inputs for {protocol.name}; "
                    f"export with --protocol {protocol.name} to score it; skipped")
        return super().unavailable(protocol, box_shift)

    @torch.no_grad()
    def generate(self, patches: Tensor, z: Tensor | None = None, rng: torch.Generator | None = None,
                 key: str | None = None) -> tuple[Tensor, Tensor | None]:
        assert self.inputs is not None
        tag, call = self.calls.next(key)
        images, masks = [], []
        cpu = patches.detach().float().cpu()
        for row in range(patches.shape[0]):
            identity = request_id(tag, call, row)
            request = self.inputs.requests.get(identity)
            if request is None:
                raise KpbenchError(f"the evaluation asks for {identity}, which {self.inputs.folder} does not "
                                   "hold: export again with the options of this evaluation")
            if abs(float(cpu[row].double().mean()) - request.patch_mean) > PATCH_MEAN_TOLERANCE:
                raise KpbenchError(f"the patches of {identity} differ from the exported ones: the data "
                                   f"changed since {self.inputs.folder} was exported; export again")
            image_path, mask_path = output_paths(self.outputs, identity)
            if image_path is None:
                raise KpbenchError(f"{identity}.png is missing in {self.outputs}")
            images.append(read_output(image_path, 3, self.inputs.side)[0])
            if self.spec.mask_decoder:
                if mask_path is None:
                    raise KpbenchError(f"{identity}{MASK_SUFFIX}.png is missing in {self.outputs}")
                masks.append(read_output(mask_path, 1, self.inputs.side)[0])
        image = torch.stack(images).to(patches.device)  # (B, 3, S, S)
        mask = torch.stack(masks).to(patches.device) if masks else None  # (B, 1, S, S)
        return image, mask


PREDICTIONS_KEY = "predictions"  # config.json's entry naming the inputs and outputs of a predictions run


def check_name(name: str) -> None:
    """A method's name must be a readable label that no variant, baseline or variant label claims."""
    from kpbench.results import BASELINE_PREFIX
    from kpbench.variant import list_variants

    if not NAME_PATTERN.fullmatch(name) or name.startswith(BASELINE_PREFIX.rstrip(":")):
        raise KpbenchError(f"--name {name!r}: use letters, digits, '_', '.' and '-', starting with a "
                           "letter (not 'baseline')")
    for spec in list_variants():
        if name == spec.name or name.startswith(spec.name + "-"):
            raise KpbenchError(f"--name {name!r} would read as the variant {spec.name!r}; "
                               "choose another name")


def import_predictions(workdir: WorkDir, inputs_dir: Path, name: str, outputs_dir: Path | None = None,
                       warn: bool = True) -> tuple[Path, ExportedInputs, OutputCheck]:
    """Check the outputs of ``inputs_dir``'s requests and make (or refresh) the run folder that
    scores them as method ``name``: ``runs/<name>[-<data tags>]-seed<k>``. ``warn=False`` leaves
    the warnings to the evaluation, which checks the outputs again when it loads them."""
    from kpbench.identity import run_name, run_tags
    from kpbench.io import atomic_write_json, sha256_file
    from kpbench.samples import open_data

    check_name(name)
    inputs = ExportedInputs.read(inputs_dir)
    outputs = (Path(outputs_dir).expanduser().resolve() if outputs_dir is not None
               else inputs.folder / OUTPUTS_DIR)
    check = check_outputs(inputs, outputs, warn)
    spec = inputs.data_spec
    found = open_data(spec).manifest.hash
    if found != inputs.manifest.get("data_manifest_hash"):
        raise KpbenchError(f"the data of {inputs.folder} changed since it was exported (manifest "
                           f"{found[:12]}, exported {str(inputs.manifest.get('data_manifest_hash'))[:12]}); "
                           "export again")
    config = TrainConfig(variant=name, data=spec, seed=int(inputs.manifest["seed"])).to_dict()
    run_dir = workdir.runs / run_name(config)
    files = RunDir(run_dir)
    if files.checkpoint.exists() or (files.config.is_file() and PREDICTIONS_KEY not in
                                     json.loads(files.config.read_text())):
        raise KpbenchError(f"{run_dir} holds a trained run; choose another --name")
    if files.results.is_dir() and _stored_predictions(files) != str(outputs):
        shutil.rmtree(files.results)  # rows of other outputs must not outlive them
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(files.config, {
        "config": config,
        "tags": run_tags(config),
        PREDICTIONS_KEY: {
            "inputs": str(inputs.folder), "outputs": str(outputs), "masks": check.masks > 0,
            "requests": len(inputs.requests), "data_manifest_hash": found,
            "inputs_sha256": sha256_file(inputs.folder / REQUESTS_FILE),
        },
    })
    return run_dir, inputs, check


def _stored_predictions(files: RunDir) -> str | None:
    try:
        return str(json.loads(files.config.read_text())[PREDICTIONS_KEY]["outputs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_prediction_run(run_dir: Path) -> bool:
    """Whether ``run_dir``'s config.json describes predictions made elsewhere."""
    files = RunDir(run_dir)
    try:
        return files.config.is_file() and PREDICTIONS_KEY in json.loads(files.config.read_text())
    except (OSError, ValueError):
        return False


def load_prediction_run(run_dir: Path, device: torch.device) -> PredictionRun:
    """The run of ``run_dir`` (written by :func:`import_predictions`), its outputs checked again."""
    files = RunDir(run_dir)
    stored = json.loads(files.config.read_text())
    about = stored[PREDICTIONS_KEY]
    inputs = ExportedInputs.read(Path(about["inputs"]))
    outputs = Path(about["outputs"])
    check = check_outputs(inputs, outputs)
    config = TrainConfig.from_dict(stored["config"])
    spec = PredictionSpec(config.variant, check.masks > 0, int(inputs.manifest["z_dim"]))
    return PredictionRun(run_dir, spec, config, device, inputs=inputs, outputs=outputs)
