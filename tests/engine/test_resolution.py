"""Processing resolution: tiles resampled to the model's GSD on the fly, output on the source
grid (or on the processing grid when asked)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import Resampling, reproject

from engine.errors import CrossEarthError
from engine.raster.resolution import (
    EARTH_RADIUS_M,
    parse_gsd,
    processing_resolution,
    raster_gsd_m,
    source_geometry,
)
from engine.run.pipeline import SegmentOptions, segment

from .conftest import REPO, write_raster
from .test_cli import package, run_cli  # noqa: F401 (fixture)

BUNDLED = REPO / "resources" / "models" / "crossearth-landsat-lc"
# The bundled model's training scene (28.5 m Landsat 7): large enough that region borders,
# where any two resolutions must disagree, are a small share of the pixels.
SCENE = REPO / "resources" / "data" / "raleigh" / "landsat7_2000.tif"


def test_parse_gsd():
    assert parse_gsd(None) == "auto" and parse_gsd("AUTO") == "auto"
    assert parse_gsd("native") == "native"
    assert parse_gsd("0.3") == 0.3 and parse_gsd("10m") == 10.0 and parse_gsd(2) == 2.0
    for bad in ("fast", "-1", "0", "nan", "inf"):
        with pytest.raises(CrossEarthError):
            parse_gsd(bad)


def test_raster_gsd_in_metres(tmp_path):
    data = np.zeros((1, 10, 10), np.uint8)
    utm = write_raster(tmp_path / "utm.tif", data, transform=from_origin(500000, 4e6, 0.5, 0.5))
    feet = write_raster(
        tmp_path / "feet.tif", data, crs="EPSG:2264", transform=from_origin(2e6, 7e5, 10, 10)
    )
    lonlat = write_raster(
        tmp_path / "ll.tif",
        data,
        crs="EPSG:4326",
        transform=from_origin(10.0, 60.0 + 5e-5, 1e-5, 1e-5),
    )
    none = write_raster(tmp_path / "none.tif", data, crs=None)
    with rasterio.open(utm) as a, rasterio.open(feet) as b, rasterio.open(lonlat) as c:
        assert raster_gsd_m(a) == pytest.approx(0.5)
        assert raster_gsd_m(b) == pytest.approx(10 * 0.3048006096, rel=1e-6)  # US survey feet
        degree = math.pi / 180 * EARTH_RADIUS_M
        # at the centre latitude (60 deg): 1e-5 deg wide = 0.556 m, high = 1.112 m
        expected = math.sqrt(1e-5 * degree * math.cos(math.radians(60)) * 1e-5 * degree)
        assert raster_gsd_m(c) == pytest.approx(expected, rel=1e-4)
    with rasterio.open(none) as d:
        assert raster_gsd_m(d) is None


def test_processing_resolution_decisions():
    auto = processing_resolution("auto", 14.25, 28.5, "m")
    assert auto.factor == pytest.approx(0.5) and auto.processing_gsd_m == 28.5
    assert "coarsened 2.00x" in auto.description
    assert processing_resolution("native", 14.25, 28.5, "m").factor == 1.0
    assert processing_resolution(7.125, 14.25, 28.5, "m").factor == pytest.approx(2.0)
    # within 2 %: the model's GSD already, no resampling for rounding noise
    assert processing_resolution("auto", 28.6, 28.5, "m").factor == 1.0
    no_card = processing_resolution("auto", 14.25, None, "m")
    assert no_card.factor == 1.0 and "states no ground sample distance" in no_card.notes[0]
    no_crs = processing_resolution("auto", None, 28.5, "m")
    assert no_crs.factor == 1.0 and "no CRS" in no_crs.notes[0]


def test_source_geometry_keeps_the_model_tile():
    assert source_geometry(64, 43, 0.5, 1000, 1000, 4) == (128, 86, 64)
    assert source_geometry(64, 43, 2.0, 1000, 1000, 4) == (32, 22, 64)
    # larger than the raster: clamped, the model tile rounded up to the size multiple
    size, stride, model_tile = source_geometry(512, 384, 0.5, 100, 90, 16)
    assert size == 100 and model_tile == 64 and 1 <= stride <= size


def _class_map_on(path: Path, grid: rasterio.DatasetReader, resampling: Resampling) -> np.ndarray:
    with rasterio.open(path) as source:
        result = np.full(grid.shape, 255, np.uint8)
        reproject(
            source.read(1),
            result,
            src_transform=source.transform,
            src_crs=source.crs,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            resampling=resampling,
            src_nodata=255,
            dst_nodata=255,
        )
    return result


def _agreement(path: Path, reference: Path, coarser: bool) -> float:
    """Share of equal classes on `path`'s grid (the reference brought there by majority when
    it is finer, nearest when coarser)."""
    with rasterio.open(path) as grid:
        classes = grid.read(1)
        other = _class_map_on(reference, grid, Resampling.mode if coarser else Resampling.nearest)
    valid = (classes != 255) & (other != 255)
    return float((classes[valid] == other[valid]).mean())


@pytest.fixture(scope="module")
def resampled_scenes(tmp_path_factory):
    from osgeo import gdal

    gdal.UseExceptions()
    folder = tmp_path_factory.mktemp("gsd")
    fine, coarse = folder / "fine_14m.tif", folder / "coarse_57m.tif"
    gdal.Warp(str(fine), str(SCENE), xRes=14.25, yRes=14.25, resampleAlg="bilinear")
    gdal.Warp(str(coarse), str(SCENE), xRes=57, yRes=57, resampleAlg="average")
    reference = folder / "native.tif"
    segment(SCENE, reference, BUNDLED, SegmentOptions(device="cpu"))
    return folder, fine, coarse, reference


@pytest.mark.slow
def test_auto_gsd_gives_the_same_map_at_any_resolution(resampled_scenes):
    folder, fine, coarse, reference = resampled_scenes
    agreements = {}
    for name, raster in (("fine", fine), ("coarse", coarse)):
        for gsd in ("auto", "native"):
            out = folder / f"{name}_{gsd}.tif"
            result = segment(raster, out, BUNDLED, SegmentOptions(device="cpu", gsd=gsd))
            with rasterio.open(raster) as src, rasterio.open(out) as dst:
                assert (dst.shape, dst.transform, dst.crs) == (src.shape, src.transform, src.crs)
            agreements[name, gsd] = _agreement(out, reference, coarser=name == "coarse")
            if gsd == "auto":
                assert result.resolution.startswith("28.5 m"), result.resolution
    print("agreement with the native-resolution map:", agreements)
    assert agreements["fine", "auto"] >= 0.95, agreements
    # Averaging 2 x 2 pixels loses information that no resampling brings back: measured 0.94.
    assert agreements["coarse", "auto"] >= 0.93, agreements
    for name in ("fine", "coarse"):
        assert agreements[name, "native"] < agreements[name, "auto"] - 0.05, agreements


def test_output_on_the_processing_grid(resampled_scenes):
    folder, fine, _, _ = resampled_scenes
    out = folder / "fine_on_model_grid.tif"
    with rasterio.open(fine) as src:
        height, width, bounds = src.height, src.width, src.bounds
    result = segment(
        fine, out, BUNDLED, SegmentOptions(device="cpu", output_grid="model", extent=None)
    )
    with rasterio.open(out) as dst:
        assert dst.res == pytest.approx((28.5, 28.5))
        assert abs(dst.height - height / 2) <= 1 and abs(dst.width - width / 2) <= 1
        assert dst.bounds.left == pytest.approx(bounds.left)
    assert result.resolution.startswith("native (28.5 m")


def test_card_without_gsd_runs_native_with_a_note(tmp_path, capsys, package):  # noqa: F811
    raster = write_raster(
        tmp_path / "rgb.tif",
        np.random.default_rng(0).integers(0, 255, (3, 40, 40), dtype=np.uint8),
        descriptions=["blue", "green", "red"],
    )
    code, out, err = run_cli(
        capsys, "segment", raster, tmp_path / "o.tif", "--model", package.path, "--progress=none"
    )
    assert code == 0, err
    assert "warning: model 'test-model' states no ground sample distance" in out
    assert "processing resolution: native (2 m pixels)" in out
    code, out, err = run_cli(
        capsys,
        "segment",
        raster,
        tmp_path / "p.tif",
        "--model",
        package.path,
        "--progress=none",
        "--gsd=fast",
    )
    assert code == 2 and "GSD 'fast' is not valid" in err


def test_web_mercator_pixels_are_ground_metres(tmp_path):
    # A 10 m EPSG:3857 pixel at 60 deg N covers 10 * cos(60) = 5 m of ground.
    from rasterio.warp import transform

    xs, ys = transform("EPSG:4326", "EPSG:3857", [10.0], [60.0])
    data = np.zeros((1, 10, 10), np.uint8)
    raster = write_raster(
        tmp_path / "merc.tif",
        data,
        crs="EPSG:3857",
        transform=from_origin(xs[0] - 50, ys[0] + 50, 10, 10),
    )
    with rasterio.open(raster) as dataset:
        assert raster_gsd_m(dataset) == pytest.approx(5.0, rel=1e-3)
