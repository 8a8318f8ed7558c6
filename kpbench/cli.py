"""The ``kpbench`` command line: thin Typer commands over the library.

Every command turns a :class:`KpbenchError` into one line on stderr and exit code 2, and Ctrl-C
into exit code 130; nothing here holds logic of its own.
"""

from __future__ import annotations

import functools
import inspect
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from kpbench.choices import (
    DEFAULT_BN_MODE,
    GENERATE_BN_MODE,
    Amp,
    BnMode,
    BoxFill,
    Init,
    Launcher,
    PatchSource,
    Preset,
)
from kpbench.errors import KpbenchError, file_error
from kpbench.paths import WORKDIR_ENV, WorkDir
from kpbench.seeds import check_seed

if TYPE_CHECKING:
    from kpbench.dataspec import DataSpec
    from kpbench.protocol import EvalOptions

app = typer.Typer(
    name="kpbench",
    help="Benchmark image generation from a few key local patches (Lee et al., ECCV 2018): "
    "prepare data, train the model and its ablations, evaluate protocols, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Index a folder of images and detect its key patches.", no_args_is_help=True)
app.add_typer(data_app, name="data")
study_app = typer.Typer(help="The user study: a blind browser page, and the statistics of its answers.",
                        no_args_is_help=True)
app.add_typer(study_app, name="study")

# No markup: what is printed is mostly names, paths and messages that may hold "[...]" (a plan's
# experiments, a list of sigmas), which rich would take for style tags and drop. Styled words
# are rich Text objects. Soft wrap: a line is one line (a terminal folds it; a log file or a
# pipe keeps it whole for grep), where rich would break it at 80 columns off a terminal.
# Off a terminal (a log file, a pipe) rich would draw tables 80 columns wide, folding names and
# intervals; there they get the room they need (a COLUMNS setting still wins).
LOG_WIDTH = 200


def _console(stderr: bool = False) -> Console:
    made = Console(stderr=stderr, markup=False, highlight=False, soft_wrap=True)
    if not made.is_terminal and "COLUMNS" not in os.environ:
        made.width = LOG_WIDTH
    return made


console = _console()
error_console = _console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(command: F) -> F:
    """Run ``command``; report user errors as one line and a non-zero exit, no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                # Library warnings (skipped files, relaxed filters) reach the user as one line each,
                # each text once per command (a plan's cells may repeat the same one).
                shown: set[str] = set()

                def show_once(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
                    if str(message) not in shown:
                        shown.add(str(message))
                        _show_warning(message, category)

                warnings.showwarning = show_once
                return command(*args, **kwargs)
        except KpbenchError as error:
            _print_error(error)
            raise typer.Exit(code=error.exit_code) from None
        except OSError as error:  # a write outside kpbench.io: full disk, no permission
            if (translated := file_error(error, action="open")) is None:
                raise
            _print_error(translated)
            raise typer.Exit(code=translated.exit_code) from None
        except KeyboardInterrupt:
            error_console.print("interrupted")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


@app.callback()
@user_errors
def plugins_option(
    plugin: Annotated[list[str] | None, typer.Option("--plugin", metavar="FILE.py|MODULE", help="Import a "
                      "variant (or protocol) file of your own before the command, e.g. `kpbench "
                      "--plugin my_variant.py train --variant mine` (repeatable; also env "
                      "KPBENCH_PLUGINS and the entry-point group kpbench.variants; docs/extending.md)."
                      )] = None,
) -> None:
    """Benchmark image generation from a few key local patches (Lee et al., ECCV 2018)."""
    from kpbench.plugins import add_plugin

    for reference in plugin or []:
        add_plugin(reference)


def _print_error(error: KpbenchError) -> None:
    error_console.print(Text("error:", style="bold red"), str(error))


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    error_console.print(Text("warning:", style="yellow"), str(message))


def registered_extractors() -> list[str]:
    """The FID/KID feature extractors' names: those of :mod:`kpbench.fid` and any that a
    protocol file registers when it is imported."""
    from kpbench.fid import list_extractors
    from kpbench.protocol import list_protocols

    list_protocols()  # imports every protocol file
    return list_extractors()


def checked_extractor(name: str) -> str:
    """``name`` when it is a registered extractor; else the library's one-line error naming them."""
    from kpbench.fid import get_extractor

    registered_extractors()
    return get_extractor(name).name


# Options shared by several commands (typed once, reused).
WorkdirOption = Annotated[
    Path | None,
    typer.Option("--workdir", "-w", help=f"Where runs/, cache/ and reports/ live (env {WORKDIR_ENV}; "
                 "default: current directory)."),
]
SizeOption = Annotated[int, typer.Option("--size", "-s", help="Image side S in pixels: 64, 128 or 256.")]
PresetOption = Annotated[
    Preset, typer.Option("--preset", help="Preset for crop and key-patch filters: 'default' (short side, "
                      "centre crop), 'celeba' (centre 108 px of the aligned 178x218 images, boxes "
                      "sized like the authors'; 'celeba-v1' the same), 'celeba-v2' (the same crop, "
                      "detection tuned to agree with the authors' boxes), 'waterfall' (tall boxes allowed).")
]
CropOption = Annotated[
    int | None, typer.Option("--crop", help="Centre crop side in source pixels before resizing "
                                "(overrides the preset).")
]
PatchesOption = Annotated[
    int, typer.Option("--patches", "-n", min=1, max=8, help="Key patches per image (N).")
]
EdgeModelOption = Annotated[
    Path | None, typer.Option("--edge-model", help="OpenCV structured-forest edge model "
                                 "(model.yml.gz); default: thinned gradient edges.")
]
SplitSeedOption = Annotated[int, typer.Option("--split-seed", help="Seed of the train/test split.")]
BoxesOption = Annotated[
    str | None, typer.Option("--boxes", metavar="FILE|edgeboxes", help="Key patches from a CSV of boxes "
                             "(file,x,y,w,h or file,box,x,y,w,h in source pixels; see README) instead "
                             "of kpbench's EdgeBoxes ('edgeboxes', the default). Its content is part "
                             "of the run's name.")
]
FillOption = Annotated[
    BoxFill, typer.Option("--fill", help="With --boxes: images with fewer than N boxes in the file are "
                          "left out ('skip') or completed with EdgeBoxes boxes ('detect').")
]


