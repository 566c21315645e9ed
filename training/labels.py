"""Labels on the image grid, read window by window: label rasters (aligned, or on another
grid/CRS and resampled by nearest neighbour) and polygons (rasterized per window)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from engine.errors import CrossEarthError
from engine.raster.raster_input import open_raster
from engine.raster.vector_io import layer_fields, read_layer, vector_errors
from training.config import IGNORE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grid:
    crs: Any
    transform: Any
    width: int
    height: int

    @classmethod
    def of(cls, dataset: rasterio.DatasetReader) -> Grid:
        return cls(dataset.crs, dataset.transform, dataset.width, dataset.height)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)[:4]


def _aligned(dataset: rasterio.DatasetReader, grid: Grid) -> bool:
    same_crs = (dataset.crs is None and grid.crs is None) or (
        dataset.crs is not None and grid.crs is not None and dataset.crs == grid.crs
    )
    return (
        same_crs
        and dataset.transform.almost_equals(grid.transform, precision=1e-6)
        and (dataset.width, dataset.height) == (grid.width, grid.height)
    )


class RasterLabels:
    """A label raster's values (band 1) on the image grid."""

    NO_LABEL = -1

    def __init__(self, path: Path, grid: Grid, image_name: str) -> None:
        self.path = Path(path)
        self._dataset = open_raster(self.path)
        if self._dataset.count != 1:
            count = self._dataset.count
            self._dataset.close()
            raise CrossEarthError(
                f"labels {self.path.name} have {count} bands, but a label raster holds one band "
                "of class values; give that band as a raster of its own (gdal_translate -b N)"
            )
        nodata = self._dataset.nodata
        self.nodata = self.NO_LABEL
        # A float raster may mark nodata with NaN (or a fraction): kept as it is, so that the
        # masked reads below leave exactly those pixels out.
        whole = nodata is not None and math.isfinite(nodata) and float(nodata).is_integer()
        self._source_nodata = int(nodata) if whole else nodata
        self.resampled = not _aligned(self._dataset, grid)
        if self.resampled:
            if self._dataset.crs is None or grid.crs is None:
                raise CrossEarthError(
                    f"labels {self.path.name} are not on the grid of {image_name} and one of them "
                    "has no CRS, so they cannot be matched; give both a CRS or align them"
                )
            _check_overlap(self._dataset, grid, self.path.name, image_name)
            message = (
                f"labels {self.path.name} are on another grid/CRS than {image_name}; they are "
                "resampled onto the image grid by nearest neighbour"
            )
            log.warning(message)
            self.warning: str | None = message
            self._source = WarpedVRT(
                self._dataset,
                crs=grid.crs,
                transform=grid.transform,
                width=grid.width,
                height=grid.height,
                resampling=Resampling.nearest,
                src_nodata=self._source_nodata,
                nodata=self._source_nodata,
            )
        else:
            self.warning = None
            self._source = self._dataset

    def read(self, window: Window) -> np.ndarray:
        data = self._source.read(1, window=window, masked=True, boundless=False)
        values = np.ma.getdata(data).astype(np.int64)
        values[np.ma.getmaskarray(data)] = self.NO_LABEL
        return values

    def values(self) -> list[Any]:
        """The label values the raster holds (nodata left out). Class values are whole numbers:
        a float raster with NaN or fractions outside its nodata is refused in one line."""
        found: set[int] = set()
        for _, window in self._dataset.block_windows(1):
            data = self._dataset.read(1, window=window, masked=True)
            unique = np.unique(data.compressed())
            if unique.dtype.kind == "f":
                if np.isnan(unique).any():
                    raise CrossEarthError(
                        f"labels {self.path.name} hold NaN values that are not their nodata; "
                        "set NaN as the raster's nodata (gdal_edit.py -a_nodata nan) or give "
                        "every pixel a class value"
                    )
                fractions = unique[unique != np.round(unique)]
                if fractions.size:
                    raise CrossEarthError(
                        f"labels {self.path.name} hold values such as {fractions[0]:g} that are "
                        "not whole numbers; class values are whole numbers (a classified raster, "
                        "not a continuous one)"
                    )
            found.update(int(v) for v in unique)
        return sorted(found)


def _check_overlap(dataset: rasterio.DatasetReader, grid: Grid, name: str, image_name: str) -> None:
    from rasterio.warp import transform_bounds

    left, bottom, right, top = transform_bounds(dataset.crs, grid.crs, *dataset.bounds)
    g_left, g_bottom, g_right, g_top = grid.bounds
    if right <= g_left or left >= g_right or top <= g_bottom or bottom >= g_top:
        raise CrossEarthError(
            f"{name} and {image_name} do not overlap; check that they cover the same area"
        )


