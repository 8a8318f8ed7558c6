"""Trying a trained model on patches of one's own: patch images in, an image and its mask out.

    model = load_model("runs/full-seed0")             # or an exported folder (kpbench.modelcard)
    patches = read_patches(["a.png", "b.png"], model)  # (N, 3, S, S) in [-1, 1]
    result = generate_from_patches(model, patches, samples=4, seed=0)
    write_generated(result, Path("out.png"))          # out.png and, with a mask, out.mask.png

How a patch file becomes a patch (:func:`prepare_patch`), the way training makes one: the file is
decoded as dataset images are (:func:`kpbench.data.read_rgb`: grayscale, palette, alpha, 16-bit
and EXIF orientation handled), placed in the S x S frame as a key box of its size and cut out of
it with the training code (:func:`kpbench.samples.expand_batch`: bilinear resize of the box to
S x S, values scaled to [-1, 1]). A patch keeps its pixel size when it could be a key box of that
frame (area within the preset's box areas, each side at most S), so a patch cut from a
preprocessed image gives the very patch training cut; a larger or smaller one is first resized,
aspect kept, to the nearest such area, with the resampling that brings whole images to the frame.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kpbench.choices import GENERATE_BN_MODE
from kpbench.data import read_rgb, resize_image
from kpbench.errors import KpbenchError
from kpbench.grids import tile_images
from kpbench.io import atomic_write
from kpbench.patches import PatchParams
from kpbench.runs import TrainedRun
from kpbench.samples import expand_batch, patch_params
from kpbench.seeds import check_seed

MASK_SUFFIX = ".mask"  # out.png -> out.mask.png


def read_patch_image(path: Path | str) -> Image.Image:
    """A patch file decoded to RGB, or a one-line error saying why it cannot be."""
    path = Path(path)
    if not path.exists():
        raise KpbenchError(f"patch file {path} not found")
    if not path.is_file():
        raise KpbenchError(f"patch file {path} is not a file")
    if path.stat().st_size == 0:
        raise KpbenchError(f"patch file {path} is empty")
    try:
        return read_rgb(path)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise KpbenchError(f"patch file {path} is not a readable image ({error})") from None


def patch_box_size(width: int, height: int, size: int, params: PatchParams) -> tuple[int, int]:
    """The (width, height) in pixels of the S x S frame that a ``width`` x ``height`` patch takes
    as a key box: its own when its area lies in ``params``' [min_area, max_area] of the frame and
    both sides fit, else scaled (aspect kept) to the nearest bound of that range."""
    area = float(width * height)
    low, high = params.min_area * size * size, params.max_area * size * size
    if low <= area <= high and max(width, height) <= size:
        return width, height
    scale = math.sqrt(min(max(area, low), high) / area)
    scale = min(scale, size / max(width, height))  # a long thin patch still fits the frame
    return (min(size, max(1, round(width * scale))), min(size, max(1, round(height * scale))))


def prepare_patch(image: Image.Image, size: int, params: PatchParams) -> torch.Tensor:
    """An RGB image -> the (3, S, S) patch in [-1, 1] that training would cut from a frame holding
    it as a key box (see the module docstring)."""
    box_width, box_height = patch_box_size(image.width, image.height, size, params)
    if (box_width, box_height) != image.size:
        image = resize_image(image, box_width, box_height)
    frame = np.zeros((1, size, size, 3), dtype=np.uint8)  # (B=1, S, S, 3), the patch at its top left
    frame[0, :box_height, :box_width] = np.asarray(image, dtype=np.uint8)
    raw = {"pixels": torch.from_numpy(frame),
           "boxes": torch.tensor([[[0, 0, box_width, box_height]]], dtype=torch.int64),  # (1, 1, 4)
           "label": torch.zeros(1, dtype=torch.int64), "index": torch.zeros(1, dtype=torch.int64)}
    patches: torch.Tensor = expand_batch(raw, torch.device("cpu"))["patches"]  # (1, 1, 3, S, S)
    return patches[0, 0]


def read_patches(sources: Sequence[Path | str | Image.Image], model: TrainedRun) -> torch.Tensor:
    """Patch files (or PIL images) -> (N, 3, S, S) patches prepared for ``model`` (its size and
    preset)."""
    if not sources:
        raise KpbenchError("give at least one patch image (--patch FILE)")
    params = patch_params(model.config.data)
    images = [source.convert("RGB") if isinstance(source, Image.Image) else read_patch_image(source)
              for source in sources]
    return torch.stack([prepare_patch(image, model.config.size, params) for image in images])


@dataclass(frozen=True)
class Generated:
    """Images (K, 3, S, S) in [-1, 1], masks (K, 1, S, S) in [0, 1] or None (a variant without a
    mask decoder), the patches (N, 3, S, S) they came from and the seed of their z."""

    images: torch.Tensor
    masks: torch.Tensor | None
    patches: torch.Tensor
    seed: int


def generate_from_patches(model: TrainedRun, patches: torch.Tensor, samples: int = 1, seed: int = 0,
                          bn_mode: str = GENERATE_BN_MODE) -> Generated:
    """``samples`` images from one set of (N, 3, S, S) patches, each with its own z drawn from a
    CPU generator seeded with ``seed`` (the same seed gives the same images)."""
    if samples < 1:
        raise KpbenchError(f"samples must be at least 1, got {samples}")
    check_seed(seed)
    model = model.with_bn_mode(bn_mode)
    batch = patches.unsqueeze(0).expand(samples, *patches.shape).contiguous()  # (K, N, 3, S, S)
    rng = torch.Generator().manual_seed(seed)
    images, masks = model.generate(batch, rng=rng)
    return Generated(images, masks, patches, seed)


def output_paths(out: Path, with_mask: bool) -> list[Path]:
    """Where :func:`write_generated` puts the images and, with a mask, the masks."""
    if out.suffix.lower() != ".png":
        raise KpbenchError(f"the output must be a .png file, got {out}")
    return [out, out.with_name(f"{out.stem}{MASK_SUFFIX}{out.suffix}")][: 2 if with_mask else 1]


def write_generated(result: Generated, out: Path, columns: int = 8) -> list[Path]:
    """Write the images to ``out`` (a PNG: one image at S x S, or K in a grid of up to ``columns``
    per row) and the masks, in the same layout, to ``<stem>.mask.png`` beside it."""
    paths = output_paths(Path(out), result.masks is not None)
    batches = [result.images] + ([result.masks] if result.masks is not None else [])
    for path, batch in zip(paths, batches):
        picture = Image.fromarray(tile_images(batch, columns=columns))
        atomic_write(path, functools.partial(picture.save, format="PNG"))
    return paths