@dataclass(frozen=True)
class DataOptions:
    """How images are preprocessed and patched: the options ``data prepare``, ``data show`` and
    ``train`` share (declared once in :data:`DATA_PARAMETERS`)."""

    size: int = 64
    preset: Preset = Preset.DEFAULT
    crop: int | None = None
    patches: int = 3
    edge_model: Path | None = None
    split_seed: int = 0
    boxes: str | None = None
    fill: BoxFill = BoxFill.SKIP

    def spec(self, source: str) -> DataSpec:
        from kpbench.dataspec import DataSpec

        if self.edge_model is not None and not self.edge_model.is_file():
            raise KpbenchError(f"edge model {self.edge_model} not found")
        return DataSpec(source=source, size=self.size, preset=Preset(self.preset).value, crop=self.crop,
                        n_patches=self.patches, edge_model=str(self.edge_model) if self.edge_model else None,
                        split_seed=self.split_seed, boxes=self.boxes, box_fill=BoxFill(self.fill).value)


DATA_PARAMETERS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                      default=getattr(DataOptions, name))
    for name, annotation in (("size", SizeOption), ("preset", PresetOption), ("crop", CropOption),
                             ("patches", PatchesOption), ("edge_model", EdgeModelOption),
                             ("split_seed", SplitSeedOption), ("boxes", BoxesOption), ("fill", FillOption))
]


def with_data_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command`` the data options in place of its ``data_options: DataOptions`` parameter."""
    signature = inspect.signature(command, eval_str=True)
    parameters = []
    for parameter in signature.parameters.values():
        if parameter.name == "data_options":
            parameters += DATA_PARAMETERS
        else:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        options = DataOptions(**{parameter.name: kwargs.pop(parameter.name) for parameter in DATA_PARAMETERS})
        return command(data_options=options, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return wrapper


@data_app.command("prepare")
@user_errors
@with_data_options
def data_prepare(
    source: Annotated[str, typer.Argument(help="Folder of images, or 'builtin[:COUNT]'.")],
    data_options: DataOptions = DataOptions(),
    workers: Annotated[int | None, typer.Option(help="Detection processes (default: all cores).")] = None,
    workdir: WorkdirOption = None,
) -> None:
    """Index SOURCE, split it, and detect key patches for every image (cached, resumable)."""
    from kpbench import api

    prepared = api.prepare_data(data_options.spec(source), workdir=workdir, workers=workers, progress=True,
                                say=lambda text: console.print(text))
    for line in prepared.box_summary:
        console.print(line)
    console.print(f"manifest: {prepared.manifest}")


@data_app.command("show")
@user_errors
@with_data_options
def data_show(
    source: Annotated[str, typer.Argument(help="Folder of images, or 'builtin[:COUNT]'.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG contact sheet to write.")] = Path(
        "patches.png"
    ),
    count: Annotated[int, typer.Option(min=1, max=400, help="Images on the sheet.")] = 24,
    data_options: DataOptions = DataOptions(),
    workdir: WorkdirOption = None,
) -> None:
    """Write a contact sheet of images with their key-patch boxes drawn and numbered."""
    from kpbench.boxcache import render_contact_sheet
    from kpbench.samples import load_boxes, open_data

    spec = data_options.spec(source)
    work = WorkDir.resolve(workdir)
    dataset = open_data(spec)
    table = load_boxes(dataset, spec, work, progress=True)
    path = render_contact_sheet(dataset, table, out, count=count)
    console.print(f"wrote {path}")


@data_app.command("compare-boxes")
@user_errors
def data_compare_boxes(
    source: Annotated[str, typer.Argument(help="Folder of images, or 'builtin[:COUNT]'.")],
    reference: Annotated[str, typer.Option("--reference", metavar="FILE|edgeboxes", help="The box source "
                         "to agree with (e.g. the authors' boxes).")],
    candidate: Annotated[str, typer.Option("--candidate", metavar="FILE|edgeboxes", help="The box source "
                         "measured against it.")] = "edgeboxes",
    split: Annotated[str, typer.Option(help="Images compared: all, train or test.")] = "all",
    size: SizeOption = 64,
    preset: PresetOption = Preset.DEFAULT,
    crop: CropOption = None,
    patches: PatchesOption = 3,
    edge_model: EdgeModelOption = None,
    split_seed: SplitSeedOption = 0,
    seed: Annotated[int, typer.Option(help="Seed of the random boxes (the floor).")] = 0,
    workdir: WorkdirOption = None,
) -> None:
    """Agreement of two box sources on SOURCE, in the same frame: best IoU of each reference box with
    the candidate's boxes (mean, median, share >= 0.5), and the same for random boxes of the
    candidate's sizes (the floor)."""
    from kpbench.samples import compare_box_sources

    options = DataOptions(size=size, preset=preset, crop=crop, patches=patches, edge_model=edge_model,
                          split_seed=split_seed)
    if split not in ("all", "train", "test"):
        raise KpbenchError(f"unknown split {split!r}; use all, train or test")
    specs = [replace(options, boxes=box_source).spec(source) for box_source in (reference, candidate)]
    result = compare_box_sources(specs[0], specs[1], WorkDir.resolve(workdir), split, seed)  # type: ignore[arg-type]
    for line in result.lines():
        console.print(line)


