"""Image grids: rows of samples, columns of named image kinds, written as one PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kpbench.io import atomic_write


def to_rgb_uint8(batch: torch.Tensor) -> np.ndarray:
    """(B, C, S, S) in [-1, 1] (C = 3) or [0, 1] masks (C = 1) -> uint8 (B, S, S, 3)."""
    batch = batch.detach().float().cpu()
    if batch.shape[1] == 1:  # masks are probabilities in [0, 1]
        batch = batch.clamp(0, 1).mul(2).sub(1).expand(-1, 3, -1, -1)
    scaled = (batch.clamp(-1, 1) + 1.0) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def draw_boxes(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Outline each (B, N, 4) box on (B, 3, S, S) images in a distinct colour, numbered by order."""
    import cv2

    palette = [(255, 64, 64), (64, 220, 64), (64, 128, 255), (255, 200, 0), (220, 64, 255)]
    out = to_rgb_uint8(images).copy()
    for image, image_boxes in zip(out, boxes.cpu().numpy()):
        for number, (x0, y0, x1, y1) in enumerate(image_boxes):
            colour = palette[number % len(palette)]
            cv2.rectangle(image, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), colour, 1)
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def save_grid(path: Path, columns: list[torch.Tensor], pad: int = 2) -> Path:
    """Write a grid whose column k shows ``columns[k]`` ((B, C, S, S) each; patches may be
    (B, N, 3, S, S) and then fill N sub-columns)."""
    tiles: list[np.ndarray] = []  # each (B, S, W_k, 3)
    for column in columns:
        if column.dim() == 5:
            column_tiles = [to_rgb_uint8(column[:, k]) for k in range(column.shape[1])]
        else:
            column_tiles = [to_rgb_uint8(column)]
        tiles.extend(column_tiles)
    rows = tiles[0].shape[0]
    side = tiles[0].shape[1]
    width = len(tiles) * (side + pad) + pad
    height = rows * (side + pad) + pad
    canvas = np.full((height, width, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        for r in range(rows):
            top, left = pad + r * (side + pad), pad + k * (side + pad)
            canvas[top:top + side, left:left + side] = tile[r]
    return atomic_write(path, lambda handle: Image.fromarray(canvas).save(handle, format="PNG"))


def tile_images(batch: torch.Tensor, columns: int = 8, pad: int = 2) -> np.ndarray:
    """(K, C, S, S) images or masks -> one uint8 (H, W, 3) picture: rows of up to ``columns``
    tiles, ``pad`` white pixels between tiles and none around them (one image stays S x S)."""
    tiles = to_rgb_uint8(batch)  # (K, S, S, 3)
    count, side = tiles.shape[0], tiles.shape[1]
    per_row = min(columns, count)
    rows = -(-count // per_row)
    canvas = np.full((rows * (side + pad) - pad, per_row * (side + pad) - pad, 3), 255, np.uint8)
    for k, tile in enumerate(tiles):
        top, left = (k // per_row) * (side + pad), (k % per_row) * (side + pad)
        canvas[top:top + side, left:left + side] = tile
    return canvas
