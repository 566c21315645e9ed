"""Streaming rows through the model: a large nodata area passes as a series of small batches
that hold none of its pixels, so memory stays bounded and progress and cancel keep moving;
batches hold their own copies of the tiles, never views that pin the reader's blocks."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from engine.errors import SegmentationCancelled
from engine.raster.raster_input import TileReader, choose_scaling
from engine.run.row_stream import MAX_BATCH_TILES, _batches, stream_rows
from engine.run.tiling import plan_tiles

from .conftest import LANDSAT, make_card, write_raster

SIZE, STRIDE = 32, 24
CARD = make_card(num_classes=3, bands=("blue", "green", "red"))


@pytest.fixture
def collared(tmp_path):
    """Landsat rows, then 960 rows of nodata (39 whole tile rows of 8 tiles), then Landsat again."""
    with rasterio.open(LANDSAT) as src:
        data = src.read([1, 2, 3])[:, :96, :200]
    data = np.maximum(data, 1)  # 0 is the nodata value
    gap = np.zeros((3, 960, 200), data.dtype)
    stacked = np.concatenate([data, gap, data], axis=1)
    return write_raster(tmp_path / "collared.tif", stacked, nodata=0)


def reader_of(dataset) -> TileReader:
    scaling = choose_scaling(dataset, [1, 2, 3], CARD.input, "auto")
    return TileReader(dataset, [1, 2, 3], scaling, CARD.input)


def mean_runner(batch: np.ndarray) -> np.ndarray:
    """Three 'class' scores per pixel from the bands (enough to tell rows apart)."""
    return np.abs(batch[:, :3]).astype(np.float32)


def run(path, *, is_cancelled=lambda: False, runner=mean_runner, watch=None, progress=None):
    """(decided rows, (done, skipped) after each batch, the tile plan) of a whole raster."""
    progress = [] if progress is None else progress

    def on_tiles(done: int, skipped: int) -> None:
        progress.append((done, skipped))
        if watch is not None:
            watch(done, skipped)

    with rasterio.open(path) as dataset:
        reader = reader_of(dataset)
        tiles = plan_tiles(dataset.height, dataset.width, SIZE, STRIDE)
        rows = list(
            stream_rows(
                reader,
                runner,
                tiles,
                size=SIZE,
                height=dataset.height,
                width=dataset.width,
                num_classes=3,
                batch_size=4,
                rows=(0, dataset.height),
                confidence_dtype=None,
                is_cancelled=is_cancelled,
                on_tiles=on_tiles,
            )
        )
    return rows, progress, tiles


def test_a_nodata_area_passes_as_small_batches(collared):
    seen: list[int] = []

    def runner(batch):
        seen.append(batch.shape[0])
        return mean_runner(batch)

    rows, progress, tiles = run(collared, runner=runner)
    steps = np.diff([0] + [done for done, _ in progress])
    assert progress[-1][0] == len(tiles)
    assert steps.max() <= MAX_BATCH_TILES
    # the 312 empty tiles come through in several batches, none of them run
    empty = 39 * len(tiles.col_starts)
    assert progress[-1][1] == empty == 312
    assert len(progress) - len(seen) >= empty // MAX_BATCH_TILES
    classes = np.concatenate([r.classes for r in rows])
    nodata = np.iinfo(classes.dtype).max
    assert classes.shape == (96 + 960 + 96, 200)
    assert (classes[96:1056] == nodata).all()
    assert (classes[:96] != nodata).all() and (classes[1056:] != nodata).all()


def test_cancel_is_noticed_inside_a_nodata_area(collared):
    asked_at: list[int] = []

    def watch(done, skipped):
        if skipped >= 5 * 8 and not asked_at:  # inside the gap: the user cancels
            asked_at.append(done)

    progress: list[tuple[int, int]] = []
    with pytest.raises(SegmentationCancelled):
        run(collared, is_cancelled=lambda: bool(asked_at), watch=watch, progress=progress)
    # stopped within a batch or two of asking, long before the far side of the gap
    assert progress[-1][0] <= asked_at[0] + 2 * MAX_BATCH_TILES
    assert progress[-1][0] < 384 // 2  # of 48 tile rows of 8 tiles


def test_batches_own_their_tiles_instead_of_pinning_the_read_blocks(collared):
    with rasterio.open(collared) as dataset:
        reader = reader_of(dataset)
        plan = plan_tiles(dataset.height, dataset.width, SIZE, STRIDE)
        batches = list(_batches(reader, plan, SIZE, 4))
        expected = [reader.read_tile(t.row, t.col, SIZE) for t in plan]
    assert [t for b in batches for t in b.tiles] == list(plan)
    runnable = [values for values, valid in expected if valid.any()]
    stacked = [b.inputs for b in batches if b.inputs is not None]
    np.testing.assert_array_equal(np.concatenate(stacked), np.stack(runnable))
    for batch in batches:
        assert batch.inputs is None or batch.inputs.base is None  # not a view of a block
        valid = [v for v in batch.valid if v is not None]
        assert all(v.base is None for v in valid)
        assert len(valid) == (0 if batch.inputs is None else batch.inputs.shape[0])
