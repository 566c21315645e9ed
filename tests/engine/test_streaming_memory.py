"""Peak memory of the blending side does not grow with raster height, nor with the size of a
nodata area."""

import time
import tracemalloc

import numpy as np
import pytest
import rasterio

from engine.run.pipeline import SegmentOptions, segment

from .conftest import LANDSAT, write_raster


@pytest.fixture
def unhurried_model(pixel_model):
    """The pixel model taking 10 ms per batch: the reading thread then always fills its queue,
    so every run reaches the pipeline's true peak instead of one that depends on how the two
    threads happened to interleave (CI once measured 1.85 MB short, 2.26 MB tall that way)."""
    forward = pixel_model.module.forward

    def slow_forward(x):
        time.sleep(0.01)
        return forward(x)

    pixel_model.module.forward = slow_forward
    return pixel_model


def peak_traced_bytes(path, out, model):
    tracemalloc.start()
    try:
        segment(
            path,
            out,
            model,
            SegmentOptions(
                tile_size=64, overlap=16, batch_size=2, confidence=out.with_suffix(".conf.tif")
            ),
        )
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_independent_of_height(tmp_path, tiled_landsat, unhurried_model):
    # Both are taller than the strip plus a full block row of output, so both reach the
    # steady state; the second has 6x the rows.
    short = tiled_landsat(4, width=160)  # 1408 rows
    tall = tiled_landsat(24, width=160)  # 8448 rows
    # first-use allocations (caches, lazy imports) are not the job's
    peak_traced_bytes(short, tmp_path / "warm.tif", unhurried_model)
    peak_short = peak_traced_bytes(short, tmp_path / "short.tif", unhurried_model)
    peak_tall = peak_traced_bytes(tall, tmp_path / "tall.tif", unhurried_model)
    # The whole tall class raster with its confidence and scores would take:
    whole_output = 8448 * 160 * (1 + 4 + 4 * 4)
    assert peak_tall < 1.05 * peak_short, (peak_short, peak_tall)
    assert peak_tall < whole_output / 2, (peak_tall, whole_output)
    with rasterio.open(tmp_path / "tall.tif") as dst:
        classes = dst.read(1)
    # the tall raster repeats the short one: so must its classes
    with rasterio.open(tmp_path / "short.tif") as dst:
        first = dst.read(1)
    np.testing.assert_array_equal(classes[:300], first[:300])
    assert classes.shape == (8448, 160)
    np.testing.assert_array_equal(classes[352 * 5 + 60 : 352 * 5 + 300], first[60:300])


def test_peak_memory_independent_of_a_nodata_area(tmp_path, unhurried_model):
    """A mosaic's empty collar: 7,040 rows of nodata between two stretches of image. Before
    batches closed at MAX_BATCH_TILES, the batch that spanned them held every empty tile's
    validity (a view of its whole read block): 1.5 MB more here, gigabytes on a wide mosaic."""
    with rasterio.open(LANDSAT) as src:
        image = np.maximum(src.read([1, 2, 3])[:, :, :160], 1)  # 0 is the nodata value
    gap = np.zeros((3, 20 * image.shape[1], 160), image.dtype)
    plain = write_raster(tmp_path / "plain.tif", np.concatenate([image, image], axis=1), nodata=0)
    collared = write_raster(
        tmp_path / "collared.tif", np.concatenate([image, gap, image], axis=1), nodata=0
    )
    peak_traced_bytes(plain, tmp_path / "warm.tif", unhurried_model)
    peak_plain = peak_traced_bytes(plain, tmp_path / "plain_out.tif", unhurried_model)
    peak_collared = peak_traced_bytes(collared, tmp_path / "collared_out.tif", unhurried_model)
    assert peak_collared < 1.25 * peak_plain, (peak_plain, peak_collared)
    with rasterio.open(tmp_path / "collared_out.tif") as dst:
        classes = dst.read(1)
        nodata = dst.nodata
    rows = image.shape[1]
    assert (classes[rows : 21 * rows] == nodata).all()
    assert (classes[:rows] != nodata).all() and (classes[21 * rows :] != nodata).all()
