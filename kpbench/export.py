"""``kpbench export``: a dataset's evaluation inputs for programs outside kpbench.

The protocols that need only outputs are run with a :class:`RecordingRun` in place of a network:
it writes every requested patch set (and the z a built-in model would draw) and answers with
placeholder outputs that are scored and thrown away. The folder layout is
:mod:`kpbench.predictions`' (docs/predictions.md); ``kpbench eval --predictions`` reads the outputs
back through :class:`kpbench.predictions.PredictionRun`.
"""

from __future__ import annotations

import csv
import json
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from kpbench.config import TrainConfig
from kpbench.dataspec import DataSpec
from kpbench.errors import KpbenchError
from kpbench.paths import WorkDir
from kpbench.predictions import (
    EXPORT_EXTRACTOR,
    EXPORT_REFERENCE_SAMPLES,
    FORMAT,
    INPUTS_DIR,
    MANIFEST_FILE,
    OUTPUTS_DIR,
    REQUEST_COLUMNS,
    REQUESTS_FILE,
    Z_FILE,
    OutputsOnlyRun,
    PredictionSpec,
    Request,
    model_notice,
    patch_strip,
    request_id,
    z_seed,
)
from kpbench.seeds import check_seed

if TYPE_CHECKING:
    from kpbench.protocol import EvalOptions, Protocol


@dataclass
class RecordingRun(OutputsOnlyRun):
    """Stands in for a network at export: writes each requested patch set and its z, and answers
    with placeholder outputs (seeded noise) that the protocols score and export discards."""

    out: Path = Path()
    arrays: bool = False
    protocol: str = ""  # set by the export loop before each protocol
    requests: list[Request] = field(default_factory=list)
    z_rows: list[np.ndarray] = field(default_factory=list)

    @torch.no_grad()
    def generate(self, patches: Tensor, z: Tensor | None = None, rng: torch.Generator | None = None,
                 key: str | None = None) -> tuple[Tensor, Tensor | None]:
        tag, call = self.calls.next(key)
        size = patches.shape[0]
        if z is None:  # exactly the draw of TrainedRun.generate, so z.npy holds the built-in models' z
            z = torch.rand(size, self.spec.z_dim, generator=rng) * 2 - 1
        cpu = patches.detach().float().cpu()
        for row in range(size):
            identity = request_id(tag, call, row)
            Image.fromarray(patch_strip(cpu[row])).save(self.out / INPUTS_DIR / f"{identity}.png")
            if self.arrays:
                np.save(self.out / INPUTS_DIR / f"{identity}.npy", cpu[row].numpy())
            self.requests.append(Request(identity, self.protocol, tag, call, row, cpu.shape[1],
                                         z_seed(int(self.config.seed), tag, row),
                                         float(cpu[row].double().mean())))
            self.z_rows.append(z[row].float().cpu().numpy())
        generator = torch.Generator().manual_seed(len(self.requests))
        side = patches.shape[-1]
        image = torch.rand(size, 3, side, side, generator=generator) * 2 - 1
        mask = torch.rand(size, 1, side, side, generator=generator)
        return image.to(patches.device), mask.to(patches.device)


def exportable_protocols(names: Sequence[str]) -> tuple[list[Protocol], list[Protocol]]:
    """(protocols whose requests can be exported, those that need a network's internals) of the
    names given (``all``: every protocol kpbench eval runs)."""
    from kpbench.protocol import ALL, get_protocol, list_protocols

    chosen = list_protocols() if ALL in names else [get_protocol(name) for name in dict.fromkeys(names)]
    return ([p for p in chosen if not p.needs_model], [p for p in chosen if p.needs_model])


def export_inputs(spec: DataSpec, workdir: WorkDir, out: Path, protocol_names: Sequence[str],
                  options: EvalOptions, seed: int = 0, arrays: bool = False) -> dict[str, Any]:
    """Write the requests of the outputs-only protocols on ``spec``'s test data to ``out`` (a new
    or empty folder); returns the manifest. ``seed`` is the seed of the run the outputs will be
    scored as: it draws the random patches, the capped subsets and the z."""
    from kpbench.protocol import EvalContext, request_settings
    from kpbench.runtime import pick_device
    from kpbench.variant import reference_variant

    check_seed(seed)
    protocols, skipped = exportable_protocols(protocol_names)
    if skipped:
        warnings.warn(model_notice(skipped), stacklevel=2)
    if not protocols:
        raise KpbenchError("no protocol to export: every one chosen needs a network's internals")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise KpbenchError(f"{out} exists and is not an empty folder; export to a new folder")
    device = pick_device(options.device)
    config = TrainConfig(data=spec, seed=seed)
    recorder_spec = PredictionSpec("export", True, reference_variant().z_dim)
    scoring = options.with_settings(extractor=EXPORT_EXTRACTOR,
                                    fid_reference_samples=EXPORT_REFERENCE_SAMPLES)
    (out / INPUTS_DIR).mkdir(parents=True)
    (out / OUTPUTS_DIR).mkdir()
    with tempfile.TemporaryDirectory(prefix="kpbench-export-") as scratch:
        recorder = RecordingRun(Path(scratch), recorder_spec, config, device, out=out, arrays=arrays)
        context = EvalContext(workdir, Path(scratch), recorder, scoring, device)
        for protocol in protocols:
            assert protocol.run is not None
            recorder.protocol = protocol.name
            protocol.run(context)
        dataset = context.samples("test").dataset
    if not recorder.requests:  # the folders made above are empty: take them back
        for folder in (out / INPUTS_DIR, out / OUTPUTS_DIR):
            folder.rmdir()
        raise KpbenchError(f"{', '.join(p.name for p in protocols)} generated nothing on {spec.source}: "
                           "no inputs to export (a protocol's inputs are the patch sets it passes to "
                           "context.generate)")
    with (out / REQUESTS_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(REQUEST_COLUMNS)
        writer.writerows(request.csv_row() for request in recorder.requests)
    np.save(out / Z_FILE, np.stack(recorder.z_rows).astype(np.float32))
    manifest = {
        "format": FORMAT,
        "data": asdict(spec),
        "data_manifest_hash": dataset.manifest.hash,
        "seed": seed,
        "image_side": spec.size,
        "protocols": [p.name for p in protocols],
        "not_available": [p.name for p in skipped],
        # The settings that decide the requests (kpbench.protocol.request_option): fixed here and
        # used, whatever the command line says, whenever the predictions are scored.
        "options": {name: _jsonable(options.setting(name)) for name in request_settings()},
        "requests": len(recorder.requests),
        "z_dim": recorder_spec.z_dim,
        "arrays": arrays,
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# --- the exported inputs, read back -------------------------------------------------------------