@app.command("list")
@user_errors
def list_command() -> None:
    """List the variants, the evaluation protocols and the FID/KID feature extractors."""
    from rich.table import Table

    from kpbench.fid import get_extractor
    from kpbench.protocol import list_protocols
    from kpbench.variant import list_variants

    variants = Table("variant", "description", title="variants (kpbench train --variant NAME)",
                     title_justify="left")
    for spec in list_variants():
        variants.add_row(spec.name, spec.description)
    protocols = Table("protocol", "description", "options (defaults)",
                      title="protocols (kpbench eval --protocol NAME)", title_justify="left")
    for protocol in list_protocols():
        defaults = protocol.options() if protocol.options is not None else None
        options = [f"{option.name} = {getattr(defaults, option.name)!r}" for option in fields(defaults)
                   ] if defaults is not None else []
        protocols.add_row(protocol.name, protocol.description, "\n".join(options))
    extractors = Table("extractor", "description", title="FID/KID feature extractors (kpbench eval "
                       "--extractor NAME)", title_justify="left")
    for name in registered_extractors():
        extractors.add_row(name, get_extractor(name).description)
    console.print(variants)
    console.print(protocols)
    console.print(extractors)


@app.command("show")
@user_errors
def show_command(
    variant: Annotated[str, typer.Argument(help="Variant name (see `kpbench list`).")],
) -> None:
    """Print a variant's resolved spec and how it differs from the reference (full) model."""
    import json

    from kpbench.variant import get_variant, reference_variant, spec_diff

    spec = get_variant(variant)
    reference = reference_variant()
    console.print_json(json.dumps(spec.to_dict()))
    differences = spec_diff(spec, reference)
    if not differences:
        console.print(f"{spec.name}: the {reference.name} model (no differences)")
    for field_name, (reference_value, value) in differences.items():
        console.print(f"  {field_name}: {reference_value!r} ({reference.name}) -> {value!r}")


@app.command("train")
@user_errors
@with_data_options
def train_command(
    variant: Annotated[str, typer.Option("--variant", "-v", help="Variant to train (see `kpbench list`).")],
    data: Annotated[str, typer.Option("--data", "-d", help="Folder of images, or 'builtin[:COUNT]'.")] = (
        "builtin"
    ),
    seed: Annotated[int, typer.Option(help="Training seed (the run is runs/<variant>[-<settings>]-seed<k>/, "
                    "naming every setting that differs from the defaults).")] = 0,
    seeds: Annotated[str | None, typer.Option(help="Several seeds, comma separated (e.g. 0,1,2): one "
                     "run each, one after another; overrides --seed.")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Iterations (1 D + 2 G updates each); "
                     "overrides --epochs.")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs, when --steps is not given.")] = 25,
    batch_size: Annotated[int, typer.Option(min=1, help="Global batch size.")] = 64,
    width: Annotated[float, typer.Option(min=0.01, help="Channel multiplier (1 = the authors' code's "
                     "channel counts).")] = 1.0,
    data_options: DataOptions = DataOptions(),
    patch_source: Annotated[PatchSource, typer.Option(help="Train on key or random patches.")] = (
        PatchSource.KEY
    ),
    lambda_decay_epochs: Annotated[int | None, typer.Option(min=1, help="Epochs over which lambda decays "
                                   "0.64 -> 0.0064 (the paper: its 25 training epochs) (default: the "
                                   "run's length). A short run that stands for the first part of the "
                                   "paper's schedule sets 25.")] = None,
    init: Annotated[Init | None, typer.Option(help="Weight initialisation: 'pytorch' (today's PyTorch "
                    "defaults; the authors' code left initialisation to the framework), 'pytorch04' "
                    "(PyTorch 0.3/0.4's defaults, which their code ran on) or 'dcgan' (N(0, 0.02)) "
                    "(default: the variant's).")] = None,
    amp: Annotated[Amp, typer.Option(help="Mixed precision: bf16 (CUDA, or a CPU with AMX), fp16 (CUDA), "
                                     "auto (bf16 where the hardware has it, else off). A resumed run "
                                     "may switch.")] = Amp.OFF,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    workers: Annotated[int | None, typer.Option(min=0, help="Data loader processes (default: 0 on "
                       "the CPU, where they would take cores from training; 2 on CUDA).")] = None,
    sample_every: Annotated[int, typer.Option(min=1, help="Write a sample grid every K steps.")] = 500,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Checkpoint every K steps.")] = 500,
    diagnostics_every: Annotated[int | None, typer.Option(min=1, help="Held-out mask IoU, coverage "
                                 "and L1 against the empty and prior masks every K steps "
                                 "(default: 4 times per epoch).")] = None,
    status_every: Annotated[int, typer.Option(min=1, help="When the output is not a terminal (a log "
                            "file), print a status line every K steps: losses, images/s, data "
                            "share, held-out mask IoU.")] = 50,
    tensorboard: Annotated[bool, typer.Option(help="Also write TensorBoard event files to "
                           "RUN/tensorboard (needs: pip install tensorboard).")] = False,
    restart: Annotated[bool, typer.Option(help="Discard an existing run with these settings "
                       "and seed (needed when its variant's definition changed).")] = False,
    workdir: WorkdirOption = None,
) -> None:
    """Train one variant with one seed; run again to resume from the last checkpoint."""
    from kpbench import api

    settings = dict(
        width=width, batch_size=batch_size, epochs=epochs, steps=steps,
        patch_source=PatchSource(patch_source).value, init=init.value if init else None,
        lambda_decay_epochs=lambda_decay_epochs, amp=Amp(amp).value, device=device, num_workers=workers,
        sample_every=sample_every, checkpoint_every=checkpoint_every, diagnostics_every=diagnostics_every,
        status_every=status_every, tensorboard=tensorboard, restart=restart,
    )
    spec = data_options.spec(data)
    for seed_value in parse_seeds(seeds) if seeds is not None else [seed]:
        run_dir = api.train(variant, spec, seed=seed_value, workdir=workdir, **settings)
        console.print(f"run: {run_dir}")


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2] (also '0-2'); a clear error for anything else. Every seed ``train``
    accepts (kpbench.seeds) can be written here."""
    from kpbench.seeds import SEED_RANGE_TEXT, check_seed

    seeds: set[int] = set()
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            first, _, last = part.partition("-")
            low = check_seed(int(first))
            high = check_seed(int(last)) if last else low
            if high < low or high - low >= MAX_SEEDS_IN_RANGE:
                raise KpbenchError(f"seed range {part!r} must go up and hold at most "
                                   f"{MAX_SEEDS_IN_RANGE} seeds")
            seeds.update(range(low, high + 1))
    except ValueError:
        raise KpbenchError(f"seeds must be comma-separated integers from {SEED_RANGE_TEXT} or ranges "
                           f"of them (0,1,2 or 0-2), got {text!r}") from None
    if not seeds:
        raise KpbenchError(f"seeds must be comma-separated integers or ranges (0,1,2 or 0-2), got {text!r}")
    return sorted(seeds)


# A range in --seeds is spelt out; a larger one is a typo, not thousands of trainings.
MAX_SEEDS_IN_RANGE = 1000


def parse_settings(items: list[str]) -> dict[str, str]:
    """['noise.sigmas=0,0.1'] -> {'noise.sigmas': '0,0.1'} (the values are parsed by type later)."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise KpbenchError(f"--set takes PROTOCOL.OPTION=VALUE, got {item!r}")
        settings[key.strip()] = value
    return settings


