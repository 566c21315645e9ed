"""The engine runs converted CrossEarth packages: normalization, band order, scores."""

import numpy as np
import rasterio
import torch

from engine import load_model
from engine.pipeline import SegmentOptions, segment

from ..engine.conftest import LANDSAT, write_raster


def test_single_tile_equals_the_model_on_the_same_pixels(tmp_path, tiny_package):
    with rasterio.open(LANDSAT) as src:
        rgb = src.read([3, 2, 1], window=((100, 228), (50, 178)))
        crs, transform = src.crs.to_wkt(), src.window_transform(((100, 228), (50, 178)))
    raster = write_raster(tmp_path / "rgb.tif", rgb, crs=crs, transform=transform)
    out = tmp_path / "classes.tif"
    segment(
        raster, out, tiny_package, SegmentOptions(bands=[1, 2, 3], scaling="none", device="cpu")
    )

    card = tiny_package.card
    mean = np.asarray(card.input.mean, np.float32)[:, None, None]
    std = np.asarray(card.input.std, np.float32)[:, None, None]
    x = torch.from_numpy((rgb.astype(np.float32) - mean) / std)[None]
    with torch.no_grad():
        expected = load_model(tiny_package.path)(x)[0].argmax(0).numpy()
    with rasterio.open(out) as dst:
        classes = dst.read(1)
        assert dst.crs.to_wkt() == crs and dst.transform == transform
        assert [dst.colormap(1)[i][:3] for i in range(3)] == [c.color for c in card.classes]
    np.testing.assert_array_equal(classes, expected)


def test_tiled_run_on_a_larger_raster(tmp_path, tiny_package):
    out = tmp_path / "classes.tif"
    result = segment(
        LANDSAT,
        out,
        tiny_package,
        SegmentOptions(bands=[3, 2, 1], tile_size=128, overlap=32, batch_size=3, device="cpu"),
    )
    assert result.tiles == 16 and result.tiles_skipped == 0
    with rasterio.open(out) as dst:
        classes = dst.read(1)
    assert classes.shape == (352, 349)
    assert set(np.unique(classes)) <= {0, 1, 2}
    assert sum(result.class_pixels.values()) == 352 * 349