def read_polygons(
    path: Path, grid: Grid, layer: str | None, field: str | None
) -> tuple[list[dict[str, Any]], list[Any], np.ndarray]:
    """Geometries (GeoJSON dicts, in the grid's CRS), their `field` values, and their bounds."""
    import shapely
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom

    try:
        names = layer_fields(path, layer)
    except vector_errors() as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if layer is not None and "layer" in reason.lower():
            raise CrossEarthError(f"{path} has no layer named '{layer}'") from None
        raise CrossEarthError(f"{path} is not a vector file GDAL can read ({reason})") from None
    if field is not None and field not in names:
        raise CrossEarthError(
            f"{path.name} has no field '{field}'; its fields are {', '.join(names) or 'none'}"
        )
    try:
        table = read_layer(path, layer, [field] if field else [])
    except vector_errors() as exc:
        raise CrossEarthError(f"{path} is not a vector file GDAL can read ({exc})") from None
    shapes = shapely.from_wkb(table.geometries)
    present = ~(shapely.is_missing(shapes) | shapely.is_empty(shapes))
    shapes = shapes[present]
    values = list(table.fields[field][present]) if field else [1] * len(shapes)
    geometries = [shapely.geometry.mapping(shape) for shape in shapes]
    if grid.crs is not None and table.crs and geometries:
        source_crs = CRS.from_user_input(table.crs)
        if source_crs != grid.crs:
            geometries = list(transform_geom(source_crs, grid.crs, geometries))
    shapes = np.array([shapely.geometry.shape(g) for g in geometries], dtype=object)
    bounds = shapely.bounds(shapes) if len(shapes) else np.empty((0, 4))
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    box = np.asarray(bounds, np.float64).reshape(-1, 4)
    g_left, g_bottom, g_right, g_top = grid.bounds
    if (
        len(box)
        and not (
            (box[:, 2] > g_left)
            & (box[:, 0] < g_right)
            & (box[:, 3] > g_bottom)
            & (box[:, 1] < g_top)
        ).any()
    ):
        raise CrossEarthError(f"{path.name} does not overlap the image; check both cover one area")
    return geometries, values, box


class PolygonLabels:
    """Polygon labels burnt onto image-grid windows; later polygons win where they overlap."""

    NO_LABEL = -1

    def __init__(
        self,
        path: Path,
        grid: Grid,
        layer: str | None,
        field: str | None,  # None: every polygon is 1 (an area mask)
        codes: dict[Any, int],
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        self.nodata = self.NO_LABEL
        self.warning = None
        self._geometries, self._values, self._bounds = read_polygons(path, grid, layer, field)
        if not self._geometries:
            raise CrossEarthError(f"{self.path.name} holds no polygons")
        self._codes = codes

    def raw_values(self) -> list[Any]:
        return self._values

    def values(self) -> list[Any]:
        return sorted(set(self._values), key=str)

    def read(self, window: Window) -> np.ndarray:
        transform = rasterio.windows.transform(window, self.grid.transform)
        height, width = int(window.height), int(window.width)
        left, top = transform * (0, 0)
        right, bottom = transform * (width, height)
        xmin, xmax = min(left, right), max(left, right)
        ymin, ymax = min(top, bottom), max(top, bottom)
        b = self._bounds
        hits = np.nonzero(
            (b[:, 2] > xmin) & (b[:, 0] < xmax) & (b[:, 3] > ymin) & (b[:, 1] < ymax)
        )[0]
        if len(hits) == 0:
            return np.full((height, width), self.NO_LABEL, np.int64)
        shapes = [(self._geometries[i], self._codes[self._values[i]]) for i in hits]
        return rasterize(
            shapes,
            out_shape=(height, width),
            transform=transform,
            fill=self.NO_LABEL,
            dtype="int32",
        ).astype(np.int64)


class AreaMask:
    """Where labels count: inside the polygons of a vector file, or non-zero pixels of a raster."""

    def __init__(self, path: Path, grid: Grid, image_name: str) -> None:
        self.path = Path(path)
        if is_raster(self.path):
            self._source: Any = RasterLabels(self.path, grid, image_name)
        else:
            self._source = PolygonLabels(self.path, grid, None, None, {1: 1})

    def read(self, window: Window) -> np.ndarray:
        return self._source.read(window) > 0


def is_raster(path: Path) -> bool:
    """Whether GDAL opens the file as a raster (else it is taken for a vector file)."""
    try:
        with rasterio.open(path):
            return True
    except rasterio.errors.RasterioIOError:
        return False


class ClassMapping:
    """Raw label values -> class indices (IGNORE where unlabelled or mapped to 'ignore')."""

    def __init__(self, table: dict[Any, int]) -> None:
        self.table = table
        numeric = [k for k in table if isinstance(k, (int, np.integer))]
        self._lookup = None
        if numeric and len(numeric) == len(table) and min(numeric) >= -1 and max(numeric) < 65536:
            lookup = np.full(max(numeric) + 2, IGNORE, np.uint8)
            for key, index in table.items():
                lookup[int(key) + 1] = index
            self._lookup = lookup

    def apply(self, raw: np.ndarray) -> np.ndarray:
        if self._lookup is not None:
            clipped = np.clip(raw, -1, len(self._lookup) - 2)
            out = self._lookup[clipped + 1]
            out[(raw >= len(self._lookup) - 1)] = IGNORE
            return out
        out = np.full(raw.shape, IGNORE, np.uint8)
        for key, index in self.table.items():
            out[raw == key] = index
        return out