@app.command("eval")
@user_errors
def eval_command(
    protocol: Annotated[list[str], typer.Option("--protocol", "-p", help="Protocol name, or 'all'. "
                        "Repeat for several; see `kpbench list`.")],
    variant: Annotated[list[str] | None, typer.Option("--variant", "-v", help="Only these "
                       "variants (repeatable; default: every trained run).")] = None,
    seed: Annotated[list[int] | None, typer.Option("--seed", help="Only these seeds (repeatable).")] = None,
    seeds: Annotated[str | None, typer.Option(help="Only these seeds, comma separated (0,1,2).")] = None,
    run: Annotated[list[str] | None, typer.Option("--run", "-r", help="Only these runs, by folder name "
                   "(repeatable; see `kpbench runs`).")] = None,
    max_samples: Annotated[int, typer.Option(min=1, help="Test images per condition.")] = 256,
    sigmas: Annotated[list[float] | None, typer.Option("--sigmas", help="Noise sigma on the [-1, 1] "
                      "scale (repeatable; default: 0, 0.05, 0.1, 0.2, 0.4 and 0.8).")] = None,
    fid_samples: Annotated[int | None, typer.Option(min=2, help="Test patch sets behind FID/KID (capped "
                           "by the test split; default 2048).")] = None,
    realism_z: Annotated[int | None, typer.Option(min=1, help="fid: images generated per test patch set, "
                         "each with its own z (N = this x patch sets; default 1).")] = None,
    fid_reference_samples: Annotated[int | None, typer.Option(min=2, help="fid: training images in the "
                                     "real reference (features cached once; default 2048).")] = None,
    bn_mode: Annotated[BnMode, typer.Option(help="Batch-norm statistics at generation: batch (each "
                       "batch's own, as the authors' code) or running (eval mode). With batch, "
                       "outputs depend on --batch-size.")] = BnMode(DEFAULT_BN_MODE),
    batch_size: Annotated[int, typer.Option(min=1, help="Generation batch size (recorded; with "
                          "--bn-mode batch it changes outputs).")] = 32,
    extractor: Annotated[str | None, typer.Option(metavar="NAME", help="FID/KID feature extractor, any "
                         "registered one (`kpbench list` names them): inception (the default) is the "
                         "standard, random-conv only for plumbing checks.")] = None,
    inception_weights: Annotated[Path | None, typer.Option(help="Path to torch-fidelity's "
                                 "weights-inception-2015-12-05-6726825d.pth (env "
                                 "KPBENCH_INCEPTION_WEIGHTS).")] = None,
    classify_samples: Annotated[int | None, typer.Option(min=4, help="Images the classification "
                                "protocol uses at most (balanced over its classes; default 2000).")] = None,
    min_per_class: Annotated[int | None, typer.Option(min=2, help="Classification uses only classes "
                             "(identities) with at least this many images, the same number from "
                             "each; lower it for datasets with few images per class (default 5).")] = None,
    folds: Annotated[int | None, typer.Option(min=2, help="Cross-validation folds for classification "
                     "(default 5).")] = None,
    settings: Annotated[list[str] | None, typer.Option("--set", metavar="PROTOCOL.OPTION=VALUE", help=
                        "Any protocol's own option (repeatable; lists comma separated, e.g. "
                        "noise.sigmas=0,0.1): the fields of each protocol's options, which `kpbench "
                        "list` shows. The flags above are shorthands for some.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    boxes: Annotated[str | None, typer.Option("--boxes", metavar="FILE|edgeboxes", help="Evaluate on "
                     "key patches from this box source instead of each run's own (a distribution "
                     "shift): rows of runs trained on another source go to results/<protocol>@<source>"
                     ".csv, their conditions marked @<source>.")] = None,
    predictions: Annotated[Path | None, typer.Option("--predictions", metavar="DIR", help="Score the "
                           "outputs a program wrote for the inputs `kpbench export` put in DIR (read "
                           "from DIR/outputs, or --outputs) as a run named --name.")] = None,
    name: Annotated[str | None, typer.Option("--name", metavar="METHOD", help="With --predictions: the "
                    "method's name in rows and reports.")] = None,
    outputs: Annotated[Path | None, typer.Option("--outputs", metavar="FOLDER", help="With --predictions: "
                       "the folder of <id>.png (and <id>.mask.png) files, if not DIR/outputs.")] = None,
    workdir: WorkdirOption = None,
) -> None:
    """Run evaluation protocols on trained runs (or on predictions made elsewhere); rows go to
    runs/<run>/results/<protocol>.csv."""
    from kpbench import api
    from kpbench.protocol import EvalOptions

    # Protocols' own options, by name (EvalOptions.with_settings finds the protocol): only those
    # given, so that the defaults live in each protocol's options class.
    flags = {"sigmas": tuple(sigmas) if sigmas else None, "fid_samples": fid_samples,
             "realism_z": realism_z, "fid_reference_samples": fid_reference_samples,
             "extractor": checked_extractor(extractor) if extractor is not None else None,
             "inception_weights": inception_weights, "classify_samples": classify_samples,
             "min_per_class": min_per_class, "folds": folds}
    given = {key: value for key, value in flags.items() if value is not None}
    options = EvalOptions(max_samples=max_samples, batch_size=batch_size, device=device,
                          bn_mode=bn_mode.value).with_settings({**given, **parse_settings(settings or [])})
    chosen_seeds = ([check_seed(value) for value in seed or []]
                    + (parse_seeds(seeds) if seeds is not None else []))
    if predictions is not None or name is not None or outputs is not None:
        run = [_import_predictions(WorkDir.resolve(workdir), predictions, name, outputs, variant, run,
                                   chosen_seeds, options)]
    outcome = api.evaluate(protocol, workdir=workdir, variants=variant, seeds=chosen_seeds or None,
                           runs=run, boxes=boxes, options=options,
                           on_progress=lambda text: console.print(f"eval {text}"))
    for run_dir, files in outcome.written.items():
        console.print(f"{run_dir.name}: {', '.join(path.stem for path in files)}")
    if outcome.written:
        console.print(f"time per protocol over {len(outcome.written)} run(s):")
        for line in outcome.timing_lines():
            console.print(f"  {line}")
    skipped = outcome.skipped_summary()
    if skipped is not None:  # the others are evaluated and written; the exit code says some were not
        raise KpbenchError(skipped)


