"""Tiles in, decided output rows out: the heart of a segmentation run, for any band of rows.

A single-process run streams all rows of the raster; a shard of a distributed run streams its
own rows, reading the halo tiles above them so that every pixel blends exactly the tiles a
single process would, added in the same order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from engine.errors import SegmentationCancelled
from engine.raster.raster_input import TileReader
from engine.raster.raster_output import CONFIDENCE_NODATA, class_encoding
from engine.run.blending import StripAccumulator, decide_classes
from engine.run.prefetch import Prefetcher
from engine.run.tiling import Tile, blend_window


@dataclass
class DecidedRows:
    """Output rows [top, top + len(classes)): classes (nodata where invalid), optional
    confidence (nodata where invalid) and the number of nodata pixels among them."""

    top: int
    classes: np.ndarray
    confidence: np.ndarray | None
    nodata_pixels: int


class ClassTally:
    """Pixels per class and nodata pixels of the decided rows a writer has taken so far."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.counts = np.zeros(num_classes, np.int64)
        self.nodata_pixels = 0

    def tally(self, rows: DecidedRows) -> None:
        # Nodata is a value no class has, so one histogram of all pixels counts both.
        """Adds the rows' pixels to the counts."""
        found = np.bincount(rows.classes.ravel(), minlength=self.num_classes)
        self.counts += found[: self.num_classes]
        self.nodata_pixels += rows.nodata_pixels


Released = TypeVar("Released")

# Most tiles in one batch, runnable or all nodata (see _batches).
MAX_BATCH_TILES = 64


@dataclass
class _Batch:
    tiles: list[Tile]
    valid: list[np.ndarray | None]  # per tile; None: all nodata, skipped
    inputs: np.ndarray | None  # the runnable tiles, stacked [n, C, size, size]; None if none


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
        handle: _Pending | None = None
        if batch.inputs is not None:
            handle = submit(batch.inputs) if submit is not None else _Done(runner(batch.inputs))
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
    """Batches of `batch_size` runnable tiles, in plan order, with the all-nodata tiles between
    them. A batch also closes at MAX_BATCH_TILES tiles in all, so a large nodata area (a
    mosaic's empty collar, a scene's rotated corners) passes as a series of small batches:
    memory stays bounded, and progress and cancel keep moving through it."""
    most = max(batch_size, MAX_BATCH_TILES)
    batch_tiles: list[Tile] = []
    batch_valid: list[np.ndarray | None] = []
    batch_values: list[np.ndarray] = []

    def closed() -> _Batch:
        return _Batch(batch_tiles, batch_valid, np.stack(batch_values) if batch_values else None)

    for tile in tiles:
        values, valid = reader.read_tile(tile.row, tile.col, size)
        runs = bool(valid.any())
        batch_tiles.append(tile)
        # A tile's arrays are views of the reader's whole block (16 MB at 512 px tiles); the
        # batch keeps copies, so batches waiting in the queue pin no blocks.
        batch_valid.append(valid.copy() if runs else None)
        if runs:
            batch_values.append(values)
        if len(batch_values) == batch_size or len(batch_tiles) >= most:
            yield closed()
            batch_tiles, batch_valid, batch_values = [], [], []
    if batch_tiles:
        yield closed()


class RowDecider:
    """Blended scores -> class rows (and confidence), with nodata where the source is."""

    def __init__(self, num_classes: int, confidence_dtype: str | None) -> None:
        self.num_classes = num_classes
        dtype, self.nodata = class_encoding(num_classes)
        self.dtype = np.dtype(dtype)
        self.confidence_dtype = confidence_dtype

    def __call__(
        self, top: int, scores: np.ndarray, weights: np.ndarray, source_valid: np.ndarray
    ) -> DecidedRows:
        """Decides the finished strip rows that StripAccumulator.release_with hands over."""
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


def stream_strips(
    reader: TileReader,
    runner: Callable[[np.ndarray], np.ndarray],
    tiles: Sequence[Tile],
    release: Callable[[int, np.ndarray, np.ndarray, np.ndarray], Released],
    *,
    size: int,
    height: int,
    width: int,
    num_classes: int,
    batch_size: int,
    top: int,
    end: int,
    is_cancelled: Callable[[], bool] = lambda: False,
    on_tiles: Callable[[int, int], None] | None = None,
) -> Generator[Released, None, None]:
    """Runs `tiles` (row-major, the first at row `top`) through the model, blends their scores
    and yields `release(top, sums, weights, source_valid)` of each strip of finished rows, top
    to bottom, up to row `end`: what the rows become is the caller's (classes, probabilities).

    Tiles that are all nodata are not run. `on_tiles(done, skipped)` is called after each batch
    with running counts. Memory is one strip of tile rows and the batches in flight.
    """
    window = blend_window(size)
    strip = StripAccumulator(num_classes, size, width, top=top)
    prefetch: Prefetcher[Any] = Prefetcher(_batches(reader, tiles, size, batch_size))
    done = skipped = 0
    try:
        for batch, scores in _scored(prefetch, runner, is_cancelled):
            position = 0
            for tile, valid in zip(batch.tiles, batch.valid, strict=True):
                released = strip.release_with(tile.row, release)
                if released is not None:
                    yield released
                if valid is None:
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
        released = strip.release_with(end, release)
        if released is not None:
            yield released
        if is_cancelled():
            raise SegmentationCancelled()
    finally:
        prefetch.close()


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
    strips = stream_strips(
        reader,
        runner,
        tiles,
        decide,
        size=size,
        height=height,
        width=width,
        num_classes=num_classes,
        batch_size=batch_size,
        top=tiles[0].row if tiles else first,
        end=end,
        is_cancelled=is_cancelled,
        on_tiles=on_tiles,
    )
    try:
        for decided in strips:
            clipped = _clip(decided, first, end)
            if clipped is not None:
                if clipped.nodata_pixels < 0:  # recount within the clipped rows
                    clipped.nodata_pixels = int((clipped.classes == decide.nodata).sum())
                yield clipped
    finally:
        strips.close()  # its prefetch thread stops now, not when it is collected
