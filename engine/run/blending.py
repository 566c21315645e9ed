"""Blended class scores for the strip of rows that tiles still cover."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

T = TypeVar("T")


class StripAccumulator:
    """Weighted per-class score sums for rows [top, top + capacity) of a raster of given width.

    Tiles arrive in row-major order. Before a tile at row r is added, everything above r is
    final and handed out by `release_with(r, ...)`, so the strip never needs more rows than
    one tile is tall: memory depends on tile size, class count and width, never on raster
    height.
    """

    def __init__(self, num_classes: int, capacity: int, width: int, top: int = 0) -> None:
        self.num_classes = num_classes
        self.capacity = capacity
        self.width = width
        self.top = top  # a shard of the tile plan starts below the raster's first row
        self._scores = np.zeros((num_classes, capacity, width), np.float32)
        self._weights = np.zeros((capacity, width), np.float32)
        # Whether the source pixel is valid (not nodata), as the tiles read it: the writer
        # needs no second read of the raster's masks.
        self._valid = np.zeros((capacity, width), bool)

    def add(
        self, scores: np.ndarray, weight: np.ndarray, row: int, col: int, valid: np.ndarray
    ) -> None:
        """Adds tile scores [K, h, w] (already cropped to the raster) at raster (row, col),
        with the tile's source validity [h, w]."""
        _, height, width = scores.shape
        start = row - self.top
        if start < 0 or start + height > self.capacity:
            raise ValueError(
                f"tile rows {row}..{row + height} outside the strip "
                f"{self.top}..{self.top + self.capacity}"
            )
        rows = slice(start, start + height)
        cols = slice(col, col + width)
        self._scores[:, rows, cols] += scores * weight
        self._weights[rows, cols] += weight
        self._valid[rows, cols] |= valid

    def release_with(
        self,
        until_row: int,
        consume: Callable[[int, np.ndarray, np.ndarray, np.ndarray], T],
    ) -> T | None:
        """Hands finished rows [top, until_row) to `consume(top, score sums, weight sums,
        source validity)` and shifts the strip down; returns what `consume` returned (None when
        no row is finished). The arrays are views of the strip, valid only during the call:
        deciding straight from them spares a copy of the rows' scores (117 MB per release on a
        20,000 px wide raster with 512/384 px tiles and 4 classes)."""
        count = min(until_row, self.top + self.capacity) - self.top
        if count <= 0:
            return None
        result = consume(
            self.top, self._scores[:, :count], self._weights[:count], self._valid[:count]
        )
        keep = self.capacity - count
        for array in (self._scores[:], self._weights, self._valid):
            array[..., :keep, :] = array[..., count:, :]
            array[..., keep:, :] = 0
        self.top += count
        return result


def decide_classes(
    scores: np.ndarray, weights: np.ndarray, with_confidence: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Argmax class (uint8, or uint16 above 256 classes; the first class wins ties),
    confidence (top score share of the score total, 0..1; None unless asked for) and coverage
    mask."""
    num_classes = scores.shape[0]
    classes = np.zeros(scores.shape[1:], np.uint8 if num_classes <= 256 else np.uint16)
    # A running maximum over the class planes: cheaper than np.argmax along the first axis
    # and it leaves the top score behind for the confidence.
    top = scores[0].copy()
    better = np.empty(scores.shape[1:], bool)
    for k in range(1, num_classes):
        np.greater(scores[k], top, out=better)
        np.copyto(classes, k, where=better)
        np.maximum(top, scores[k], out=top)
    confidence = None
    if with_confidence:
        total = scores.sum(axis=0)
        confidence = np.divide(top, total, out=np.zeros_like(top), where=total > 0)
    return classes, confidence, weights > 0