def _import_predictions(workdir: WorkDir, predictions: Path | None, name: str | None, outputs: Path | None,
                        variant: list[str] | None, run: list[str] | None, seeds: list[int],
                        options: EvalOptions) -> str:
    """Check the outputs of ``predictions`` and make the run that scores them; its folder name.
    Says which of the given ``options`` the exported inputs replace."""
    from kpbench.predictions import import_predictions

    if predictions is None or name is None:
        raise KpbenchError("--predictions DIR and --name METHOD go together (--outputs with them)")
    if variant or run or seeds:
        raise KpbenchError("--predictions scores one method: drop --variant, --run and --seed(s)")
    run_dir, inputs, check = import_predictions(workdir, predictions, name, outputs, warn=False)
    fixed = ", ".join(f"{key} {_setting_text(value)}" for key, value in inputs.manifest["options"].items())
    console.print(f"predictions: {check.images:,} images{' and masks' if check.masks else ', no masks'} "
                  f"as {run_dir.name}; inputs as exported ({fixed})")
    replaced = inputs.replaced_settings(options)
    if replaced:
        changes = ", ".join(f"{key} {_setting_text(given)} -> {_setting_text(exported)}"
                            for key, (given, exported) in replaced.items())
        _show_warning(f"the inputs were exported with other settings, which replace those given: {changes}",
                      UserWarning)
    return run_dir.name


def _setting_text(value: Any) -> str:
    """An option value as a user would write it with ``--set`` (lists comma-separated)."""
    return ",".join(f"{item:g}" if isinstance(item, float) else str(item) for item in value) \
        if isinstance(value, (list, tuple)) else str(value)


