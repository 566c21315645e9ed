"""Label rasters on other grids/CRSs and polygon labels give the same training targets as an
aligned label raster."""

import numpy as np
import pytest
import rasterio
from osgeo import gdal, ogr, osr
from rasterio.warp import Resampling, calculate_default_transform, reproject

from engine.raster.raster_input import open_raster
from training.config import IGNORE
from training.data import load_training_data
from training.run_setup import _input_spec_from_scratch

from .conftest import AREA, IMAGE, LABELS, recipe


def targets(config):
    data = load_training_data(config, _input_spec_from_scratch(config), None)
    image = data.images[0]
    return image.read_labels(0, 0, image.grid.height, image.grid.width), data


@pytest.fixture
def reference(tmp_path, aligned_labels):
    labels, data = targets(recipe(tmp_path, images=[{"image": IMAGE, "labels": aligned_labels}]))
    assert data.warnings == []  # aligned: nothing resampled
    assert {0, 1, 2, 3, 4} <= set(np.unique(labels))
    assert (labels == IGNORE).mean() < 0.2  # only the nodata border and 'sediment'
    return labels


def test_label_raster_on_another_crs(tmp_path, reference):
    # The shipped map is on NAD83(HARN) / North Carolina, the image on NAD83 / North Carolina.
    labels, data = targets(recipe(tmp_path, images=[{"image": IMAGE, "labels": LABELS}]))
    assert any("resampled onto the image grid by nearest neighbour" in w for w in data.warnings)
    np.testing.assert_array_equal(labels, reference)


def test_label_raster_on_a_finer_grid(tmp_path, aligned_labels, reference):
    with rasterio.open(aligned_labels) as src:
        codes = src.read(1)
        profile = src.profile
        transform = src.transform
    finer = np.repeat(np.repeat(codes, 2, 0), 2, 1)
    profile.update(
        height=finer.shape[0], width=finer.shape[1], transform=transform * transform.scale(0.5)
    )
    path = tmp_path / "finer.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(finer[None])
    labels, data = targets(recipe(tmp_path, images=[{"image": IMAGE, "labels": path}]))
    assert data.warnings
    np.testing.assert_array_equal(labels, reference)


def test_label_raster_in_utm_at_10_m(tmp_path, aligned_labels, reference):
    path = tmp_path / "utm.tif"
    with rasterio.open(aligned_labels) as src:
        transform, width, height = calculate_default_transform(
            src.crs, "EPSG:26917", src.width, src.height, *src.bounds, resolution=10
        )
        profile = dict(
            src.profile, crs="EPSG:26917", transform=transform, width=width, height=height
        )
        with rasterio.open(path, "w", **profile) as dst:
            reproject(
                rasterio.band(src, 1),
                rasterio.band(dst, 1),
                resampling=Resampling.nearest,
                dst_nodata=0,
            )
    labels, _ = targets(recipe(tmp_path, images=[{"image": IMAGE, "labels": path}]))
    inside = reference != IGNORE
    # Two nearest-neighbour resamplings through a rotated 10 m grid move some class edges by
    # a pixel; everywhere else the targets are the same.
    assert (labels[inside] == reference[inside]).mean() > 0.95


def polygonize(raster, destination, epsg=None):
    source = gdal.Open(str(raster))
    band = source.GetRasterBand(1)
    srs = source.GetSpatialRef()
    driver = ogr.GetDriverByName("GPKG")
    vector = driver.CreateDataSource(str(destination))
    layer = vector.CreateLayer("landcover", srs=srs, geom_type=ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("code", ogr.OFTInteger))
    gdal.Polygonize(band, band.GetMaskBand(), layer, 0)
    if epsg is not None:
        target = osr.SpatialReference()
        target.ImportFromEPSG(epsg)
        transformed = driver.CreateDataSource(str(destination.with_name(f"{epsg}.gpkg")))
        out = transformed.CreateLayer("landcover", srs=target, geom_type=ogr.wkbPolygon)
        out.CreateField(ogr.FieldDefn("code", ogr.OFTInteger))
        for s in (srs, target):
            s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        to_target = osr.CoordinateTransformation(srs, target)
        for feature in layer:
            geometry = feature.GetGeometryRef().Clone()
            geometry.Transform(to_target)
            new = ogr.Feature(out.GetLayerDefn())
            new.SetField("code", feature.GetField("code"))
            new.SetGeometry(geometry)
            out.CreateFeature(new)
        transformed = None
        return destination.with_name(f"{epsg}.gpkg")
    vector = None
    return destination


@pytest.mark.parametrize("epsg", [None, 4326])
def test_polygon_labels(tmp_path, aligned_labels, reference, epsg):
    polygons = polygonize(aligned_labels, tmp_path / "landcover.gpkg", epsg)
    config = recipe(
        tmp_path, images=[{"image": IMAGE, "polygons": polygons, "class_field": "code"}]
    )
    labels, _ = targets(config)
    np.testing.assert_array_equal(labels, reference)


def test_labelled_area_mask_hides_the_held_out_corner(tmp_path, reference):
    labels, _ = targets(recipe(tmp_path))  # with training_area.geojson
    with open_raster(IMAGE) as image:
        assert image.crs.to_epsg() == 32119
    # The held-out corner (176 x 192 px) and its 16 px margin carry no label.
    assert (labels[:192, :208] == IGNORE).all()
    np.testing.assert_array_equal(labels[200:], reference[200:])
    assert AREA.is_file()
