"""Which raster layers the engine reads itself and which go through QGIS first (FILE, DATA,
RENDERED), and the grid such a layer is read on: its extent in the layer's CRS and a pixel size
counted in metres the way the engine counts it (engine/run/resolution.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsUnitTypes,
)

from .. import qgis_enums
from .inputs import InputProblem, local_raster_source

FILE, DATA, RENDERED = "file", "data", "rendered"
EARTH_RADIUS_M = 6_371_008.8  # as engine/run/resolution.py
DEFAULT_LIMIT_MPX = 100.0  # the dock asks before reading more (settings.EXPORT_LIMIT_MPX)

_IMAGE_TYPES = (Qgis.DataType.ARGB32, Qgis.DataType.ARGB32_Premultiplied)


def layer_kind(layer: QgsRasterLayer | None) -> str:
    """FILE (the engine reads it itself), DATA or RENDERED (read through QGIS first).

    InputProblem (in plain words) when there is no usable raster layer.
    """
    if not isinstance(layer, QgsRasterLayer):
        local_raster_source(layer)  # raises the message for "none" and "not a raster"
    if not layer.isValid() or layer.dataProvider() is None:
        raise InputProblem(
            f"'{layer.name()}' could not be loaded (its source is not available); fix or "
            "remove the layer."
        )
    if layer.providerType() == "gdal":
        try:
            local_raster_source(layer)
            return FILE
        except InputProblem:
            pass  # read over the network: read once through QGIS, not tile by tile many times
    if layer.dataProvider().dataType(1) in _IMAGE_TYPES:
        return RENDERED
    return DATA


def has_fixed_grid(layer: QgsRasterLayer) -> bool:
    """Whether the provider has a size in pixels (database and virtual rasters); web map
    services draw any extent at any resolution and have none."""
    return bool(layer.dataProvider().capabilities() & qgis_enums.RASTER_SIZE_CAPABILITY)


def metres_per_unit(crs: QgsCoordinateReferenceSystem, extent: QgsRectangle) -> tuple[float, float]:
    """Metres per CRS unit along x and y, counted as the engine counts a raster's pixel size
    (engine/raster/resolution.py): linear units by their factor, degrees on the mean Earth sphere at
    the extent's centre latitude."""
    if not crs.isValid():
        raise InputProblem(
            "The layer has no coordinate reference system, so its pixel size in metres is "
            "unknown; set the layer's CRS (Layer Properties > Source)."
        )
    if crs.isGeographic():
        latitude = math.radians(max(-89.9, min(89.9, extent.center().y())))
        per_degree = math.pi / 180 * EARTH_RADIUS_M
        return per_degree * math.cos(latitude), per_degree
    factor = QgsUnitTypes.fromUnitToUnitFactor(crs.mapUnits(), qgis_enums.METERS)
    if "+proj=merc" in crs.toProj():
        # Mercator (Web Mercator tiles above all) stretches the map by 1 / cos(latitude);
        # the engine counts the same way (engine/raster/resolution.py mercator_scale).
        to_lonlat = QgsCoordinateTransform(
            crs, QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance()
        )
        latitude = to_lonlat.transform(extent.center()).y()
        factor *= math.cos(math.radians(max(-89.9, min(89.9, latitude))))
    return factor, factor


def ground_size(
    units_per_pixel: tuple[float, float], crs: QgsCoordinateReferenceSystem, extent: QgsRectangle
) -> float:
    """A pixel size in CRS units as one ground sample distance in metres."""
    mx, my = metres_per_unit(crs, extent)
    return math.sqrt(abs(units_per_pixel[0] * mx * units_per_pixel[1] * my))


def native_units_per_pixel(layer: QgsRasterLayer) -> tuple[float, float] | None:
    """The layer's own pixel size in CRS units: its grid, else its finest tile level (XYZ,
    WMTS), else None (a WMS draws at any resolution)."""
    provider = layer.dataProvider()
    if has_fixed_grid(layer):
        return layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()
    resolutions = [r for r in provider.nativeResolutions() if r > 0]
    if resolutions:
        return min(resolutions), min(resolutions)
    return None


def layer_gsd_m(layer: QgsRasterLayer) -> float | None:
    """The layer's pixel size in metres (see metres_per_unit), None when it has none."""
    native = native_units_per_pixel(layer)
    if native is None:
        return None
    return ground_size(native, layer.crs(), layer.extent())


def format_gsd(metres: float | None) -> str:
    if metres is None:
        return "unknown"
    if metres < 1:
        return f"{metres * 100:.3g} cm"
    return f"{metres:.3g} m"


@dataclass(frozen=True)
class ExportGrid:
    """Where the layer is read: a box in the layer's CRS and its size in pixels."""

    extent: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax
    width: int
    height: int
    gsd_m: float

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def describe(self) -> str:
        return (
            f"{self.width:,} × {self.height:,} px ({self.pixels / 1e6:.1f} Mpx) at "
            f"{format_gsd(self.gsd_m)}"
        )


def export_grid(
    layer: QgsRasterLayer, extent: tuple[float, float, float, float], gsd_m: float | None
) -> ExportGrid:
    """The grid to read `extent` (layer CRS) on: pixels of `gsd_m` metres, or the layer's own
    (None). Aligned to the layer's grid, or for web layers to multiples of the pixel size, so
    that an XYZ layer read at one of its zoom levels gives its tile pixels unchanged."""
    crs = layer.crs()
    box = QgsRectangle(*extent)
    if gsd_m is None:
        units = native_units_per_pixel(layer)
        if units is None:
            raise InputProblem(
                f"'{layer.name()}' has no pixel size of its own; choose a processing "
                "resolution in metres."
            )
    else:
        if not gsd_m > 0:
            raise InputProblem(f"The processing resolution must be above 0 m, not {gsd_m}.")
        mx, my = metres_per_unit(crs, box)
        units = (gsd_m / mx, gsd_m / my)
    rx, ry = units
    if has_fixed_grid(layer):
        ox, oy = layer.extent().xMinimum(), layer.extent().yMaximum()
    else:
        ox, oy = 0.0, 0.0
    eps = 1e-6
    x0 = math.floor((box.xMinimum() - ox) / rx + eps)
    x1 = math.ceil((box.xMaximum() - ox) / rx - eps)
    y0 = math.floor((oy - box.yMaximum()) / ry + eps)
    y1 = math.ceil((oy - box.yMinimum()) / ry - eps)
    width, height = max(1, x1 - x0), max(1, y1 - y0)
    snapped = (ox + x0 * rx, oy - (y0 + height) * ry, ox + (x0 + width) * rx, oy - y0 * ry)
    return ExportGrid(snapped, width, height, ground_size(units, crs, box))
