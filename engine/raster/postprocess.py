"""Post-processing of the class raster: a minimum region size (GDAL's sieve filter, through
rasterio).

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
import rasterio
import rasterio.features
from rasterio.errors import RasterioError
from rasterio.windows import Window

from engine.error_codes import POSTPROCESS_KEEP_CLASSES
from engine.errors import ConfigError, CrossEarthError

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
            code=POSTPROCESS_KEEP_CLASSES,
            option="keep_classes",
            value=unknown,
            classes=list(class_names),
        )
    return sorted({lookup[n.strip().lower()] for n in names})


def sieve_bytes(height: int, width: int) -> int:
    """Memory of the minimum region filter: rasterio's sieve takes and returns whole arrays,
    so the filtered classes and the mask of valid pixels are held for the whole raster (one
    byte each per pixel)."""
    return 2 * height * width


def sieve(path: Path, threshold: int, keep: list[int], num_classes: int) -> np.ndarray:
    """Applies the sieve filter (rasterio's, GDAL's SieveFilter) to band 1 of `path` in place
    (nodata pixels are neither merged nor merged into) and restores the pixels of kept
    classes. Returns the new class pixel counts."""
    counts = np.zeros(num_classes, np.int64)
    keep_values = np.asarray(keep)
    try:
        with rasterio.open(path, "r+") as dataset:
            valid = dataset.read_masks(1) > 0
            sieved = rasterio.features.sieve(
                rasterio.band(dataset, 1),
                # rasterio refuses a size beyond the image's; every region is smaller anyway.
                min(threshold, dataset.height * dataset.width),
                out=np.empty((dataset.height, dataset.width), dataset.dtypes[0]),
                mask=valid,
                connectivity=8,
            )
            del valid
            for top in range(0, dataset.height, _STRIP_ROWS):
                rows = min(_STRIP_ROWS, dataset.height - top)
                window = Window(0, top, dataset.width, rows)
                values = sieved[top : top + rows]
                if len(keep_values):
                    # The file still holds the classes before the filter.
                    old = dataset.read(1, window=window)
                    kept = np.isin(old, keep_values)
                    values[kept] = old[kept]
                dataset.write(values, 1, window=window)
                counts += np.bincount(values.ravel(), minlength=num_classes)[:num_classes]
    except (RasterioError, OSError, ValueError) as exc:
        raise CrossEarthError(
            f"the minimum region filter failed on {path.name} ({str(exc).splitlines()[0]})"
        ) from None
    return counts
