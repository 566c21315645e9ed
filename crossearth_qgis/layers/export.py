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

Which layers need this and the grid they are read on are in grid.py; what one read needs (the
provider's clone, the bands, the destination) is planned in export_plan.py.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import gdal
from qgis.core import (
    Qgis,
    QgsRasterBlock,
    QgsRasterBlockFeedback,
    QgsRasterDataProvider,
    QgsRectangle,
)

from ..environment.engine_env import Interpreter
from ..worker.client import temporary_name
from ..worker.engine_errors import EngineError
from ..worker.engine_task import EngineTask
from .export_plan import BAND_TYPES, ExportPlan
from .grid import RENDERED, ExportGrid

BLOCK = 512  # pixels per side of one read: a few web tiles, a few MB of memory

ProgressCallback = Callable[[float, str], None]


class ExportError(Exception):
    """Reading the layer failed; `str()` says what and what to do."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class ExportCancelled(ExportError):
    def __init__(self) -> None:
        super().__init__("Cancelled; no output was written.")


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

    Writes to a hidden temporary name beside it (`.crossearth-tmp-<run>-<hex>-<name>`), renamed when
    complete; on cancel (ExportCancelled) or any error (ExportError) nothing is left. Failed
    web requests leave transparent (nodata) pixels and are reported through `on_warning`; a
    layer that gives no pixel at all is an error.
    """
    destination = plan.destination
    if destination.exists():
        raise ExportError(f"{destination} exists already; nothing was read.")
    temporary = temporary_name(destination)
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
    gdal_type = BAND_TYPES[types.pop()][1] if len(types) == 1 else gdal.GDT_Float64
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
        dtype = BAND_TYPES[provider.dataType(band_number)][0]
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
