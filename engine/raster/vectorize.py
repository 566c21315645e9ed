"""Class rasters to polygons (GeoPackage): rasterio's shapes (GDAL's Polygonize) for the regions,
shapely for simplifying and measuring them, pyogrio for writing them in batches."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp

from engine.files import create_temporary_folder, publish, remove_temporary, write_error
from engine.raster.vector_io import feature_count, vector_errors, write_layer

LAYER = "classes"
# World Cylindrical Equal Area: areas of polygons in geographic coordinates, in square metres.
EQUAL_AREA_CRS = "EPSG:6933"
# Polygons written per batch: the memory of one batch of shapely geometries, not of all.
BATCH = 10_000


def polygonize(
    class_raster: Path,
    destination: Path,
    class_names: list[str],
    simplify_m: float | None = None,
) -> int:
    """Writes one polygon per connected region of equal class (8-connected), with fields
    class_id, class and area_m2, into a GeoPackage layer of MultiPolygons; nodata pixels get no
    polygon. With `simplify_m`, outlines are simplified (Douglas-Peucker, topology of each
    polygon kept) to that tolerance in metres. Areas are in square metres: from projected
    units, or on an equal-area projection of the ellipsoid for geographic CRSs. The file
    appears only when complete. Returns the number of polygons."""
    import shapely

    destination = Path(destination)
    failures: tuple[type[Exception], ...] = (RuntimeError, *vector_errors())
    staging = create_temporary_folder(destination)
    temp = staging / destination.name
    try:
        with rasterio.open(class_raster) as raster:
            crs = raster.crs
            crs_wkt = crs.to_wkt() if crs is not None else None
            tolerance = _tolerance_in_units(raster, simplify_m) if simplify_m else 0.0
            count = 0
            for values, shapes in _batches(raster):
                geometries = np.array([shapely.geometry.shape(s) for s in shapes], dtype=object)
                if tolerance > 0:
                    simplified = shapely.simplify(geometries, tolerance, preserve_topology=True)
                    keep = ~shapely.is_empty(simplified)
                    geometries = np.where(keep, simplified, geometries)
                names = np.array(
                    [class_names[v] if 0 <= v < len(class_names) else "" for v in values],
                    dtype=object,
                )
                write_layer(
                    temp,
                    LAYER,
                    shapely.to_wkb(geometries),
                    {
                        "class_id": np.asarray(values, np.int32),
                        "class": names,
                        "area_m2": _areas_m2(geometries, crs),
                    },
                    crs_wkt,
                    "MultiPolygon",
                    append=count > 0,
                )
                count += len(values)
            if count == 0:
                write_layer(
                    temp,
                    LAYER,
                    np.empty(0, object),
                    {
                        "class_id": np.empty(0, np.int32),
                        "class": np.empty(0, object),
                        "area_m2": np.empty(0, np.float64),
                    },
                    crs_wkt,
                    "MultiPolygon",
                )
        _check_readable(temp, count)
        publish(temp, destination)
        return count
    except failures as exc:
        raise write_error(destination, exc) from None
    finally:
        remove_temporary(staging)


def _batches(raster: Any) -> Iterator[tuple[list[int], list[dict[str, Any]]]]:
    """(class values, GeoJSON shapes) of the raster's regions, BATCH at a time, nodata left
    out (it is polygonized as a value of its own, then dropped, which leaves the regions
    around it as they are)."""
    nodata = raster.nodata
    values: list[int] = []
    shapes: list[dict[str, Any]] = []
    band = rasterio.band(raster, 1)
    for shape, value in rasterio.features.shapes(band, connectivity=8, transform=raster.transform):
        if nodata is not None and value == nodata:
            continue
        values.append(int(value))
        shapes.append(shape)
        if len(values) == BATCH:
            yield values, shapes
            values, shapes = [], []
    if values:
        yield values, shapes


def _areas_m2(geometries: np.ndarray, crs: Any) -> np.ndarray:
    """Square metres: projected areas times the unit's size squared, or areas on an
    equal-area projection for geographic CRSs; NaN (written as null) without a CRS."""
    import shapely

    if crs is None:
        return np.full(len(geometries), np.nan)
    if crs.is_geographic:
        mapped = rasterio.warp.transform_geom(
            crs, EQUAL_AREA_CRS, [shapely.geometry.mapping(g) for g in geometries]
        )
        return shapely.area(np.array([shapely.geometry.shape(g) for g in mapped], dtype=object))
    return shapely.area(geometries) * float(crs.linear_units_factor[1]) ** 2


def _check_readable(path: Path, count: int) -> None:
    """Reads the written GeoPackage back: a full disk can leave a file SQLite cannot open."""
    try:
        found = feature_count(path, LAYER)
    except vector_errors() as exc:
        raise RuntimeError(f"the written file cannot be read back ({exc})") from None
    if found != count:
        raise RuntimeError(f"{found} of {count} polygons were written")


def _tolerance_in_units(raster: Any, metres: float) -> float:
    """A distance in metres in the raster CRS's units (degrees: at the centre latitude)."""
    from engine.raster.resolution import EARTH_RADIUS_M

    crs = raster.crs
    if crs is None:
        return metres  # no CRS: map units are all there is
    if crs.is_geographic:
        centre_lat = (raster.transform * (raster.width / 2, raster.height / 2))[1]
        metres_per_degree = math.pi / 180 * EARTH_RADIUS_M
        return metres / (metres_per_degree * max(0.01, math.cos(math.radians(centre_lat))))
    return metres / float(crs.linear_units_factor[1])
