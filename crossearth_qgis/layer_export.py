"""Reading a raster layer that is not a local file (web map, database, virtual raster) into a
temporary GeoTIFF that the engine can segment.

The engine reads raster files with GDAL; a WMS/WMTS/XYZ layer or a QGIS-only provider gives its
pixels only through QGIS. `export_layer` reads such a layer over one extent at the processing
resolution, block by block through a clone of the layer's data provider (so it may run in a
task's thread while the canvas keeps drawing the layer), into a hidden temporary file that is
renamed when complete and removed on cancel or error. Two kinds of layer:

- "rendered": providers that serve images (ARGB32: WMS, WMTS, XYZ, ArcGIS MapServer) give the
  image's red, green and blue as three 8-bit bands, its transparency as the nodata mask;
- "data": other providers give their band values unchanged, with their nodata values.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from osgeo import gdal
from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterBlock,
    QgsRasterBlockFeedback,
    QgsRasterDataProvider,
    QgsRasterLayer,
    QgsRectangle,
    QgsUnitTypes,
)

from . import qgis_enums
from .engine_env import Interpreter
from .engine_errors import EngineError
from .engine_task import EngineTask
from .inputs import InputProblem, local_raster_source
from .worker import TEMP_PREFIX

FILE, DATA, RENDERED = "file", "data", "rendered"
BLOCK = 512  # pixels per side of one read: a few web tiles, a few MB of memory
RGB_NAMES = ["red", "green", "blue"]
EARTH_RADIUS_M = 6_371_008.8  # as engine/resolution.py
DEFAULT_LIMIT_MPX = 100.0  # the dock asks before reading more (settings.EXPORT_LIMIT_MPX)

_IMAGE_TYPES = (Qgis.DataType.ARGB32, Qgis.DataType.ARGB32_Premultiplied)
# QGIS data type -> (numpy dtype, GDAL type) for the band values of "data" layers.
_TYPES = {
    Qgis.DataType.Byte: (np.uint8, gdal.GDT_Byte),
    Qgis.DataType.UInt16: (np.uint16, gdal.GDT_UInt16),
    Qgis.DataType.Int16: (np.int16, gdal.GDT_Int16),
    Qgis.DataType.UInt32: (np.uint32, gdal.GDT_UInt32),
    Qgis.DataType.Int32: (np.int32, gdal.GDT_Int32),
    Qgis.DataType.Float32: (np.float32, gdal.GDT_Float32),
    Qgis.DataType.Float64: (np.float64, gdal.GDT_Float64),
}
_BAND_NAME = re.compile(r"^Band 0*\d+: (.+)$")

ProgressCallback = Callable[[float, str], None]


class ExportError(Exception):
    """Reading the layer failed; `str()` says what and what to do."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class ExportCancelled(ExportError):
    def __init__(self) -> None:
        super().__init__("Cancelled; no output was written.")


# --- which layers, which grid ----------------------------------------------------------------


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
    (engine/resolution.py): linear units by their factor, degrees on the mean Earth sphere at
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
        # the engine counts the same way (engine/resolution.py mercator_scale).
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
            if provider.dataType(band) not in _TYPES:
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


# --- reading ---------------------------------------------------------------------------------


def _values(block: QgsRasterBlock, dtype: type, width: int, height: int) -> np.ndarray:
    data = bytes(block.data())
    values = np.frombuffer(data, dtype=dtype)
    if values.size != width * height:
        raise ExportError(f"the layer returned {values.size} values for {width} × {height} px")
    return values.reshape(height, width)


def _bitmap_nodata(block: QgsRasterBlock, width: int, height: int) -> np.ndarray:
    """Pixels flagged as nodata without a nodata value (outside the provider's extent); rare,
    so read pixel by pixel."""
    missing = np.zeros((height, width), dtype=bool)
    if block.hasNoData() and not block.hasNoDataValue():
        for row in range(height):
            for col in range(width):
                missing[row, col] = block.isNoData(row, col)
    return missing


def _rgb_and_mask(argb: np.ndarray, premultiplied: bool) -> tuple[list[np.ndarray], np.ndarray]:
    alpha = ((argb >> 24) & 0xFF).astype(np.uint8)
    channels = [((argb >> shift) & 0xFF).astype(np.uint8) for shift in (16, 8, 0)]
    if premultiplied:
        scale = np.where(alpha > 0, 255.0 / np.maximum(alpha, 1), 0.0)
        channels = [np.clip(np.rint(c * scale), 0, 255).astype(np.uint8) for c in channels]
    return channels, np.where(alpha > 0, 255, 0).astype(np.uint8)


def _blocks(width: int, height: int) -> list[tuple[int, int, int, int]]:
    return [
        (col, row, min(BLOCK, width - col), min(BLOCK, height - row))
        for row in range(0, height, BLOCK)
        for col in range(0, width, BLOCK)
    ]


