"""Segmenting part of a raster: a map extent becomes a pixel window and a VRT over it."""

from __future__ import annotations

import math
from pathlib import Path

import rasterio
from rasterio.windows import Window, from_bounds

from engine.errors import CrossEarthError
from engine.raster.vrt import resampled_vrt, window_vrt

Extent = tuple[float, float, float, float]


def parse_extent(text: str) -> Extent:
    """'XMIN,YMIN,XMAX,YMAX' in the raster's CRS."""
    try:
        xmin, ymin, xmax, ymax = (float(part) for part in text.split(","))
    except ValueError:
        raise CrossEarthError(
            f"extent '{text}' is not valid; give XMIN,YMIN,XMAX,YMAX in the raster's CRS"
        ) from None
    if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)):
        raise CrossEarthError(
            f"extent '{text}' holds a value that is not a finite number; give XMIN,YMIN,XMAX,YMAX "
            "as numbers in the raster's CRS"
        )
    if not (xmax > xmin and ymax > ymin):
        raise CrossEarthError(f"extent '{text}': XMAX must exceed XMIN and YMAX must exceed YMIN")
    return xmin, ymin, xmax, ymax


def extent_window(dataset: rasterio.DatasetReader, extent: Extent) -> Window:
    """Pixels touched by the extent (rounded outwards), clipped to the raster."""
    if not all(math.isfinite(v) for v in extent):
        raise CrossEarthError(
            f"the extent {extent} holds a value that is not a finite number; give finite "
            "coordinates in the raster's CRS"
        )
    window = from_bounds(*extent, transform=dataset.transform)
    col0 = max(0, math.floor(window.col_off + 1e-9))
    row0 = max(0, math.floor(window.row_off + 1e-9))
    col1 = min(dataset.width, math.ceil(window.col_off + window.width - 1e-9))
    row1 = min(dataset.height, math.ceil(window.row_off + window.height - 1e-9))
    if col1 <= col0 or row1 <= row0:
        left, bottom, right, top = dataset.bounds
        raise CrossEarthError(
            f"the extent {extent} does not overlap the raster ({left:g}, {bottom:g}, {right:g}, "
            f"{top:g}); give the extent in the raster's CRS"
        )
    return Window(col0, row0, col1 - col0, row1 - row0)


def subset_vrt(source: Path | str, window: Window, folder: Path) -> Path:
    """A VRT of `window` of `source` (values, nodata, masks and band names carried over)."""
    return window_vrt(source, window, folder / "subset.vrt")


def warp_to_gsd(
    source: Path | str, dataset: rasterio.DatasetReader, resolution, folder: Path
) -> Path:
    """A VRT of `source` resampled to the processing GSD of `resolution` (same CRS): area
    average when coarsening, bilinear when refining."""
    from engine.raster.resolution import EARTH_RADIUS_M

    target_m = resolution.processing_gsd_m
    if dataset.crs.is_geographic:
        centre_lat = (dataset.transform * (dataset.width / 2, dataset.height / 2))[1]
        metres_per_degree = math.pi / 180 * EARTH_RADIUS_M
        x_res = target_m / (metres_per_degree * math.cos(math.radians(centre_lat)))
        y_res = target_m / metres_per_degree
    else:
        x_res = y_res = target_m / float(dataset.crs.linear_units_factor[1])
    resampling = "average" if resolution.factor < 1 else "bilinear"
    return resampled_vrt(source, x_res, y_res, resampling, folder / "processing_grid.vrt")
