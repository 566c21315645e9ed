"""Tile plans and the smooth blending window."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

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


class TilePlan(Sequence[Tile]):
    """Row-major tiles over a grid of tile-row starts and column starts, made on demand.

    A plan holds its two lists of starts, not one object per tile, so its memory grows with
    the raster's side, not its area: a 400,000 px square mosaic at 512/384 px has a million
    tiles, which as objects would take ~150 MB before a pixel is read. A part of a plan (the
    tile rows a shard needs) keeps the tiles' indices in the whole plan.
    """

    __slots__ = ("_cols", "_first_index", "_rows")

    def __init__(self, rows: Sequence[int], cols: Sequence[int], first_index: int = 0) -> None:
        self._rows = tuple(rows)
        self._cols = tuple(cols)
        self._first_index = first_index

    @property
    def row_starts(self) -> tuple[int, ...]:
        """The distinct tile-row starts, top to bottom."""
        return self._rows

    @property
    def col_starts(self) -> tuple[int, ...]:
        """The tile-column starts, left to right."""
        return self._cols

    def __len__(self) -> int:
        return len(self._rows) * len(self._cols)

    @overload
    def __getitem__(self, key: int) -> Tile: ...

    @overload
    def __getitem__(self, key: slice) -> list[Tile]: ...

    def __getitem__(self, key: int | slice) -> Tile | list[Tile]:
        if isinstance(key, slice):
            return [self[i] for i in range(*key.indices(len(self)))]
        count = len(self)
        if key < 0:
            key += count
        if not 0 <= key < count:
            raise IndexError(f"tile {key} outside a plan of {count}")
        row, col = divmod(key, len(self._cols))
        return Tile(self._first_index + key, self._rows[row], self._cols[col])

    def __iter__(self) -> Iterator[Tile]:
        index = self._first_index
        for row in self._rows:
            for col in self._cols:
                yield Tile(index, row, col)
                index += 1

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TilePlan):
            return NotImplemented
        return (self._rows, self._cols, self._first_index) == (
            other._rows,
            other._cols,
            other._first_index,
        )

    def __hash__(self) -> int:
        return hash((self._rows, self._cols, self._first_index))

    def __repr__(self) -> str:
        return (
            f"TilePlan({len(self._rows)} rows x {len(self._cols)} cols,"
            f" first index {self._first_index})"
        )

    def __reduce__(self) -> tuple[type[TilePlan], tuple[tuple[int, ...], tuple[int, ...], int]]:
        return TilePlan, (self._rows, self._cols, self._first_index)

    def touching_rows(self, first: int, end: int, size: int) -> TilePlan:
        """The tile rows that touch raster rows [first, end): a shard's own tile rows and the
        halo rows above it whose tiles reach down into it."""
        keep = [k for k, row in enumerate(self._rows) if row < end and row + size > first]
        if not keep:
            return TilePlan((), self._cols, self._first_index)
        return TilePlan(
            self._rows[keep[0] : keep[-1] + 1],
            self._cols,
            self._first_index + keep[0] * len(self._cols),
        )


def plan_tiles(height: int, width: int, tile: int, stride: int) -> TilePlan:
    """Row-major tiles covering the raster; rows above a tile's top are never touched again."""
    return TilePlan(axis_starts(height, tile, stride), axis_starts(width, tile, stride))


def blend_window(size: int) -> np.ndarray:
    """2-D Hann window (outer product), floored: weights fall smoothly to the tile rim, so
    overlapping tiles hand over gradually and no seam follows the tile grid."""
    ramp = np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2
    ramp = np.maximum(ramp, WINDOW_FLOOR)
    return np.outer(ramp, ramp).astype(np.float32)
