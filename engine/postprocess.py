"""Post-processing of the class raster: a minimum region size (GDAL's sieve filter).

Regions (8-connected pixels of one class) smaller than the minimum are merged into the
largest neighbouring region; regions of classes the user keeps stay as they were. The filter
runs on the finished temporary class raster, before overviews are built, so the published file
and its class counts agree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, CrossEarthError
from .files import announce_temporary, remove_temporary
from .gdal_bindings import require_osgeo

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(px|m2|m²|ha)?\s*$")
_STRIP_ROWS = 256


@dataclass(frozen=True)
class MinimumRegion:
    """A minimum region size as given: `value` in `unit` (px, m2 or ha)."""

    value: float
    unit: str

    def pixels(self, pixel_area_m2: float | None) -> int:
        """The size in pixels for a raster whose pixels cover `pixel_area_m2`."""
        if self.unit == "px":
            return max(1, math.ceil(self.value))
        if pixel_area_m2 is None:
            raise CrossEarthError(
                f"a minimum region of {self.value:g} {self.unit} needs the raster's pixel size in "
                "metres, but the raster has no CRS; give the size in pixels (e.g. 20px)"
            )
        square_metres = self.value * (10_000 if self.unit == "ha" else 1)
        return max(1, math.ceil(square_metres / pixel_area_m2))


def parse_min_region(text: str | None) -> MinimumRegion | None:
    """'20', '20px', '5000m2' or '0.5ha'; None or '' or '0': no minimum."""
    if text is None or not str(text).strip():
        return None
    match = _SIZE.match(str(text))
    if match is None:
        raise CrossEarthError(
            f"minimum region '{text}' is not valid; give pixels (20 or 20px) or an area "
            "(5000m2, 0.5ha)"
        )
    value = float(match.group(1))
    unit = {"m²": "m2", None: "px"}.get(match.group(2), match.group(2))
    if not math.isfinite(value):
        raise CrossEarthError(f"minimum region '{text}' must be a finite size")
    if value == 0:
        return None
    return MinimumRegion(value, unit)


def class_indices(names: list[str] | None, class_names: list[str]) -> list[int]:
    """Class names (as in the model card, case-insensitive) -> class indices."""
    if not names:
        return []
    lookup = {name.lower(): index for index, name in enumerate(class_names)}
    unknown = [n for n in names if n.strip().lower() not in lookup]
    if unknown:
        raise ConfigError(
            f"keep-classes names {', '.join(repr(n) for n in unknown)}, which the model does "
            f"not have; its classes are {', '.join(class_names)}",
            code="postprocess.keep_classes",
            option="keep_classes",
            value=unknown,
            classes=list(class_names),
        )
    return sorted({lookup[n.strip().lower()] for n in names})


def sieve(path: Path, threshold: int, keep: list[int], num_classes: int) -> np.ndarray:
    """Applies the sieve filter to band 1 of `path` in place (nodata pixels are neither
    merged nor merged into) and restores the pixels of kept classes. Returns the new class
    pixel counts."""
    gdal = require_osgeo("the minimum region filter")[0]
    original = None
    try:
        dataset = gdal.Open(str(path), gdal.GA_Update)
        band = dataset.GetRasterBand(1)
        if keep:
            # The pixels to restore: a copy beside the (temporary) file, not in memory.
            original = announce_temporary(Path(f"{path}.before-sieve.tif"))
            gdal.Translate(
                str(original), dataset, format="GTiff", creationOptions=["COMPRESS=DEFLATE"]
            )
        if threshold > 1:
            gdal.SieveFilter(band, band.GetMaskBand(), band, threshold, 8)
        band.FlushCache()
        counts = _restore_and_count(band, original, keep, num_classes)
        band.FlushCache()
        band = None
        dataset = None
    except RuntimeError as exc:
        raise CrossEarthError(
            f"the minimum region filter failed on {path.name} ({str(exc).splitlines()[0]})"
        ) from None
    finally:
        if original is not None:
            remove_temporary(original)
    return counts


def _restore_and_count(band, original: Path | None, keep: list[int], num_classes: int):
    gdal = require_osgeo("the minimum region filter")[0]
    counts = np.zeros(num_classes, np.int64)
    # The dataset must outlive its band (GDAL's Python bindings crash otherwise).
    before_dataset = gdal.Open(str(original)) if original is not None else None
    before = before_dataset.GetRasterBand(1) if before_dataset is not None else None
    width, height = band.XSize, band.YSize
    keep_values = np.asarray(keep)
    for top in range(0, height, _STRIP_ROWS):
        rows = min(_STRIP_ROWS, height - top)
        values = band.ReadAsArray(0, top, width, rows)
        if before is not None:
            old = before.ReadAsArray(0, top, width, rows)
            kept = np.isin(old, keep_values)
            if kept.any():
                values[kept] = old[kept]
                band.WriteArray(values, 0, top)
        counts += np.bincount(values.ravel(), minlength=num_classes)[:num_classes]
    return counts
