"""The plan for reading a layer that is not a raster file (see export.py): its provider's
clone, the grid, the bands with their names and nodata, and the temporary GeoTIFF to write."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from osgeo import gdal
from qgis.core import (
    Qgis,
    QgsProcessingUtils,
    QgsRasterDataProvider,
    QgsRasterLayer,
)

from .. import qgis_enums
from .grid import FILE, RENDERED, ExportGrid, export_grid, layer_kind
from .inputs import InputProblem

RGB_NAMES = ["red", "green", "blue"]
# QGIS data type -> (numpy dtype, GDAL type) for the band values of "data" layers.
BAND_TYPES = {
    Qgis.DataType.Byte: (np.uint8, gdal.GDT_Byte),
    Qgis.DataType.UInt16: (np.uint16, gdal.GDT_UInt16),
    Qgis.DataType.Int16: (np.int16, gdal.GDT_Int16),
    Qgis.DataType.UInt32: (np.uint32, gdal.GDT_UInt32),
    Qgis.DataType.Int32: (np.int32, gdal.GDT_Int32),
    Qgis.DataType.Float32: (np.float32, gdal.GDT_Float32),
    Qgis.DataType.Float64: (np.float64, gdal.GDT_Float64),
}
_BAND_NAME = re.compile(r"^Band 0*\d+: (.+)$")


def export_destination(layer_name: str, folder: Path | None = None) -> Path:
    """A new GeoTIFF name in Processing's temporary folder (deleted when QGIS closes)."""
    folder = Path(folder or QgsProcessingUtils.tempFolder())
    safe = re.sub(r"[^\w.-]+", "_", layer_name).strip("_") or "layer"
    stem = f"{safe}_{time.strftime('%Y%m%d_%H%M%S')}_input"
    candidate, number = folder / f"{stem}.tif", 1
    while candidate.exists():
        number += 1
        candidate = folder / f"{stem}_{number}.tif"
    return candidate


@dataclass
class ExportPlan:
    """Everything a task needs to read the layer in its own thread."""

    provider: QgsRasterDataProvider  # a clone, used by one thread only
    layer_name: str
    kind: str
    crs_wkt: str
    grid: ExportGrid
    destination: Path
    band_names: list[str] = field(default_factory=list)
    nodata: list[float | None] = field(default_factory=list)

    @property
    def pixels(self) -> int:
        return self.grid.pixels

    def describe(self) -> str:
        return self.grid.describe()


def plan_export(
    layer: QgsRasterLayer,
    extent: tuple[float, float, float, float],
    gsd_m: float | None,
    destination: Path | None = None,
) -> ExportPlan:
    """Plans reading `layer` over `extent` (layer CRS) at `gsd_m` (None: the layer's pixels).

    Call on the thread that owns the layer (the main thread, or processAlgorithm's); the plan
    holds a clone of the provider for the thread that reads.
    """
    kind = layer_kind(layer)
    if kind == FILE:
        raise InputProblem(f"'{layer.name()}' is a raster file; the engine reads it itself.")
    provider = layer.dataProvider()
    grid = export_grid(layer, extent, gsd_m)
    if kind == RENDERED:
        names, nodata = list(RGB_NAMES), [None, None, None]
    else:
        names, nodata = [], []
        for band in range(1, provider.bandCount() + 1):
            if provider.dataType(band) not in BAND_TYPES:
                raise InputProblem(
                    f"Band {band} of '{layer.name()}' holds complex or unknown values, which "
                    "CrossEarth cannot segment."
                )
            match = _BAND_NAME.match(provider.generateBandName(band))
            names.append(match.group(1) if match else "")
            has = provider.sourceHasNoDataValue(band) and provider.useSourceNoDataValue(band)
            nodata.append(provider.sourceNoDataValue(band) if has else None)
    wkt = layer.crs().toWkt(qgis_enums.WKT_PREFERRED_GDAL)
    return ExportPlan(
        provider=provider.clone(),
        layer_name=layer.name(),
        kind=kind,
        crs_wkt=wkt,
        grid=grid,
        destination=Path(destination or export_destination(layer.name())),
        band_names=names,
        nodata=nodata,
    )


def check_rendered_bands(
    layer_name: str, model_name: str, needed: list[str], bands: list[int] | None
) -> None:
    """A web map layer gives red, green and blue only: the model and Bands must fit that."""
    if len(needed) > 3:
        raise InputProblem(
            f"'{layer_name}' is a web map layer: it gives only the red, green and blue of its "
            f"image, but the model '{model_name}' needs {len(needed)} bands "
            f"({', '.join(needed)}). Choose a model for RGB imagery."
        )
    if bands:
        wrong = [b for b in bands if not 1 <= b <= 3]
        if wrong:
            raise InputProblem(
                f"Band {', '.join(map(str, wrong))} does not exist: a web map layer gives "
                "bands 1 to 3 (red, green, blue)."
            )
        if len(bands) != len(needed):
            raise InputProblem(
                f"Bands lists {len(bands)} band(s) but the model '{model_name}' takes "
                f"{len(needed)} ({', '.join(needed)})."
            )
