"""Tile plans and the smooth blending window."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Floor of the blending window relative to its peak: keeps pixels at the raster border, covered
# by a single tile's low-weight rim, well defined.
WINDOW_FLOOR = 1e-3


@dataclass(frozen=True)
class Tile:
    index: int
    row: int
    col: int


def axis_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets along one axis: regular steps, the last one flush with the end.

    A raster shorter than a tile gets one tile at 0 (padded by reflection when read).
    """
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def plan_tiles(height: int, width: int, tile: int, stride: int) -> list[Tile]:
    """Row-major tiles covering the raster; rows above a tile's top are never touched again."""
    rows = axis_starts(height, tile, stride)
    cols = axis_starts(width, tile, stride)
    return [Tile(i, r, c) for i, (r, c) in enumerate((r, c) for r in rows for c in cols)]


def blend_window(size: int) -> np.ndarray:
    """2-D Hann window (outer product), floored: weights fall smoothly to the tile rim, so
    overlapping tiles hand over gradually and no seam follows the tile grid."""
    ramp = np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2
    ramp = np.maximum(ramp, WINDOW_FLOOR)
    return np.outer(ramp, ramp).astype(np.float32)
