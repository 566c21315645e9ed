"""Streaming GeoTIFF output: rows arrive top to bottom, the file appears only when complete."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from .errors import CrossEarthError
from .files import give_ordinary_permissions

log = logging.getLogger(__name__)

BLOCK = 256
CONFIDENCE_NODATA = {"float32": -1.0, "uint8": 255}


def check_output_path(output: Path, inputs: list[Path]) -> Path:
    """Validates the destination before any work starts; returns the absolute path."""
    output = Path(output).expanduser().absolute()
    folder = output.parent
    if not folder.is_dir():
        raise CrossEarthError(f"output folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CrossEarthError(f"output folder {folder} is not writable; choose another location")
    if output.is_dir():
        raise CrossEarthError(f"output {output} is a folder; give a file name such as out.tif")
    for source in inputs:
        if source.exists() and output.exists() and output.samefile(source):
            raise CrossEarthError(f"output {output} is the input raster; choose another name")
        if output == source.absolute():
            raise CrossEarthError(f"output {output} is the input raster; choose another name")
    return output


def overview_factors(height: int, width: int, smallest: int = BLOCK) -> list[int]:
    factors = []
    factor = 2
    while max(height, width) / factor >= smallest / 2 and max(height, width) > smallest:
        factors.append(factor)
        factor *= 2
    return factors


class StreamingGeoTiff:
    """One-band tiled, DEFLATE-compressed GeoTIFF written in full block rows.

    Rows are buffered until a whole row of 256 x 256 blocks is ready, so every compressed block
    is written exactly once. The data goes to a hidden temporary file beside the destination;
    `commit` builds overviews and renames it into place, `discard` removes it.
    """

    def __init__(
        self,
        destination: Path,
        profile: dict[str, Any],
        dtype: str,
        nodata: float,
        *,
        colormap: dict[int, tuple[int, int, int, int]] | None = None,
        band_tags: dict[str, str] | None = None,
        dataset_tags: dict[str, str] | None = None,
        description: str = "",
        overview_resampling: Resampling = Resampling.mode,
        category_names: list[str] | None = None,
    ) -> None:
        self.destination = destination
        self.height = profile["height"]
        self.width = profile["width"]
        self._resampling = overview_resampling
        self._category_names = category_names
        self.dtype = np.dtype(dtype)
        self.nodata = nodata
        fd, temp_name = tempfile.mkstemp(
            prefix=f".{destination.stem}.", suffix=".partial.tif", dir=destination.parent
        )
        os.close(fd)
        self.temp_path = Path(temp_name)
        give_ordinary_permissions(self.temp_path)
        tiled = self.width >= BLOCK and self.height >= BLOCK
        creation = {
            "driver": "GTiff",
            "height": self.height,
            "width": self.width,
            "count": 1,
            "dtype": dtype,
            "nodata": nodata,
            "crs": profile.get("crs"),
            "transform": profile["transform"],
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
        }
        if tiled:
            creation.update(tiled=True, blockxsize=BLOCK, blockysize=BLOCK)
        else:  # small rasters: compressed strips of up to 256 rows
            creation.update(blockysize=min(BLOCK, self.height))
        self._rows_per_write = min(BLOCK, self.height)
        try:
            self._dataset = rasterio.open(self.temp_path, "w", **creation)
        except Exception:
            self.temp_path.unlink(missing_ok=True)
            raise
        if colormap:
            self._dataset.write_colormap(1, colormap)
        if band_tags:
            self._dataset.update_tags(1, **band_tags)
        if dataset_tags:
            self._dataset.update_tags(**dataset_tags)
        if description:
            self._dataset.set_band_description(1, description)
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self.next_row = 0

    def write_rows(self, rows: np.ndarray) -> None:
        """Appends rows [next_row, next_row + len(rows)) of the band."""
        self._pending.append(rows.astype(self.dtype, copy=False))
        self._pending_rows += rows.shape[0]
        if self.next_row + self._pending_rows >= self.height or (
            self._pending_rows >= self._rows_per_write
        ):
            self._flush(final=self.next_row + self._pending_rows >= self.height)

    def _flush(self, final: bool) -> None:
        block = np.concatenate(self._pending, axis=0)
        step = self._rows_per_write
        count = block.shape[0] if final else block.shape[0] // step * step
        if count:
            window = Window(0, self.next_row, self.width, count)
            self._dataset.write(block[:count], 1, window=window)
            self.next_row += count
        rest = block[count:]
        self._pending = [rest] if rest.shape[0] else []
        self._pending_rows = rest.shape[0]

    def commit(self) -> Path:
        if self._pending_rows:
            self._flush(final=True)
        if self.next_row != self.height:
            raise RuntimeError(f"only {self.next_row} of {self.height} rows were written")
        factors = overview_factors(self.height, self.width)
        with rasterio.Env(COMPRESS_OVERVIEW="DEFLATE", GDAL_TIFF_OVR_BLOCKSIZE=str(BLOCK)):
            if factors:
                self._dataset.build_overviews(factors, self._resampling)
                self._dataset.update_tags(ns="rio_overview", resampling=self._resampling.name)
            self._dataset.close()
        aux_files = self._write_category_names()
        os.replace(self.temp_path, self.destination)
        destination_aux = Path(f"{self.destination}.aux.xml")
        destination_aux.unlink(missing_ok=True)  # metadata of an earlier file of that name
        for aux in aux_files:
            os.replace(aux, destination_aux)
        return self.destination

    def _write_category_names(self) -> list[Path]:
        """Category names live in GDAL's .aux.xml beside a GeoTIFF; written when osgeo is
        available (the class names are also embedded in the TIFF's own metadata tags)."""
        if not self._category_names:
            return []
        try:
            from osgeo import gdal
        except ImportError:
            return []
        gdal.UseExceptions()
        handle = gdal.Open(str(self.temp_path), gdal.GA_ReadOnly)
        handle.GetRasterBand(1).SetCategoryNames(self._category_names)
        handle = None  # closing flushes the .aux.xml
        aux = Path(f"{self.temp_path}.aux.xml")
        return [aux] if aux.exists() else []

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._dataset.close()
        for path in (self.temp_path, Path(f"{self.temp_path}.aux.xml")):
            path.unlink(missing_ok=True)


def class_raster(
    destination: Path,
    profile: dict[str, Any],
    class_names: list[str],
    colors: list[tuple[int, int, int]],
    model_tags: dict[str, str],
) -> StreamingGeoTiff:
    """The class raster: uint8 (uint16 beyond 255 classes), nodata the first unused value."""
    dtype = "uint8" if len(class_names) <= 255 else "uint16"
    nodata = 255 if dtype == "uint8" else 65535
    colormap = {i: (*c, 255) for i, c in enumerate(colors)} if dtype == "uint8" else None
    if colormap is not None:
        colormap[nodata] = (0, 0, 0, 0)
    band_tags = {"CLASS_NAMES": json.dumps(class_names)}
    band_tags.update({f"CLASS_{i}": name for i, name in enumerate(class_names)})
    return StreamingGeoTiff(
        destination,
        profile,
        dtype,
        nodata,
        colormap=colormap,
        band_tags=band_tags,
        dataset_tags=model_tags,
        description="class",
        category_names=class_names,
    )


def confidence_raster(
    destination: Path, profile: dict[str, Any], dtype: str, model_tags: dict[str, str]
) -> StreamingGeoTiff:
    """Per-pixel confidence: float32 0..1, or uint8 percent 0..100."""
    if dtype not in CONFIDENCE_NODATA:
        raise CrossEarthError(f"confidence type '{dtype}' is not valid; use float32 or uint8")
    unit = "fraction 0..1" if dtype == "float32" else "percent 0..100"
    return StreamingGeoTiff(
        destination,
        profile,
        dtype,
        CONFIDENCE_NODATA[dtype],
        band_tags={"CONFIDENCE_UNIT": unit},
        dataset_tags=model_tags,
        description=f"confidence ({unit})",
        overview_resampling=Resampling.average,
    )
