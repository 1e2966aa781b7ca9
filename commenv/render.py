"""Small numpy drawing helpers shared by the games' ``render_mode="rgb_array"``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

PAD = 4


def to_rgb(
    flat: torch.Tensor | np.ndarray, image_shape: tuple[int, int, int], scale: int
) -> np.ndarray:
    """A flat image in [0, 1] ``(C*H*W,)`` as an upscaled ``(H*s, W*s, 3)`` uint8 array."""
    c, h, w = image_shape
    img = np.asarray(flat, dtype=np.float32).reshape(c, h, w).transpose(1, 2, 0)
    if c == 1:
        img = np.repeat(img, 3, axis=2)
    img = np.kron(img, np.ones((scale, scale, 1), dtype=np.float32))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def image_row(
    images: Sequence[torch.Tensor | np.ndarray], image_shape: tuple[int, int, int]
) -> np.ndarray:
    """Images side by side on a dark background, each upscaled to about 64 pixels."""
    scale = max(1, 64 // image_shape[1])
    tiles = [to_rgb(im, image_shape, scale) for im in images]
    h = tiles[0].shape[0] + 2 * PAD
    row = [np.full((h, PAD, 3), 40, np.uint8)]
    for tile in tiles:
        row.append(np.pad(tile, ((PAD, PAD), (0, 0), (0, 0)), constant_values=40))
        row.append(np.full((h, PAD, 3), 40, np.uint8))
    return np.concatenate(row, 1)


def bits_image(bits: torch.Tensor | np.ndarray, width: int, cell: int = 8) -> np.ndarray:
    """Rows of bits ``(rows, L)`` as white (1) / black (0) cells, padded to ``width``."""
    bits = np.asarray(bits, dtype=np.float32)
    rows, n = bits.shape
    cell = max(2, min(cell, (width - 2 * PAD) // max(n, 1)))
    grid = np.kron(bits, np.ones((cell, cell), np.float32))
    grid = (np.clip(grid, 0, 1) * 215 + 20).astype(np.uint8)
    grid = np.repeat(grid[..., None], 3, axis=2)
    grid = np.pad(grid, ((PAD, PAD), (PAD, 0), (0, 0)), constant_values=40)
    out = np.full((grid.shape[0], width, 3), 40, np.uint8)
    out[:, : min(width, grid.shape[1])] = grid[:, :width]
    return out
