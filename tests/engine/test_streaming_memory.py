"""Peak memory of the blending side does not grow with raster height."""

import time
import tracemalloc

import numpy as np
import pytest
import rasterio

from engine.pipeline import SegmentOptions, segment


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
    pixel_model = unhurried_model
    # Both are taller than the strip plus a full block row of output, so both reach the
    # steady state; the second has 6x the rows.
    short = tiled_landsat(4, width=160)  # 1408 rows
    tall = tiled_landsat(24, width=160)  # 8448 rows
    # first-use allocations (caches, lazy imports) are not the job's
    peak_traced_bytes(short, tmp_path / "warm.tif", pixel_model)
    peak_short = peak_traced_bytes(short, tmp_path / "short.tif", pixel_model)
    peak_tall = peak_traced_bytes(tall, tmp_path / "tall.tif", pixel_model)
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
