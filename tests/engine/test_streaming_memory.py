"""Peak memory of the blending side does not grow with raster height."""

import tracemalloc

import numpy as np
import rasterio

from engine.pipeline import SegmentOptions, segment


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


def test_peak_memory_independent_of_height(tmp_path, tiled_landsat, pixel_model):
    # Both are taller than the strip plus a full block row of output, so both reach the
    # steady state; the second has 6x the rows.
    short = tiled_landsat(4, width=160)  # 1408 rows
    tall = tiled_landsat(24, width=160)  # 8448 rows
    peak_short = peak_traced_bytes(short, tmp_path / "short.tif", pixel_model)
    peak_tall = peak_traced_bytes(tall, tmp_path / "tall.tif", pixel_model)
    # The whole tall class raster with its confidence and scores would take:
    whole_output = 8448 * 160 * (1 + 4 + 4 * 4)
    assert peak_tall < 1.2 * peak_short, (peak_short, peak_tall)
    assert peak_tall < whole_output / 2, (peak_tall, whole_output)
    with rasterio.open(tmp_path / "tall.tif") as dst:
        classes = dst.read(1)
    # the tall raster repeats the short one: so must its classes
    with rasterio.open(tmp_path / "short.tif") as dst:
        first = dst.read(1)
    np.testing.assert_array_equal(classes[:300], first[:300])
    assert classes.shape == (8448, 160)
    np.testing.assert_array_equal(classes[352 * 5 + 60 : 352 * 5 + 300], first[60:300])