def _check(code: int, path: Path) -> None:
    if code != 0:
        raise ExportError(
            f"Writing {path} failed ({gdal.GetLastErrorMsg() or 'GDAL error'}); check the free "
            "space and permissions of the temporary folder."
        )


def _remove(path: Path) -> None:
    for candidate in (path, Path(f"{path}.msk"), Path(f"{path}.aux.xml")):
        try:
            candidate.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            pass  # Processing's temporary folder is removed when QGIS closes


def export_layer(
    plan: ExportPlan,
    on_progress: ProgressCallback | None = None,
    is_cancelled: Callable[[], bool] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> Path:
    """Reads the planned grid into `plan.destination`, block by block; returns that path.

    Writes to a hidden temporary name beside it (`.crossearth-tmp-<hex>-<name>`), renamed when
    complete; on cancel (ExportCancelled) or any error (ExportError) nothing is left. Failed
    web requests leave transparent (nodata) pixels and are reported through `on_warning`; a
    layer that gives no pixel at all is an error.
    """
    destination = plan.destination
    if destination.exists():
        raise ExportError(f"{destination} exists already; nothing was read.")
    temporary = destination.with_name(f"{TEMP_PREFIX}{secrets.token_hex(4)}-{destination.name}")
    layout = _layout(plan)
    blocks = _blocks(plan.grid.width, plan.grid.height)
    complete = False
    dataset = None
    errors: list[str] = []
    valid = 0
    try:
        dataset = _create_geotiff(plan, layout, temporary)
        mask_band = dataset.GetRasterBand(1).GetMaskBand()
        for number, (col, row, width, height) in enumerate(blocks, start=1):
            if is_cancelled is not None and is_cancelled():
                raise ExportCancelled()
            channels, mask, block_errors = _read_block(plan, layout, col, row, width, height)
            errors += [e for e in block_errors if e not in errors]
            for index, values in enumerate(channels):
                _check(dataset.GetRasterBand(index + 1).WriteArray(values, col, row), temporary)
            _check(mask_band.WriteArray(mask, col, row), temporary)
            valid += int(np.count_nonzero(mask))
            if on_progress is not None:
                message = f"reading '{plan.layer_name}': block {number}/{len(blocks)}"
                on_progress(number / len(blocks), message)
        if valid == 0:
            reason = f" ({errors[0]})" if errors else ""
            raise ExportError(
                f"'{plan.layer_name}' gave no image over the chosen extent{reason}; check that "
                "the layer shows imagery there and that its service answers."
            )
        dataset.FlushCache()
        dataset = None  # closes the file: everything is written now
        if destination.exists():
            raise ExportError(f"{destination} appeared while reading; nothing was replaced.")
        os.rename(temporary, destination)
        complete = True
    except RuntimeError as exc:  # GDAL with exceptions enabled by another plugin
        raise ExportError(
            f"Writing {temporary} failed ({exc}); check the free space and permissions of the "
            "temporary folder."
        ) from None
    finally:
        dataset = None
        if not complete:
            _remove(temporary)
    if errors and on_warning is not None:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        on_warning(
            f"Some requests to '{plan.layer_name}' failed, their area has no result: "
            f"{errors[0]}{more}"
        )
    return destination


@dataclass(frozen=True)
class _Layout:
    """The exported file's bands: RGB bytes for a rendered layer, else the layer's bands."""

    rendered: bool
    count: int
    gdal_type: int
    premultiplied: bool  # a rendered layer's ARGB pixels come premultiplied by alpha


def _layout(plan: ExportPlan) -> _Layout:
    provider = plan.provider
    if plan.kind == RENDERED:
        premultiplied = provider.dataType(1) == Qgis.DataType.ARGB32_Premultiplied
        return _Layout(True, 3, gdal.GDT_Byte, premultiplied)
    count = len(plan.band_names)
    types = {provider.dataType(b) for b in range(1, count + 1)}
    gdal_type = _TYPES[types.pop()][1] if len(types) == 1 else gdal.GDT_Float64
    return _Layout(False, count, gdal_type, False)


def _pixel_size(grid: ExportGrid) -> tuple[float, float]:
    return (
        (grid.extent[2] - grid.extent[0]) / grid.width,
        (grid.extent[3] - grid.extent[1]) / grid.height,
    )


def _create_geotiff(plan: ExportPlan, layout: _Layout, path: Path) -> gdal.Dataset:
    """The empty tiled GeoTIFF on the plan's grid, with band names, nodata and one internal
    mask for all bands (transparent and nodata pixels, which the engine skips)."""
    rx, ry = _pixel_size(plan.grid)
    options = ["TILED=YES", "COMPRESS=LZW", "BIGTIFF=IF_SAFER"]
    if layout.rendered:
        options.append("PHOTOMETRIC=RGB")
    dataset = gdal.GetDriverByName("GTiff").Create(
        str(path), plan.grid.width, plan.grid.height, layout.count, layout.gdal_type, options
    )
    if dataset is None:
        _check(1, path)
    try:
        dataset.SetGeoTransform((plan.grid.extent[0], rx, 0.0, plan.grid.extent[3], 0.0, -ry))
        dataset.SetProjection(plan.crs_wkt)
        for index in range(layout.count):
            band = dataset.GetRasterBand(index + 1)
            if plan.band_names[index]:
                band.SetDescription(plan.band_names[index])
            if layout.rendered:
                band.SetColorInterpretation(gdal.GCI_RedBand + index)
            elif plan.nodata[index] is not None:
                band.SetNoDataValue(float(plan.nodata[index]))
        # A per-dataset mask replaces the nodata values for GDAL readers.
        gdal.SetThreadLocalConfigOption("GDAL_TIFF_INTERNAL_MASK", "YES")
        try:
            _check(dataset.CreateMaskBand(gdal.GMF_PER_DATASET), path)
        finally:
            gdal.SetThreadLocalConfigOption("GDAL_TIFF_INTERNAL_MASK", None)
    except BaseException:
        dataset = None  # closed before the caller removes the file
        raise
    return dataset


def _read_block(
    plan: ExportPlan, layout: _Layout, col: int, row: int, width: int, height: int
) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """One block of the layer: its bands, its mask (0: no image) and the failed requests."""
    provider = plan.provider
    rx, ry = _pixel_size(plan.grid)
    xmin, ymax = plan.grid.extent[0], plan.grid.extent[3]
    box = QgsRectangle(
        xmin + col * rx,
        ymax - (row + height) * ry,
        xmin + (col + width) * rx,
        ymax - row * ry,
    )
    feedback = QgsRasterBlockFeedback()
    if layout.rendered:
        block = _read(provider, 1, box, width, height, feedback, plan.layer_name)
        argb = _values(block, np.uint32, width, height)
        channels, mask = _rgb_and_mask(argb, layout.premultiplied)
        return channels, mask, feedback.errors()
    channels, mask = [], np.full((height, width), 255, dtype=np.uint8)
    for band_number in range(1, layout.count + 1):
        block = _read(provider, band_number, box, width, height, feedback, plan.layer_name)
        dtype = _TYPES[provider.dataType(band_number)][0]
        values = _values(block, dtype, width, height)
        invalid = _bitmap_nodata(block, width, height)
        nodata = plan.nodata[band_number - 1]
        if nodata is not None:
            invalid |= values == nodata
        if values.dtype.kind == "f":
            invalid |= ~np.isfinite(values)
        mask[invalid] = 0
        channels.append(values)
    return channels, mask, feedback.errors()


def _read(
    provider: QgsRasterDataProvider,
    band: int,
    box: QgsRectangle,
    width: int,
    height: int,
    feedback: QgsRasterBlockFeedback,
    layer_name: str,
) -> QgsRasterBlock:
    block = provider.block(band, box, width, height, feedback)
    if block is None or not block.isValid():
        error = provider.error()
        reason = error.summary() if error and not error.isEmpty() else "no data returned"
        raise ExportError(f"Reading '{layer_name}' failed: {reason}.")
    return block


def remove_export(plan: ExportPlan) -> None:
    """Deletes the exported input after the engine ran (it was made by this run)."""
    _remove(plan.destination)


# --- running as a task -------------------------------------------------------------------------


class ExportSegmentTask(EngineTask):
    """Reads the layer into the planned GeoTIFF, then segments it: one task, one progress bar
    (the first EXPORT_SHARE for reading), one cancel. The exported input is deleted at the
    end, whatever happened."""

    EXPORT_SHARE = 0.3

    def __init__(
        self,
        description: str,
        args: list[str],
        interpreter: Interpreter,
        plan: ExportPlan,
        warm: bool = False,
    ) -> None:
        super().__init__(description, args, interpreter, warm=warm)
        self.plan = plan
        self.export_warnings: list[str] = []

    def _export_progress(self, fraction: float, message: str) -> None:
        share = fraction * self.EXPORT_SHARE
        self.setProgress(share * 100)
        self.statusChanged.emit(f"{share * 100:.0f}% · {message}")

    def _progress(self, fraction: float, message: str) -> None:
        super()._progress(self.EXPORT_SHARE + (1 - self.EXPORT_SHARE) * fraction, message)

    def run(self) -> bool:
        try:
            export_layer(
                self.plan, self._export_progress, self.isCanceled, self.export_warnings.append
            )
        except ExportCancelled:
            self.cancelled = True
            return False
        except ExportError as exc:
            self.error = exc
            return False
        except Exception as exc:  # a bug must reach the log, not vanish in the task thread
            self.error = EngineError(
                f"Unexpected problem reading '{self.plan.layer_name}': {exc}",
                traceback.format_exc(),
            )
            return False
        try:
            return super().run()
        finally:
            remove_export(self.plan)
