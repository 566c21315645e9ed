"""Minimum region size (sieve) and polygon simplification, on the bundled model's real output."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from engine.errors import CrossEarthError
from engine.models.packages import open_package
from engine.raster.postprocess import MinimumRegion, class_indices, parse_min_region
from engine.run.pipeline import SegmentOptions, segment

from .conftest import REPO

BUNDLED = REPO / "resources" / "models" / "crossearth-landsat-lc"
SAMPLE = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"
PIXEL_AREA = 28.5 * 28.5
EIGHT = np.ones((3, 3), bool)


def regions(classes: np.ndarray, nodata: int) -> list[tuple[int, int]]:
    """(class, size) of every 8-connected region."""
    found = []
    for value in np.unique(classes):
        if value == nodata:
            continue
        labels, count = ndimage.label(classes == value, structure=EIGHT)
        sizes = np.bincount(labels.ravel())[1:]
        found += [(int(value), int(size)) for size in sizes]
    return found


def test_parse_min_region():
    assert parse_min_region(None) is None and parse_min_region("0") is None
    assert parse_min_region("20") == MinimumRegion(20, "px")
    assert parse_min_region("20px").pixels(None) == 20
    assert parse_min_region("5000m2").pixels(PIXEL_AREA) == 7  # 6.2 pixels, rounded up
    assert parse_min_region("0.5 ha").pixels(PIXEL_AREA) == 7
    for bad in ("big", "-3", "5 acres"):
        with pytest.raises(CrossEarthError, match="minimum region"):
            parse_min_region(bad)
    with pytest.raises(CrossEarthError, match="has no CRS"):
        parse_min_region("1ha").pixels(None)
    with pytest.raises(CrossEarthError, match="its classes are"):
        class_indices(["lava"], ["water", "forest"])


@pytest.fixture(scope="module")
def plain_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "classes.tif"
    segment(SAMPLE, out, BUNDLED, SegmentOptions(device="cpu"))
    with rasterio.open(out) as src:
        return src.read(1), src.nodata


def test_no_region_below_the_minimum_remains(tmp_path, plain_output):
    plain, nodata = plain_output
    threshold = 7  # "5000m2" on 28.5 m pixels
    assert any(size < threshold for _, size in regions(plain, nodata))  # there is work to do
    out = tmp_path / "sieved.tif"
    result = segment(SAMPLE, out, BUNDLED, SegmentOptions(device="cpu", min_region="5000m2"))
    with rasterio.open(out) as src:
        sieved = src.read(1)
        assert len(src.overviews(1)) == 0 or src.read(1, out_shape=(1, 1, 1)) is not None
    small = [(c, s) for c, s in regions(sieved, nodata) if s < threshold]
    assert small == [], small
    assert (sieved == nodata).sum() == (plain == nodata).sum()  # nodata neither grows nor shrinks
    counts = np.bincount(sieved[sieved != nodata].ravel(), minlength=len(result.class_names))
    assert list(result.class_pixels.values()) == counts.tolist()  # counts follow the filter


def test_kept_classes_keep_their_small_regions(tmp_path, plain_output):
    plain, nodata = plain_output
    water = open_package(BUNDLED).card.class_names.index("water")
    out = tmp_path / "kept.tif"
    segment(
        SAMPLE,
        out,
        BUNDLED,
        SegmentOptions(device="cpu", min_region="20", keep_classes=["Water"]),
    )
    with rasterio.open(out) as src:
        kept = src.read(1)
    assert (plain == water).any()
    assert not ((plain == water) & (kept != water)).any()  # every water pixel stays water
    small_before = [r for r in regions(plain, nodata) if r[1] < 20 and r[0] != water]
    small_after = [r for r in regions(kept, nodata) if r[1] < 20 and r[0] != water]
    # The other classes' small regions go (a few may sit inside kept water and stay).
    assert len(small_after) <= 0.2 * len(small_before), (small_before, small_after)


def test_polygon_areas_match_class_pixels_after_simplification(tmp_path):
    from osgeo import ogr

    out, polygons = tmp_path / "c.tif", tmp_path / "c.gpkg"
    result = segment(
        SAMPLE,
        out,
        BUNDLED,
        SegmentOptions(device="cpu", min_region="4", polygons=polygons, simplify_m=14.0),
    )
    data = ogr.Open(str(polygons))
    layer = data.GetLayer(0)
    areas: dict[str, float] = {}
    for feature in layer:
        areas[feature.GetField("class")] = areas.get(
            feature.GetField("class"), 0.0
        ) + feature.GetField("area_m2")
    data = None
    for name, pixels in result.class_pixels.items():
        if pixels:
            assert areas[name] == pytest.approx(pixels * PIXEL_AREA, rel=0.01), name
    # Simplification removed vertices: the file is smaller than without it.
    unsimplified = tmp_path / "u.gpkg"
    segment(
        SAMPLE,
        tmp_path / "u.tif",
        BUNDLED,
        SegmentOptions(device="cpu", min_region="4", polygons=unsimplified),
    )
    assert _vertex_count(polygons) < 0.9 * _vertex_count(unsimplified)


def _vertex_count(path) -> int:
    from osgeo import ogr

    def points(geometry) -> int:
        inner = range(geometry.GetGeometryCount())
        return geometry.GetPointCount() + sum(points(geometry.GetGeometryRef(i)) for i in inner)

    data = ogr.Open(str(path))
    total = sum(points(feature.GetGeometryRef()) for feature in data.GetLayer(0))
    data = None
    return total
