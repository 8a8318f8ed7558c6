"""The ``kpbench`` command line: thin Typer commands over the library.

Every command turns a :class:`KpbenchError` into one line on stderr and exit code 2, and Ctrl-C
into exit code 130; nothing here holds logic of its own.
"""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from kpbench.errors import KpbenchError
from kpbench.paths import WORKDIR_ENV, WorkDir

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

console = Console()
error_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def user_errors(command: F) -> F:
    """Run ``command``; report user errors as one line and a non-zero exit, no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                # Library warnings (skipped files, relaxed filters) reach the user as one line each.
                warnings.showwarning = _show_warning
                return command(*args, **kwargs)
        except KpbenchError as error:
            error_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=error.exit_code) from None
        except KeyboardInterrupt:
            error_console.print("interrupted", highlight=False)
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def _show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    error_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


# Options shared by several commands (typed once, reused).
WorkdirOption = Annotated[
    Path | None,
    typer.Option("--workdir", "-w", help=f"Where runs/, cache/ and reports/ live [env {WORKDIR_ENV}; "
                 "default: current directory]."),
]
SizeOption = Annotated[int, typer.Option("--size", "-s", help="Image side S in pixels: 64, 128 or 256.")]
PresetOption = Annotated[
    str, typer.Option("--preset", help="Crop preset: 'default' (short side, centre crop) or 'celeba' "
                      "(centre 108 px of the aligned 178x218 images).")
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


def _data_spec(source: str, size: int, preset: str, crop: int | None, patches: int,
               edge_model: Path | None, split_seed: int) -> Any:
    from kpbench.samples import DataSpec

    if edge_model is not None and not edge_model.is_file():
        raise KpbenchError(f"edge model {edge_model} not found")
    return DataSpec(source=source, size=size, preset=preset, crop=crop, n_patches=patches,
                    edge_model=str(edge_model) if edge_model else None, split_seed=split_seed)


@data_app.command("prepare")
@user_errors
def data_prepare(
    source: Annotated[str, typer.Argument(help="Folder of images, or 'builtin[:COUNT]'.")],
    size: SizeOption = 64,
    preset: PresetOption = "default",
    crop: CropOption = None,
    patches: PatchesOption = 3,
    edge_model: EdgeModelOption = None,
    split_seed: SplitSeedOption = 0,
    workers: Annotated[int | None, typer.Option(help="Detection processes (default: all cores).")] = None,
    workdir: WorkdirOption = None,
) -> None:
    """Index SOURCE, split it, and detect key patches for every image (cached, resumable)."""
    from kpbench.boxcache import summarize

    from kpbench.data import describe
    from kpbench.samples import load_boxes, open_data

    spec = _data_spec(source, size, preset, crop, patches, edge_model, split_seed)
    work = WorkDir.resolve(workdir)
    dataset = open_data(spec)
    manifest_path = dataset.write_manifest(work.cache / "manifests")
    console.print(f"dataset: {describe(dataset)}", highlight=False)
    table = load_boxes(dataset, spec, work, workers=workers, progress=True)
    console.print(summarize(table), highlight=False)
    console.print(f"manifest: {manifest_path}", highlight=False)


@data_app.command("show")
@user_errors
def data_show(
    source: Annotated[str, typer.Argument(help="Folder of images, or 'builtin[:COUNT]'.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG contact sheet to write.")] = Path(
        "patches.png"
    ),
    count: Annotated[int, typer.Option(min=1, max=400, help="Images on the sheet.")] = 24,
    size: SizeOption = 64,
    preset: PresetOption = "default",
    crop: CropOption = None,
    patches: PatchesOption = 3,
    edge_model: EdgeModelOption = None,
    split_seed: SplitSeedOption = 0,
    workdir: WorkdirOption = None,
) -> None:
    """Write a contact sheet of images with their key-patch boxes drawn and numbered."""
    from kpbench.boxcache import render_contact_sheet

    from kpbench.samples import load_boxes, open_data

    spec = _data_spec(source, size, preset, crop, patches, edge_model, split_seed)
    work = WorkDir.resolve(workdir)
    dataset = open_data(spec)
    table = load_boxes(dataset, spec, work, progress=True)
    path = render_contact_sheet(dataset, table, out, count=count)
    console.print(f"wrote {path}", highlight=False)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
