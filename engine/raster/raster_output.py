"""Streaming GeoTIFF output: rows arrive top to bottom, the file appears only when complete."""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from engine.errors import CrossEarthError
from engine.files import (
    announce_temporary,
    create_temporary_file,
    publish,
    remove_temporary,
    write_error,
)
from engine.option_values import CONFIDENCE_NODATA

log = logging.getLogger(__name__)

BLOCK = 256


def overview_factors(height: int, width: int, smallest: int = BLOCK) -> list[int]:
    """Overview levels (2, 4, 8, ...) until the smallest is about one `smallest`-pixel block."""
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
    `finish` builds overviews and proves the file complete by reading it back, `publish` renames
    it (and its .aux.xml) into place, `discard` removes what it made. Every write and close is
    checked: a full disk or a denied rename is a one-line CrossEarthError, never a short file.
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
        self.temp_path = create_temporary_file(destination)
        self._aux_temp: Path | None = None
        self._finished = False
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
        self._dataset: Any = None
        try:
            with warnings.catch_warnings():
                # A raster without georeferencing gives an output without it; the run has
                # already said so once.
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._dataset = rasterio.open(self.temp_path, "w", **creation)
            if colormap:
                self._dataset.write_colormap(1, colormap)
            if band_tags:
                self._dataset.update_tags(1, **band_tags)
            if dataset_tags:
                self._dataset.update_tags(**dataset_tags)
            if description:
                self._dataset.set_band_description(1, description)
        except (RasterioError, OSError) as exc:
            self.discard()
            raise write_error(destination, exc) from None
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
            try:
                self._dataset.write(block[:count], 1, window=window)
            except (RasterioError, OSError) as exc:
                raise write_error(self.destination, exc) from None
            self.next_row += count
        rest = block[count:]
        self._pending = [rest] if rest.shape[0] else []
        self._pending_rows = rest.shape[0]

    def finish(self, postprocess: Callable[[Path], None] | None = None) -> None:
        """Writes the last rows, applies `postprocess(path)` to the complete band (e.g. the
        sieve filter), builds the overviews, and reads the file back whole: GDAL reports some
        write failures only as a log line at close (GDAL < 3.7), so the read-back is what
        proves the file complete."""
        if self._pending_rows:
            self._flush(final=True)
        if self.next_row != self.height:
            raise RuntimeError(f"only {self.next_row} of {self.height} rows were written")
        factors = overview_factors(self.height, self.width)
        try:
            self._dataset.close()
            if postprocess is not None:
                postprocess(self.temp_path)
            if factors:
                with (
                    rasterio.Env(COMPRESS_OVERVIEW="DEFLATE", GDAL_TIFF_OVR_BLOCKSIZE=str(BLOCK)),
                    rasterio.open(self.temp_path, "r+") as dataset,
                ):
                    dataset.build_overviews(factors, self._resampling)
                    dataset.update_tags(ns="rio_overview", resampling=self._resampling.name)
        except (RasterioError, OSError) as exc:
            raise write_error(self.destination, exc) from None
        self._verify(len(factors))
        self._aux_temp = self._write_category_names()
        self._finished = True

    def _verify(self, overviews: int) -> None:
        try:
            with rasterio.open(self.temp_path) as check:
                if (check.height, check.width) != (self.height, self.width):
                    raise RasterioError(f"size {check.height} x {check.width}")
                if len(check.overviews(1)) != overviews:
                    raise RasterioError("overviews missing")
                for top in range(0, self.height, BLOCK):
                    rows = min(BLOCK, self.height - top)
                    check.read(1, window=Window(0, top, self.width, rows))
                if overviews:  # the smallest overview was written last
                    check.read(1, out_shape=(1, 1, 1))
        except (RasterioError, OSError) as exc:
            raise CrossEarthError(
                f"{self.destination} could not be written completely (reading it back failed: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); the disk may "
                "be full: free some space or choose another folder"
            ) from None

    def _write_category_names(self) -> Path | None:
        """Category names live in GDAL's .aux.xml beside a GeoTIFF (its PAM file, which every
        GDAL reads); written here as that XML (the class names are also embedded in the TIFF's
        own metadata tags)."""
        if not self._category_names:
            return None
        aux = announce_temporary(Path(f"{self.temp_path}.aux.xml"))
        try:
            root = _pam_document(aux)
            band = next(
                (b for b in root.iter("PAMRasterBand") if b.get("band") == "1"), None
            ) or ElementTree.SubElement(root, "PAMRasterBand", band="1")
            for old in band.findall("CategoryNames"):
                band.remove(old)
            names = ElementTree.SubElement(band, "CategoryNames")
            for name in self._category_names:
                ElementTree.SubElement(names, "Category").text = name
            ElementTree.ElementTree(root).write(aux, encoding="utf-8", xml_declaration=False)
        except (OSError, ElementTree.ParseError) as exc:
            raise write_error(Path(f"{self.destination}.aux.xml"), exc) from None
        _check_aux(aux, self._category_names, Path(f"{self.destination}.aux.xml"))
        return aux

    def publish(self) -> Path:
        """Renames the finished file (and its .aux.xml) into place."""
        if not self._finished:
            raise RuntimeError("publish() before finish()")
        destination_aux = Path(f"{self.destination}.aux.xml")
        publish(self.temp_path, self.destination)
        if self._aux_temp is not None:
            publish(self._aux_temp, destination_aux)
        elif destination_aux.exists():
            # The sidecar of the file just replaced (the caller was allowed to replace both):
            # its metadata would be read as this file's.
            destination_aux.unlink()
        return self.destination

    def discard(self) -> None:
        """Closes and removes the temporary file and its side file; the destination is untouched."""
        if self._dataset is not None:
            with contextlib.suppress(Exception):
                self._dataset.close()
        for path in (self.temp_path, Path(f"{self.temp_path}.aux.xml")):
            remove_temporary(path)


def _pam_document(aux: Path) -> ElementTree.Element:
    """The PAM file GDAL already wrote beside the temporary file (metadata it could not keep
    in the TIFF), or a new one."""
    if aux.exists():
        return ElementTree.parse(aux).getroot()
    return ElementTree.Element("PAMDataset")


def _check_aux(aux: Path, names: list[str], shown: Path) -> None:
    """A sidecar must hold the names we set: an empty or cut-off .aux.xml (full disk) is an
    error, not metadata."""
    try:
        root = ElementTree.parse(aux).getroot()
        found = [item.text or "" for item in root.iter("Category")]
    except (OSError, ElementTree.ParseError) as exc:
        raise CrossEarthError(
            f"{shown} could not be written completely ({exc}); the disk may be full: free some "
            "space or choose another folder"
        ) from None
    if found[: len(names)] != list(names):
        raise CrossEarthError(
            f"{shown} does not hold the class names that were written; the disk may be full: "
            "free some space or choose another folder"
        )


def class_encoding(num_classes: int) -> tuple[str, int]:
    """The class raster's data type and nodata value: uint8/255, or uint16/65535 beyond 255
    classes."""
    return ("uint8", 255) if num_classes <= 255 else ("uint16", 65535)


def class_raster(
    destination: Path,
    profile: dict[str, Any],
    class_names: list[str],
    colors: list[tuple[int, int, int]],
    model_tags: dict[str, str],
) -> StreamingGeoTiff:
    """The class raster: uint8 (uint16 beyond 255 classes), nodata the first unused value."""
    dtype, nodata = class_encoding(len(class_names))
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