@app.command("export")
@user_errors
@with_data_options
def export_command(
    source: Annotated[str, typer.Argument(help="Folder of images, 'builtin[:COUNT]', or a run folder "
                      "(its data and seed; the data options are then not used).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder for the inputs (see "
                   "docs/predictions.md).")],
    protocol: Annotated[list[str] | None, typer.Option("--protocol", "-p", help="Protocol name, or "
                        "'all' (the default). Repeat for several.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the run the outputs are scored as (random "
                    "patches, subsets, z).")] = 0,
    max_samples: Annotated[int, typer.Option(min=1, help="Test images per condition.")] = 256,
    sigmas: Annotated[list[float] | None, typer.Option("--sigmas", help="Noise sigma on the [-1, 1] "
                      "scale (repeatable; default: 0, 0.05, 0.1, 0.2, 0.4 and 0.8).")] = None,
    max_patches: Annotated[int | None, typer.Option(min=1, help="num_patches: N = 1..this (default "
                           "5).")] = None,
    fid_samples: Annotated[int | None, typer.Option(min=2, help="Test patch sets behind FID/KID (capped "
                           "by the test split; default 2048).")] = None,
    realism_z: Annotated[int | None, typer.Option(min=1, help="fid: images per test patch set, each "
                         "with its own z (default 1).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Request batch size (swapped and combined "
                          "inputs are formed within a batch).")] = 32,
    arrays: Annotated[bool, typer.Option("--arrays", help="Also write each patch set's exact float "
                      "values (<id>.npy, float32 (N, 3, S, S)); the PNGs are rounded to 8 bits.")] = False,
    settings: Annotated[list[str] | None, typer.Option("--set", metavar="PROTOCOL.OPTION=VALUE", help=
                        "Any protocol's own option, as `kpbench eval --set` (repeatable; lists comma "
                        "separated): those that decide the inputs are fixed in the manifest.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda (cuts the patches).")] = None,
    data_options: DataOptions = DataOptions(),
    workdir: WorkdirOption = None,
) -> None:
    """Write a dataset's evaluation inputs (patch sets with ids, z) for a program that is not
    kpbench's to answer; score its answers with `kpbench eval --predictions`."""
    import json

    from kpbench.export import export_inputs
    from kpbench.paths import RunDir
    from kpbench.protocol import EvalOptions
    from kpbench.train import TrainConfig

    files = RunDir(Path(source))
    if files.config.is_file():  # a run folder: export the data it was trained and is evaluated on
        config = TrainConfig.from_dict(json.loads(files.config.read_text())["config"])
        spec, seed = config.data, config.seed
    else:
        spec = data_options.spec(source)
    flags = {"sigmas": tuple(sigmas) if sigmas else None, "max_patches": max_patches,
             "fid_samples": fid_samples, "realism_z": realism_z}
    given = {key: value for key, value in flags.items() if value is not None}
    options = EvalOptions(max_samples=max_samples, batch_size=batch_size, device=device).with_settings(
        {**given, **parse_settings(settings or [])})
    manifest = export_inputs(spec, WorkDir.resolve(workdir), out, protocol or ["all"], options, seed, arrays)
    console.print(f"wrote {manifest['requests']:,} patch sets for {', '.join(manifest['protocols'])} "
                  f"to {out} (seed {seed}); write <id>.png (and <id>.mask.png) for each id of "
                  f"{out / 'requests.csv'} to {out / 'outputs'}, then: kpbench eval --predictions {out} "
                  "--name METHOD -p all")


@app.command("run")
@user_errors
def run_command(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="Plan file (TOML), e.g. "
                         "plans/paper-cpu.toml.")],
    data: Annotated[list[str] | None, typer.Option("--data", "-d", help="NAME=PATH: the folder of the "
                    "plan's dataset NAME (repeatable); overrides the file's source.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the cells, what is already done and "
                       "each cell's training FLOPs; run nothing.")] = False,
    time_iteration: Annotated[bool, typer.Option("--time", help="With --dry-run: also time one training "
                              "iteration of the cheapest cell on --device and turn the FLOPs into "
                              "hours for that device (at the plan's width this takes minutes on a "
                              "CPU).")] = False,
    launcher: Annotated[Launcher, typer.Option(help="local (one cell after another, here), slurm (one "
                        "submitit job per cell; torchrun inside when the plan's "
                        "launcher.processes_per_cell > 1), submitit-local or submitit-debug (the "
                        "slurm path on this machine).")] = Launcher.LOCAL,
    device: Annotated[str | None, typer.Option(help="Device for the --dry-run --time timing (auto, cpu, "
                      "cuda); training uses the plan's train.device.")] = None,
    workdir: Annotated[Path | None, typer.Option("--workdir", "-w", help="Where the plan's runs and "
                       "reports go, one folder per dataset (default: ./kpbench-<plan name>).")] = None,
) -> None:
    """Train, evaluate and report every cell of a plan; finished cells are skipped, interrupted
    ones resume, a failed cell is reported and the others go on."""
    from kpbench.plan import load_plan

    sources = {}
    for item in data or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise KpbenchError(f"--data takes NAME=PATH, got {item!r}")
        sources[name] = path
    plan = load_plan(plan_file, workdir, sources)
    if dry_run:
        _print_dry_run(plan, device, timed=time_iteration)
        return
    _run_plan_and_summarise(plan, Launcher(launcher).value)


def _run_plan_and_summarise(plan: Any, launcher: str) -> None:
    """``kpbench run`` and ``kpbench demo``: the plan runner, then its summary; a non-zero exit
    when a cell failed or a report could not be written."""
    from kpbench.runner import run_plan

    result = run_plan(plan, launcher, say=lambda text: console.print(text))
    _print_plan_summary(result)
    if result.failed or result.report_errors:
        raise KpbenchError(f"{len(result.failed)} of {len(result.outcomes)} cells failed"
                           + (f", {len(result.report_errors)} reports could not be written"
                              if result.report_errors else "") + "; see the summary above")


