"""Tiles in, decided output rows out: the heart of a segmentation run, for any band of rows.

A single-process run streams all rows of the raster; a shard of a distributed run streams its
own rows, reading the halo tiles above them so that every pixel blends exactly the tiles a
single process would, added in the same order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .blending import StripAccumulator, decide_classes
from .errors import SegmentationCancelled
from .prefetch import Prefetcher
from .raster_input import TileReader
from .raster_output import CONFIDENCE_NODATA, class_encoding
from .tiling import Tile, blend_window


@dataclass
class DecidedRows:
    """Output rows [top, top + len(classes)): classes (nodata where invalid), optional
    confidence (nodata where invalid) and the number of nodata pixels among them."""

    top: int
    classes: np.ndarray
    confidence: np.ndarray | None
    nodata_pixels: int


@dataclass
class _Batch:
    tiles: list[Tile]
    inputs: list[np.ndarray | None]  # None: all-nodata tile, skipped
    valid: list[np.ndarray]


class _Pending(Protocol):
    def result(self) -> np.ndarray: ...


class _Done:
    """Scores computed at submission (a runner without `submit`)."""

    def __init__(self, scores: np.ndarray) -> None:
        self._scores = scores

    def result(self) -> np.ndarray:
        return self._scores


def _scored(
    batches: Iterable[_Batch],
    runner: Callable[[np.ndarray], np.ndarray],
    is_cancelled: Callable[[], bool],
) -> Iterator[tuple[_Batch, np.ndarray | None]]:
    """(batch, scores of its runnable tiles) in order. A runner with `submit` and `in_flight`
    > 1 (BatchRunner on CUDA) gets the next batches before the previous scores are taken, so
    the device works while the host blends."""
    submit = getattr(runner, "submit", None)
    depth = max(1, int(getattr(runner, "in_flight", 1))) if submit is not None else 1
    pending: deque[tuple[_Batch, _Pending | None]] = deque()
    for batch in batches:
        if is_cancelled():
            raise SegmentationCancelled()
        runnable = [x for x in batch.inputs if x is not None]
        handle: _Pending | None = None
        if runnable:
            inputs = np.stack(runnable)
            handle = submit(inputs) if submit is not None else _Done(runner(inputs))
        pending.append((batch, handle))
        if len(pending) >= depth:
            done, ready = pending.popleft()
            yield done, ready.result() if ready is not None else None
    while pending:
        done, ready = pending.popleft()
        yield done, ready.result() if ready is not None else None


def _batches(
    reader: TileReader, tiles: Sequence[Tile], size: int, batch_size: int
) -> Iterator[_Batch]:
    batch = _Batch([], [], [])
    runnable = 0
    for tile in tiles:
        values, valid = reader.read_tile(tile.row, tile.col, size)
        batch.tiles.append(tile)
        batch.inputs.append(values if valid.any() else None)
        batch.valid.append(valid)
        runnable += bool(valid.any())
        if runnable == batch_size:
            yield batch
            batch, runnable = _Batch([], [], []), 0
    if batch.tiles:
        yield batch


class RowDecider:
    """Blended scores -> class rows (and confidence), with nodata where the source is."""

    def __init__(self, num_classes: int, confidence_dtype: str | None) -> None:
        self.num_classes = num_classes
        dtype, self.nodata = class_encoding(num_classes)
        self.dtype = np.dtype(dtype)
        self.confidence_dtype = confidence_dtype

    def __call__(self, released: tuple[int, np.ndarray, np.ndarray, np.ndarray]) -> DecidedRows:
        top, scores, weights, source_valid = released
        classes, confidence, covered = decide_classes(
            scores, weights, with_confidence=self.confidence_dtype is not None
        )
        invalid = ~(covered & source_valid)
        classes = classes.astype(self.dtype, copy=False)
        classes[invalid] = self.nodata
        if confidence is not None:
            assert self.confidence_dtype is not None
            if self.confidence_dtype == "uint8":
                confidence = np.rint(confidence * 100).astype(np.uint8)
            confidence[invalid] = CONFIDENCE_NODATA[self.confidence_dtype]
        return DecidedRows(top, classes, confidence, int(invalid.sum()))


def _clip(rows: DecidedRows, first: int, end: int) -> DecidedRows | None:
    """The part of `rows` inside [first, end), or None."""
    start = max(first, rows.top)
    stop = min(end, rows.top + rows.classes.shape[0])
    if stop <= start:
        return None
    if (start, stop) == (rows.top, rows.top + rows.classes.shape[0]):
        return rows
    part = slice(start - rows.top, stop - rows.top)
    classes = rows.classes[part]
    confidence = None if rows.confidence is None else rows.confidence[part]
    return DecidedRows(start, classes, confidence, -1)


def stream_rows(
    reader: TileReader,
    runner: Callable[[np.ndarray], np.ndarray],
    tiles: Sequence[Tile],
    *,
    size: int,
    height: int,
    width: int,
    num_classes: int,
    batch_size: int,
    rows: tuple[int, int],
    confidence_dtype: str | None,
    is_cancelled: Callable[[], bool] = lambda: False,
    on_tiles: Callable[[int, int], None] | None = None,
) -> Iterator[DecidedRows]:
    """Runs `tiles` (row-major, starting with every tile that touches `rows`) through the
    model and yields the decided rows within `rows` = (first, end), top to bottom.

    `on_tiles(done, skipped)` is called after each batch with running counts.
    """
    first, end = rows
    decide = RowDecider(num_classes, confidence_dtype)
    window = blend_window(size)
    strip = StripAccumulator(num_classes, size, width, top=tiles[0].row if tiles else first)
    prefetch: Prefetcher[Any] = Prefetcher(_batches(reader, tiles, size, batch_size))
    done = skipped = 0
    nodata_dtype_marker = decide.nodata

    def released(until: int) -> Iterator[DecidedRows]:
        chunk = strip.release(until)
        if chunk is None:
            return
        clipped = _clip(decide(chunk), first, end)
        if clipped is not None:
            if clipped.nodata_pixels < 0:  # recount within the clipped rows
                clipped.nodata_pixels = int((clipped.classes == nodata_dtype_marker).sum())
            yield clipped

    try:
        for batch, scores in _scored(prefetch, runner, is_cancelled):
            position = 0
            for tile, inputs, valid in zip(batch.tiles, batch.inputs, batch.valid, strict=True):
                yield from released(tile.row)
                if inputs is None:
                    skipped += 1
                    continue
                assert scores is not None
                tile_h = min(size, height - tile.row)
                tile_w = min(size, width - tile.col)
                strip.add(
                    scores[position, :, :tile_h, :tile_w],
                    window[:tile_h, :tile_w],
                    tile.row,
                    tile.col,
                    valid[:tile_h, :tile_w],
                )
                position += 1
            done += len(batch.tiles)
            if on_tiles is not None:
                on_tiles(done, skipped)
        yield from released(end)
        if is_cancelled():
            raise SegmentationCancelled()
    finally:
        prefetch.close()
