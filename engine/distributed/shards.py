"""Splitting the single-process tile plan into shards of whole tile rows (pure planning).

Shard k owns a run of consecutive tile rows. Its output rows go from the start row of its first
own tile row (0 for the first shard) to the start row of the next shard's first tile row (the
raster's height for the last shard). It runs its own tiles and the halo tiles above them whose
rows reach down into its output rows, in the plan's row-major order, so every pixel blends
exactly the tiles of a single-process run, added in the same order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.run.tiling import TilePlan

# A shard recomputes its halo tile rows (those above it that reach into it); with at least this
# many own tile rows per halo row, that extra work stays at or below 1/20 = 5 %.
MIN_ROWS_PER_HALO_ROW = 20
# Shards per worker when the raster is large enough: a worker that finishes early takes the
# next shard, so one slow node does not keep the others waiting, and a dead worker loses
# little work.
SHARDS_PER_WORKER = 4
# At most this many pixels per shard (work lost when a worker dies, size of a part file).
MAX_SHARD_PIXELS = 2**28


@dataclass(frozen=True)
class Shard:
    """Output rows [first, end) and the tiles (own and halo, row-major) that decide them."""

    index: int
    first: int
    end: int
    tiles: TilePlan

    @property
    def rows(self) -> int:
        """How many output rows the shard writes."""
        return self.end - self.first

    def own_tiles(self) -> int:
        """The tiles of the plan that belong to this shard (halo tiles belong to the shard
        above)."""
        own_rows = sum(1 for row in self.tiles.row_starts if self.first <= row < self.end)
        return own_rows * len(self.tiles.col_starts)


def halo_rows(size: int, stride: int) -> int:
    """How many tile rows above a tile row reach down into it."""
    return max(0, math.ceil((size - stride) / stride))


def default_shard_count(
    tile_rows: int, workers: int, size: int, stride: int, height: int, width: int
) -> int:
    """About SHARDS_PER_WORKER shards per worker, fewer where the halo would cost more than
    1/MIN_ROWS_PER_HALO_ROW of the work (never fewer than the workers while there are tile
    rows for them), more where a shard would exceed MAX_SHARD_PIXELS; at most one shard per
    tile row."""
    workers = max(1, workers)
    wanted = SHARDS_PER_WORKER * workers
    halo = halo_rows(size, stride)
    if halo:
        wanted = min(wanted, max(workers, tile_rows // (MIN_ROWS_PER_HALO_ROW * halo)))
    wanted = max(wanted, math.ceil(height * width / MAX_SHARD_PIXELS))
    return max(1, min(tile_rows, wanted))


def plan_shards(tiles: TilePlan, height: int, size: int, count: int) -> list[Shard]:
    """`count` shards (fewer when the plan has fewer tile rows) of near-equal numbers of whole
    tile rows, covering output rows [0, height) without gaps or overlaps."""
    starts = tiles.row_starts
    count = max(1, min(count, len(starts)))
    bounds = [round(k * len(starts) / count) for k in range(count + 1)]
    shards = []
    for k in range(count):
        first = 0 if k == 0 else starts[bounds[k]]
        end = height if k == count - 1 else starts[bounds[k + 1]]
        shards.append(Shard(k, first, end, tiles.touching_rows(first, end, size)))
    return shards


def shards_from_rows(
    tiles: TilePlan, height: int, size: int, rows: list[tuple[int, int]]
) -> list[Shard] | None:
    """Shards with the given output rows (a resumed run's plan), or None when the rows are not
    a valid split of this tile plan into whole tile rows."""
    starts = set(tiles.row_starts)
    if not rows or rows[0][0] != 0 or rows[-1][1] != height:
        return None
    for (_, end), (next_first, _) in zip(rows, rows[1:], strict=False):
        if end != next_first:
            return None
    for index, (first, end) in enumerate(rows):
        if end <= first or (index and first not in starts):
            return None
    return [
        Shard(index, first, end, tiles.touching_rows(first, end, size))
        for index, (first, end) in enumerate(rows)
    ]