def _print_dry_run(plan: Any, device: str | None, timed: bool) -> None:
    """One line per cell (greppable, unwrapped), then the totals. Times come only with ``timed``:
    one real iteration at the plan's width takes minutes on a CPU."""
    from kpbench.cost import describe_cost, format_flops, format_seconds, measure_throughput
    from kpbench.runner import cell_state

    costs = describe_cost(plan)
    throughput = measured = None
    if costs and timed:
        cheapest = min(costs, key=lambda item: item[1].flops_per_step)[0]
        measured = measure_throughput(cheapest, device)
        throughput = measured.flops_per_second
    console.print(f"plan {plan.name}: {len(plan.cells)} cells (dataset, run, experiments, state, training "
                  "iterations, GFLOP per iteration" + (", estimated training time)" if timed else ")"))
    total = 0.0
    for cell, cost in costs:
        finished, missing, state = cell_state(cell, plan.protocols)
        to_train = 0.0 if finished else cost.flops
        total += to_train
        state_text = "done" if finished and not missing else (
            f"evaluate {', '.join(missing)}" if finished else state)
        steps = f"~{cost.steps}" if cost.approximate else str(cost.steps)
        console.print(f"  {cell.dataset:<10} {cell.name:<48} [{', '.join(cell.experiments)}] {state_text}; "
                      f"{steps} it x {cost.flops_per_step / 1e9:.1f} GFLOP"
                      + (f"; ~{format_seconds(to_train / throughput)}" if throughput else ""))
    for dataset in plan.datasets:
        if dataset.skipped:
            console.print(f"dataset {dataset.name}: skipped, {dataset.skipped}")
    if measured is not None and throughput:
        estimate = (f"about {format_seconds(total / throughput)} at {measured.describe()} (one timed "
                    "iteration here; evaluation and data preparation not included)")
    else:
        estimate = ("add --time to time one iteration on --device here, or divide by the FLOP/s of the "
                    "machine the plan is for")
    console.print(f"training still to do: {format_flops(total)}, {estimate}; protocols: "
                  f"{', '.join(plan.protocols)}")
    if any(cost.approximate for _, cost in costs):
        console.print("~: epochs over the image files counted in the folder; opening it (when the plan "
                      "runs) skips unreadable or too small ones")


def _print_plan_summary(result: Any) -> None:
    from rich.table import Table

    from kpbench.cost import format_seconds

    table = Table("cell", "outcome", "time", "detail", title="plan summary", title_justify="left")
    table.columns[0].overflow = "fold"
    for outcome in result.outcomes:
        style = {"failed": "red", "ran": "green"}.get(outcome.status, "")
        table.add_row(outcome.cell.key, Text(outcome.status, style=style),
                      format_seconds(outcome.seconds) if outcome.status != "skipped" else "",
                      outcome.detail)
    console.print(table)
    counts = {status: sum(o.status == status for o in result.outcomes)
              for status in ("ran", "skipped", "failed")}
    console.print(f"ran {counts['ran']}, skipped {counts['skipped']}, failed {counts['failed']}")
    if result.stages:
        console.print("wall time per stage:")
        width = max(len(stage) for stage in result.stages)  # one column of seconds
        for stage, seconds in result.stages.items():
            console.print(f"  {stage:<{width}} {seconds:7.1f} s")
        console.print(f"  {'total':<{width}} {sum(result.stages.values()):7.1f} s")
    if result.evaluation.seconds:
        console.print("evaluation per protocol:")
        for line in result.evaluation.timing_lines():
            console.print(f"  {line}")
    if result.summaries:
        from kpbench.report import print_summary

        for summary in result.summaries.values():
            print_summary(summary, console)
    for dataset, html in result.reports.items():
        console.print(f"report {dataset}: {html}")
    for dataset, error in result.report_errors.items():
        console.print(f"report {dataset}: not written ({error})")


@study_app.command("make")
@user_errors
def study_make(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for study.html, key.json and answers/.")],
    variants: Annotated[list[str] | None, typer.Option("--variants", "-v", help="Variants to compare "
                        "(repeatable; default: every trained variant, one run each).")] = None,
    questions: Annotated[int, typer.Option(min=0, help="Realism questions (pairs of models, and each "
                         "model against a real image).")] = 40,
    contains: Annotated[int, typer.Option(min=0, help="'Does this image contain these patches?' "
                        "questions.")] = 0,
    no_real: Annotated[bool, typer.Option("--no-real", help="No real-vs-generated pairs.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the questions and of each participant's order.")] = 0,
    workdir: WorkdirOption = None,
) -> None:
    """Write a self-contained, blind study page (opens offline from disk) and its answer key."""
    from kpbench.study import make_study

    path = make_study(WorkDir.resolve(workdir), out, variants, questions, seed, contains, real=not no_real)
    console.print(f"study page: {path} (send it to participants; keep {out / 'key.json'} to yourself)")


@study_app.command("analyze")
@user_errors
def study_analyze(
    files: Annotated[list[Path], typer.Argument(help="Answers files (DIR/answers/*.json).")],
    study: Annotated[Path | None, typer.Option("--study", help="The study folder (with key.json) "
                     "(default: the folder above the first answers file's).")] = None,
) -> None:
    """Check answers files against the study, and write preference, Bradley-Terry, realism and
    agreement rows (protocol user_study) into the compared runs."""
    from kpbench.results import write_rows
    from kpbench.study import analyze_study

    if not files:
        raise KpbenchError("no answers files given")
    folder = study or files[0].resolve().parent.parent
    rows, answers = analyze_study(folder, files)
    for reason, names in answers.skipped.items():
        console.print(f"skipped {len(names)} file(s): {reason} ({', '.join(names[:3])})")
    for run_dir, run_rows in rows.items():
        path = write_rows(run_dir, "user_study", run_rows)
        console.print(f"{run_dir.name}: {len(run_rows)} rows -> {path}")
    console.print(f"{len(answers.participants)} participants used")


@app.command("runs")
@user_errors
def runs_command(workdir: WorkdirOption = None) -> None:
    """List the runs of a work dir: their settings, training progress and evaluated protocols."""
    from rich.table import Table

    from kpbench.runs import list_runs

    work = WorkDir.resolve(workdir)
    infos = list_runs(work.runs)
    if not infos:
        raise KpbenchError(f"no runs under {work.runs}; train one with `kpbench train --variant full`")
    # The name says the variant, the settings that differ from the defaults and the seed, and is
    # what other commands take (--run): whole, on one line.
    table = Table(title=f"runs in {work.runs}", title_justify="left")
    table.add_column("run", no_wrap=True)
    for heading in ("steps", "status", "evaluated"):
        table.add_column(heading)
    for info in infos:
        current = [name for name, fresh in info.evaluated.items() if fresh]
        since = "import" if info.predictions else "training"
        stale = [f"{name} (before the last {since})" for name, fresh in info.evaluated.items()
                 if not fresh]
        table.add_row(info.name, f"{info.step}/{info.total_steps}",
                      info.status if info.holder is None else f"running: {info.holder}",
                      ", ".join(current + stale) or "no")
    console.print(table)


