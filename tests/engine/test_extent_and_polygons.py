"""Segmenting a map extent only, and class polygons with areas."""

import numpy as np
import pytest
import rasterio
from osgeo import ogr
from rasterio.transform import from_origin

from engine.errors import CrossEarthError
from engine.run.pipeline import SegmentOptions, segment

from .conftest import write_raster


def read(path):
    with rasterio.open(path) as dst:
        return dst.read(1), dst.transform, dst.crs


def test_extent_segments_the_window_it_covers(tmp_path, landsat_rgb, pixel_model):
    full = tmp_path / "full.tif"
    segment(landsat_rgb, full, pixel_model, SegmentOptions(tile_size=64, overlap=16))
    classes, transform, crs = read(full)
    # An extent cutting through pixels: the window grows outwards to whole pixels.
    left, top = transform * (40.3, 25.6)
    right, bottom = transform * (150.2, 130.0)
    part = tmp_path / "part.tif"
    result = segment(
        landsat_rgb,
        part,
        pixel_model,
        SegmentOptions(tile_size=64, overlap=16, extent=(left, bottom, right, top)),
    )
    sub, sub_transform, sub_crs = read(part)
    assert sub.shape == (105, 111)  # rows 25..129, cols 40..150
    assert sub_crs == crs
    assert sub_transform == transform * rasterio.Affine.translation(40, 25)
    np.testing.assert_array_equal(sub, classes[25:130, 40:151])
    assert sum(result.class_pixels.values()) == 105 * 111


def test_extent_outside_the_raster_is_explained(tmp_path, landsat_rgb, pixel_model):
    with pytest.raises(CrossEarthError, match="does not overlap the raster"):
        segment(landsat_rgb, tmp_path / "o.tif", pixel_model, SegmentOptions(extent=(0, 0, 10, 10)))
    assert list(tmp_path.iterdir()) == [landsat_rgb]


def polygons_by_class(path):
    source = ogr.Open(str(path))
    layer = source.GetLayer("classes")
    areas, names, count = {}, {}, 0
    for feature in layer:
        index = feature.GetField("class_id")
        areas[index] = areas.get(index, 0.0) + feature.GetField("area_m2")
        names[index] = feature.GetField("class")
        count += 1
    return areas, names, count


def test_polygons_cover_each_class_with_its_area(tmp_path, landsat_rgb, pixel_model):
    out = tmp_path / "classes.tif"
    result = segment(
        landsat_rgb, out, pixel_model, SegmentOptions(polygons=tmp_path / "classes.gpkg")
    )
    assert result.polygons == tmp_path / "classes.gpkg"
    areas, names, count = polygons_by_class(result.polygons)
    pixel_area = 28.5 * 28.5
    for index, name in enumerate(pixel_model.card.class_names):
        pixels = result.class_pixels[name]
        assert areas.get(index, 0.0) == pytest.approx(pixels * pixel_area, rel=1e-6)
        if pixels:
            assert names[index] == name
    assert count > len(areas)  # many separate regions, not one polygon per class


def test_polygons_skip_nodata_and_measure_geographic_areas(tmp_path, pixel_model):
    data = np.random.default_rng(0).integers(0, 255, (3, 60, 80), dtype=np.uint8)
    data[:, :20, :] = 0  # nodata band across the top
    raster = write_raster(
        tmp_path / "geo.tif",
        data,
        crs="EPSG:4326",
        transform=from_origin(10.0, 60.01, 0.0001, 0.0001),
        nodata=0,
        descriptions=["blue", "green", "red"],
    )
    result = segment(
        raster, tmp_path / "c.tif", pixel_model, SegmentOptions(polygons=tmp_path / "p.gpkg")
    )
    areas, _, _ = polygons_by_class(result.polygons)
    covered = sum(result.class_pixels.values())
    assert covered == 40 * 80 - np.count_nonzero((data[:, 20:] == 0).any(0))
    # One pixel near 60 N: 0.0001 deg lat ~ 11.13 m by 0.0001 deg lon ~ 5.57 m.
    expected = covered * 11.13 * 5.57
    assert sum(areas.values()) == pytest.approx(expected, rel=0.01)


def test_polygon_path_must_be_a_geopackage(tmp_path, landsat_rgb, pixel_model):
    with pytest.raises(CrossEarthError, match=r"must be a GeoPackage \(.gpkg\)"):
        segment(
            landsat_rgb,
            tmp_path / "o.tif",
            pixel_model,
            SegmentOptions(polygons=tmp_path / "p.shp"),
        )
