"""GDAL's Python bindings (osgeo), which a few features need beyond rasterio: polygons,
extents, the model's grid, category names, the sieve filter, batch mosaics. One place imports
them, switches on their exceptions and words their absence."""

from __future__ import annotations

from typing import Any

from .errors import CrossEarthError


def osgeo_modules() -> tuple[Any, Any, Any] | None:
    """(gdal, ogr, osr) with exceptions switched on, or None where the bindings are missing.
    Imported on each call, not at module import: most runs never need them."""
    try:
        from osgeo import gdal, ogr, osr
    except ImportError:
        return None
    gdal.UseExceptions()
    ogr.UseExceptions()
    osr.UseExceptions()
    return gdal, ogr, osr


def missing_osgeo_message(purpose: str) -> str:
    """The one line that says `purpose` needs the bindings and how to get them."""
    return (
        f"{purpose} needs GDAL's Python bindings (osgeo); install python3-gdal or the GDAL "
        "package of your Python distribution"
    )


def require_osgeo(purpose: str) -> tuple[Any, Any, Any]:
    """(gdal, ogr, osr), or a one-line CrossEarthError naming `purpose` ("polygon output")."""
    modules = osgeo_modules()
    if modules is None:
        raise CrossEarthError(
            missing_osgeo_message(purpose), code="environment.osgeo", purpose=purpose
        )
    return modules