@app.command("report")
@user_errors
def report_command(
    name: Annotated[str, typer.Option("--name", help="Report folder name under reports/.")] = "latest",
    title: Annotated[str | None, typer.Option(help="Title shown at the top of the report.")] = None,
    no_images: Annotated[bool, typer.Option("--no-images", help="Leave out image grids (e.g. when "
                         "they would show photos that must not be shared).")] = False,
    workdir: WorkdirOption = None,
) -> None:
    """Turn every result row into reports/NAME/index.html, results.csv and results.md."""
    from kpbench import api
    from kpbench.report import print_summary

    result = api.report(name, workdir=workdir, title=title, include_images=not no_images)
    print_summary(result.summary, console)
    console.print(f"report: {result.html}")


@app.command("generate")
@user_errors
def generate_command(
    model: Annotated[Path, typer.Argument(metavar="RUN", help="A run folder (runs/<name>) or a folder "
                     "written by `kpbench export-model`.")],
    patch: Annotated[list[Path], typer.Option("--patch", "-p", help="A patch image (any size, colour or "
                     "grayscale; repeat for each patch).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG for the image(s); the mask(s) go to "
                   "<stem>.mask.png beside it.")] = Path("generated.png"),
    samples: Annotated[int, typer.Option(min=1, max=256, help="Images to draw, each with its own z "
                       "(a grid of up to 8 per row).")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the z draws: the same seed gives the same "
                    "files.")] = 0,
    bn_mode: Annotated[BnMode, typer.Option(help="Batch-norm statistics: running (eval mode; each "
                       "image depends on its own patches and z only) or batch (the authors' "
                       "sampling; images depend on --samples).")] = BnMode(GENERATE_BN_MODE),
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = "cpu",
) -> None:
    """Generate an image and its mask from patch images of your own with a trained model."""
    from kpbench import api

    result = api.generate(model, patch, samples=samples, seed=seed, bn_mode=BnMode(bn_mode).value,
                          device=device)
    for path in api.write_generated(result, out):
        console.print(f"wrote {path}")


@app.command("export-model")
@user_errors
def export_model_command(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="A trained run's folder (runs/<name>).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for generator.safetensors and "
                   "model.json.")],
) -> None:
    """Write a run's generator as safetensors with a JSON card (variant, training settings, data
    manifest hash, headline metrics with intervals); `kpbench generate` loads the folder."""
    from kpbench import api

    card = api.export_model(run, out)
    console.print(f"wrote {card.parent} (model.json, generator.safetensors)")


@app.command("demo")
@user_errors
def demo_command(
    tiny: Annotated[bool, typer.Option("--tiny", help="The shipped plan demo-tiny instead: a seconds-long "
                    "run of every stage (for tests and smoke checks; numbers mean nothing).")] = False,
    steps: Annotated[int | None, typer.Option(min=1, help="Training iterations per variant.")] = None,
    width: Annotated[float | None, typer.Option(min=0.01, help="Channel multiplier (1 = the authors' "
                     "code's channel counts).")] = None,
    size: Annotated[int | None, typer.Option("--size", "-s", help="Image side: 64, 128 or 256.")] = None,
    images: Annotated[int | None, typer.Option(min=16, help="Built-in images to generate.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Training batch size.")] = None,
    extractor: Annotated[str | None, typer.Option(metavar="NAME", help="FID/KID extractor, any registered "
                         "one (`kpbench list` names them; default inception; without its weights the "
                         "FID cells say how to get them).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    workdir: Annotated[Path | None, typer.Option("--workdir", "-w", help="Where the demo's runs, "
                       "cache and report go (default: ./kpbench-demo, with --tiny ./kpbench-demo-tiny), "
                       "in the folder builtin/.")] = None,
) -> None:
    """Prepare, train all five variants small, run every protocol and write the report: the
    shipped plan demo (plans/demo.toml), run as `kpbench run` runs it; the options replace its
    settings."""
    from kpbench.plan import load_plan, shipped_plan

    overrides = demo_overrides(steps=steps, width=width, size=size, images=images, batch_size=batch_size,
                               extractor=checked_extractor(extractor) if extractor is not None else None,
                               device=device)
    plan = load_plan(shipped_plan("demo-tiny" if tiny else "demo"), workdir, overrides=overrides)
    _run_plan_and_summarise(plan, Launcher.LOCAL.value)


def demo_overrides(steps: int | None = None, width: float | None = None, size: int | None = None,
                   images: int | None = None, batch_size: int | None = None, extractor: str | None = None,
                   device: str | None = None) -> dict[str, Any]:
    """The demo plan's settings that ``kpbench demo``'s options replace (None: the plan's own)."""
    train: dict[str, Any] = {"width": width, "batch_size": batch_size, "device": device}
    if steps is not None:  # samples and checkpoints at half way, four status lines, as the plan
        train |= {"steps": steps, "sample_every": max(1, steps // 2), "checkpoint_every": max(1, steps // 2),
                  "status_every": max(1, steps // 4)}
    evaluation = {"extractor": extractor, "device": device, "classify_samples": images}
    dataset = {"size": size, "source": f"builtin:{images}" if images is not None else None}

    def given(table: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in table.items() if value is not None}

    return {"train": given(train), "eval": given(evaluation), "datasets": {"builtin": given(dataset)}}


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
