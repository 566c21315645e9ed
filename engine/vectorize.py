"""Class rasters to polygons (GeoPackage) with GDAL's Polygonize, which streams by scanlines."""

from __future__ import annotations

from pathlib import Path

from .files import create_temporary_folder, publish, remove_temporary, write_error
from .gdal_bindings import require_osgeo

LAYER = "classes"
# World Cylindrical Equal Area: areas of polygons in geographic coordinates, in square metres.
EQUAL_AREA_EPSG = 6933


def _gdal():
    return require_osgeo("polygon output")


def polygonize(
    class_raster: Path,
    destination: Path,
    class_names: list[str],
    simplify_m: float | None = None,
) -> int:
    """Writes one polygon per connected region of equal class (8-connected), with fields
    class_id, class and area_m2, into a GeoPackage; nodata pixels get no polygon. With
    `simplify_m`, outlines are simplified (Douglas-Peucker, topology of each polygon kept) to
    that tolerance in metres. Areas are in square metres: from projected units, or on an
    equal-area projection of the ellipsoid for geographic CRSs. The file appears only when
    complete. Returns the number of polygons."""
    gdal, ogr, osr = _gdal()
    destination = Path(destination)
    staging = create_temporary_folder(destination)
    temp = staging / destination.name
    try:
        raster = gdal.Open(str(class_raster))
        band = raster.GetRasterBand(1)
        srs = raster.GetSpatialRef()
        driver = ogr.GetDriverByName("GPKG")
        vector = driver.CreateDataSource(str(temp))
        layer = vector.CreateLayer(LAYER, srs=srs, geom_type=ogr.wkbMultiPolygon)
        layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
        name_field = ogr.FieldDefn("class", ogr.OFTString)
        layer.CreateField(name_field)
        area_field = ogr.FieldDefn("area_m2", ogr.OFTReal)
        layer.CreateField(area_field)
        vector.StartTransaction()
        gdal.Polygonize(band, band.GetMaskBand(), layer, 0, ["8CONNECTED=8"])
        vector.CommitTransaction()
        to_metres = _area_transform(srs, osr)
        tolerance = _tolerance_in_units(raster, srs, simplify_m) if simplify_m else 0.0
        count = 0
        vector.StartTransaction()
        layer.ResetReading()
        for feature in layer:
            index = feature.GetField("class_id")
            feature.SetField("class", class_names[index] if 0 <= index < len(class_names) else "")
            geometry = feature.GetGeometryRef()
            if tolerance > 0:
                simplified = geometry.SimplifyPreserveTopology(tolerance)
                if simplified is not None and not simplified.IsEmpty():
                    feature.SetGeometry(simplified)
                    geometry = feature.GetGeometryRef()
            if to_metres is not None:
                area_geometry = geometry.Clone()
                factor = 1.0
                if callable(to_metres):
                    area_geometry.Transform(to_metres())
                else:
                    factor = to_metres
                feature.SetField("area_m2", area_geometry.GetArea() * factor)
            layer.SetFeature(feature)
            count += 1
        vector.CommitTransaction()
        if vector.SyncToDisk() != 0:
            raise RuntimeError("writing the GeoPackage failed")
        vector = None
        raster = None
        _check_readable(temp, count, ogr)
        publish(temp, destination)
        return count
    except RuntimeError as exc:
        raise write_error(destination, exc) from None
    finally:
        remove_temporary(staging)


def _check_readable(path: Path, count: int, ogr) -> None:
    """Reads the written GeoPackage back: a full disk can leave a file SQLite cannot open."""
    try:
        data = ogr.Open(str(path))
        found = data.GetLayerByName(LAYER).GetFeatureCount()
        data = None
    except (RuntimeError, AttributeError) as exc:
        raise RuntimeError(f"the written file cannot be read back ({exc})") from None
    if found != count:
        raise RuntimeError(f"{found} of {count} polygons were written")


def _area_transform(srs, osr):
    """How to get square metres: a factor for projected CRSs, a transform to an equal-area CRS
    for geographic ones, None without a CRS (areas stay empty)."""
    if srs is None:
        return None
    if srs.IsGeographic():
        target = osr.SpatialReference()
        target.ImportFromEPSG(EQUAL_AREA_EPSG)
        source = srs.Clone()
        for ref in (source, target):
            ref.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        transform = osr.CoordinateTransformation(source, target)
        return lambda: transform
    return srs.GetLinearUnits() ** 2


def _tolerance_in_units(raster, srs, metres: float) -> float:
    """A distance in metres in the raster CRS's units (degrees: at the centre latitude)."""
    import math

    from .resolution import EARTH_RADIUS_M

    if srs is None:
        return metres  # no CRS: map units are all there is
    if srs.IsGeographic():
        x0, dx, _, y0, _, dy = raster.GetGeoTransform()
        centre_lat = y0 + dy * raster.RasterYSize / 2
        metres_per_degree = math.pi / 180 * EARTH_RADIUS_M
        return metres / (metres_per_degree * max(0.01, math.cos(math.radians(centre_lat))))
    return metres / srs.GetLinearUnits()
