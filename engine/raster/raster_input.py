"""Reading source rasters for a model: band choice, value scaling, normalization, masks, padding."""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from engine.error_codes import (
    INPUT_BANDS_AMBIGUOUS,
    INPUT_BANDS_COUNT,
    INPUT_BANDS_MISSING,
    INPUT_BANDS_RANGE,
    INPUT_GEOTRANSFORM,
    INPUT_NOT_FOUND,
    INPUT_READ,
)
from engine.errors import CrossEarthError, InputError
from engine.files import describe_path
from engine.models.model_card import InputSpec

log = logging.getLogger(__name__)

_COLOR_NAMES = {
    ColorInterp.red: "red",
    ColorInterp.green: "green",
    ColorInterp.blue: "blue",
    ColorInterp.gray: "gray",
}
# Long stretch limits as QGIS uses them for display: robust against a few saturated pixels.
STRETCH_PERCENTILES = (2.0, 98.0)
_STATS_MAX_SIDE = 1024


def is_virtual(path: str | os.PathLike[str]) -> bool:
    """A GDAL virtual file system path or URL (/vsicurl/..., /vsis3/..., https://...), which
    must be passed on as written: pathlib would collapse its '//'."""
    text = os.fspath(path)
    return text.startswith("/vsi") or "://" in text


def source_path(path: str | os.PathLike[str]) -> Path | str:
    """A raster source as a Path for local files, unchanged text for virtual ones."""
    return os.fspath(path) if is_virtual(path) else Path(path)


def source_name(path: str | os.PathLike[str]) -> str:
    """The file name of a source, also of a URL or /vsi path."""
    return os.fspath(path).rstrip("/").rsplit("/", 1)[-1]


def open_raster(path: str | os.PathLike[str]) -> rasterio.DatasetReader:
    """Opens a GDAL raster with an error message that says what is wrong with the file."""
    path_str = os.fspath(path)
    shown = describe_path(path_str)
    if not is_virtual(path_str):
        file = Path(path_str)
        if not file.exists():
            raise InputError(
                f"input raster {shown} does not exist; check the path",
                code=INPUT_NOT_FOUND,
                path=path_str,
            )
        if file.is_dir() and not (file / "hdr.adf").exists():
            raise CrossEarthError(f"input {shown} is a folder, not a raster file")
        if not os.access(file, os.R_OK):
            raise InputError(
                f"input raster {shown} is not readable (permission denied)",
                code=INPUT_READ,
                path=path_str,
            )
    try:
        path_str.encode("utf-8")
    except UnicodeEncodeError:
        raise CrossEarthError(
            f"the file name {shown} is not valid UTF-8, which GDAL cannot open; rename the file "
            "(or its folder) using UTF-8 characters"
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path_str)
    except (RasterioError, OSError, ValueError) as exc:
        raise CrossEarthError(
            f"{shown} is not a raster GDAL can read ({first_line(exc)}); check the file"
        ) from None
    if dataset.count == 0:
        dataset.close()
        raise CrossEarthError(f"{shown} has no raster bands (is it a vector file?)")
    t = dataset.transform
    if not all(math.isfinite(v) for v in (t.a, t.b, t.c, t.d, t.e, t.f)) or t.a * t.e == t.b * t.d:
        dataset.close()
        raise InputError(
            f"{shown} has a geotransform that is not a grid ({', '.join(f'{v:g}' for v in t[:6])}"
            "); fix its georeferencing (e.g. gdal_edit.py -a_ullr) or remove it",
            code=INPUT_GEOTRANSFORM,
            path=path_str,
        )
    return dataset


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (GDAL's can run over several)."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def read_error(
    dataset: rasterio.DatasetReader, window: Window, exc: BaseException
) -> CrossEarthError:
    """A failed read after the header (truncated file, corrupt block, missing VRT source) as one
    line naming the file and the window."""
    row, col = int(window.row_off), int(window.col_off)
    return InputError(
        f"cannot read {describe_path(dataset.name)} at rows {row}..{row + int(window.height)}, "
        f"columns {col}..{col + int(window.width)} ({first_line(exc)}); the file is damaged or "
        "incomplete (or a file it refers to is missing): copy or export it again",
        code=INPUT_READ,
        path=str(dataset.name),
        window={"row": row, "col": col, "height": int(window.height), "width": int(window.width)},
        reason=first_line(exc),
    )


def _finite(values: np.ndarray) -> np.ndarray:
    """Pixels whose values are finite in every band: NaN and infinities are always nodata,
    whatever the nodata tag says."""
    if not np.issubdtype(values.dtype, np.floating):
        return np.ones(values.shape[-2:], bool)
    return np.isfinite(values).all(axis=0)


def describe_bands(dataset: rasterio.DatasetReader) -> list[str]:
    """A name per band for messages: its description, else its colour, else 'band N'."""
    names = []
    for index in range(dataset.count):
        description = dataset.descriptions[index]
        color = _COLOR_NAMES.get(dataset.colorinterp[index])
        names.append(description or color or f"band {index + 1}")
    return names


def band_labels(dataset: rasterio.DatasetReader, index: int) -> tuple[str | None, str | None]:
    """The names band `index` (0-based) goes by, lower case: its description and its colour
    (None where it has none)."""
    description = (dataset.descriptions[index] or "").strip().lower() or None
    return description, _COLOR_NAMES.get(dataset.colorinterp[index])


def band_positions(labels: Sequence[Sequence[str | None]]) -> dict[str, int]:
    """Band name -> 1-based band number, from each band's labels (band_labels): a description
    wins over a colour (a 3-band file's red colour on band 1 never hides band 2's "red"),
    and the first band of a name wins over later ones."""
    positions: dict[str, int] = {}
    for rank in range(max((len(names) for names in labels), default=0)):
        for index, names in enumerate(labels):
            if rank < len(names) and names[rank]:
                positions.setdefault(str(names[rank]), index + 1)
    return positions


def resolve_bands(
    dataset: rasterio.DatasetReader, spec: InputSpec, user_bands: list[int] | None
) -> list[int]:
    """The 1-based source bands feeding the model's inputs, in the model's order.

    An explicit user choice wins; then band descriptions or colour interpretations matching the
    card's band names; then all bands when their count matches. Anything else is ambiguous and
    is an error telling the user to pass --bands.
    """
    wanted = list(spec.bands)
    count = dataset.count
    if user_bands is not None:
        if len(user_bands) != len(wanted):
            raise InputError(
                f"the band list names {len(user_bands)} band(s) but the model takes "
                f"{len(wanted)} ({', '.join(wanted)}); list one source band per model input",
                code=INPUT_BANDS_COUNT,
                option="bands",
                value=list(user_bands),
                wanted=wanted,
            )
        bad = [b for b in user_bands if not 1 <= b <= count]
        if bad:
            raise InputError(
                f"bands {','.join(map(str, bad))} out of range: the raster has bands 1..{count}",
                code=INPUT_BANDS_RANGE,
                option="bands",
                value=bad,
                count=count,
            )
        return list(user_bands)
    if count < len(wanted):
        raise InputError(
            f"the raster has {count} band(s) but the model needs {len(wanted)} "
            f"({', '.join(wanted)}); use a raster with those bands, or another model",
            code=INPUT_BANDS_MISSING,
            count=count,
            wanted=wanted,
        )
    by_name = _bands_by_name(dataset, wanted)
    if by_name is not None:
        return by_name
    if count == len(wanted):
        return list(range(1, count + 1))
    suggestion = ",".join(str(i + 1) for i in range(len(wanted)))
    described = ", ".join(describe_bands(dataset))
    raise InputError(
        f"cannot tell which of the raster's {count} bands ({described}) are the model's "
        f"{', '.join(wanted)}; choose the bands, e.g. bands={suggestion}",
        code=INPUT_BANDS_AMBIGUOUS,
        option="bands",
        suggestion=suggestion,
        count=count,
        described=described,
        wanted=wanted,
    )


def _bands_by_name(dataset: rasterio.DatasetReader, wanted: list[str]) -> list[int] | None:
    """The bands whose descriptions or colour interpretations name the model's inputs."""
    labels = band_positions([band_labels(dataset, index) for index in range(dataset.count)])
    found = [labels.get(name.lower()) for name in wanted]
    if all(b is not None for b in found) and len(set(found)) == len(found):
        return [int(b) for b in found]  # type: ignore[arg-type]
    return None


def unnamed_bands_note(
    dataset: rasterio.DatasetReader, spec: InputSpec, user_bands: list[int] | None
) -> str | None:
    """A note when the bands were taken by position because nothing names them: the run cannot
    tell a raster in another order (BGR as RGB) from the right one, so it says what it assumed."""
    if user_bands is not None or _bands_by_name(dataset, list(spec.bands)) is not None:
        return None
    order = ", ".join(f"{i + 1} as {name}" for i, name in enumerate(spec.bands))
    return (
        f"the raster's bands carry no names the model knows, so they are read in order ({order}); "
        "if they are in another order, choose the bands (e.g. bands=3,2,1)"
    )


@dataclass(frozen=True)
class ValueScaling:
    """Per-band linear map from source values to the model's value range: v = x * gain + offset."""

    gain: tuple[float, ...]
    offset: tuple[float, ...]
    clip: tuple[float, float] | None
    description: str
    # auto scaling stretched each band to this scene's statistics: a guess, not the sensor's range
    stretched: bool = False


def parse_scaling(text: str | None) -> str | tuple[float, float]:
    """'auto', 'none', or 'LOW,HIGH' (source values mapped to the model's value range)."""
    if text is None or text.strip().lower() in ("", "auto"):
        return "auto"
    if text.strip().lower() == "none":
        return "none"
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise CrossEarthError(
            f"scaling '{text}' is not valid; use auto, none or LOW,HIGH (e.g. 0,10000)"
        ) from None
    if not high > low:
        raise CrossEarthError(f"scaling '{text}': HIGH must be greater than LOW")
    return (low, high)


def _band_percentiles(
    dataset: rasterio.DatasetReader, bands: list[int]
) -> list[tuple[float, float]]:
    """2 % / 98 % percentiles per band from a decimated read (memory independent of size)."""
    factor = max(1, int(np.ceil(max(dataset.height, dataset.width) / _STATS_MAX_SIDE)))
    shape = (max(1, dataset.height // factor), max(1, dataset.width // factor))
    window = Window(0, 0, dataset.width, dataset.height)
    try:
        data = dataset.read(bands, out_shape=(len(bands), *shape), masked=True)
    except (RasterioError, OSError) as exc:
        raise read_error(dataset, window, exc) from None
    values_all = np.ma.getdata(data)
    valid = ~np.ma.getmaskarray(data).any(axis=0) & _finite(values_all)
    if not valid.any():
        raise CrossEarthError(
            f"{describe_path(dataset.name)} holds no valid pixels to segment (all are nodata, "
            "NaN or infinite)"
        )
    result = []
    for band in values_all:
        values = band[valid].astype(np.float64)
        low, high = np.percentile(values, STRETCH_PERCENTILES)
        if high <= low:
            high = low + 1.0
        result.append((float(low), float(high)))
    return result


def choose_scaling(
    dataset: rasterio.DatasetReader,
    bands: list[int],
    spec: InputSpec,
    requested: str | tuple[float, float],
) -> ValueScaling:
    """How `bands` are scaled into the model's value range: 'none', an explicit (low, high), or
    auto (8-bit as stored when the model expects 0..255, else a per-band 2-98 % stretch)."""
    range_low, range_high = spec.value_range
    span = range_high - range_low
    n = len(bands)
    if requested == "none":
        return ValueScaling((1.0,) * n, (0.0,) * n, None, "none (values used as stored)")
    if isinstance(requested, tuple):
        low, high = requested
        gain = span / (high - low)
        return ValueScaling(
            (gain,) * n,
            (range_low - low * gain,) * n,
            spec.value_range,
            f"linear {low:g}..{high:g} -> {range_low:g}..{range_high:g}",
        )
    dtypes = {dataset.dtypes[b - 1] for b in bands}
    if dtypes == {"uint8"} and spec.value_range == (0.0, 255.0):
        return ValueScaling((1.0,) * n, (0.0,) * n, None, "none (8-bit input)")
    limits = _band_percentiles(dataset, bands)
    gains = tuple(span / (high - low) for low, high in limits)
    offsets = tuple(range_low - low * g for (low, _), g in zip(limits, gains, strict=True))
    text = ", ".join(f"{low:g}..{high:g}" for low, high in limits)
    return ValueScaling(
        gains,
        offsets,
        spec.value_range,
        f"per-band 2-98 % stretch ({text}) -> model range",
        stretched=True,
    )


def scaling_warning(
    dataset: rasterio.DatasetReader, bands: list[int], spec: InputSpec, scaling: ValueScaling
) -> str | None:
    """A warning when auto scaling had to guess: values stored wider than the 8-bit range the
    model reads, stretched band by band. The stretch follows this scene's statistics, not the
    sensor's, so the colours the model learned can shift (the same scene in 8 bit and in
    16-bit digital numbers may then be segmented differently). None when nothing was guessed."""
    if not scaling.stretched or spec.value_range != (0.0, 255.0):
        return None
    dtypes = sorted({dataset.dtypes[b - 1] for b in bands})
    return (
        f"the bands are {'/'.join(dtypes)} but the model reads 8-bit values (0..255): auto "
        f"scaling stretched each band to its own 2-98 % range, which can shift the colours the "
        "model learned; check the result, or give the sensor's range as scaling LOW,HIGH "
        "(e.g. 0,10000 for reflectance x 10000)"
    )


# Tiles of one tile row are cut from one read of this many tile sides (at least): neighbours
# overlap, and one larger read decodes each source block once instead of once per tile.
READ_BLOCK_TILES = 16
READ_BLOCK_MIN_PX = 2048


class TileReader:
    """Reads model-ready tiles: chosen bands, scaled, normalized, invalid pixels neutral.

    Tiles are cut from a block of the tile row, read once (READ_BLOCK_TILES tile sides wide)
    and prepared once, so overlapping neighbours cost no second read."""

    def __init__(
        self,
        dataset: rasterio.DatasetReader,
        bands: list[int],
        scaling: ValueScaling,
        spec: InputSpec,
    ) -> None:
        self.dataset = dataset
        self.bands = bands
        mean = np.asarray(spec.mean, np.float32)[:, None, None]
        std = np.asarray(spec.std, np.float32)[:, None, None]
        self._gain = np.asarray(scaling.gain, np.float32)[:, None, None]
        self._offset = np.asarray(scaling.offset, np.float32)[:, None, None]
        self._clip = scaling.clip
        self._mean = mean
        self._inv_std = 1.0 / std
        # (row, height, first column, normalized values [C, h, w], validity [h, w])
        self._block: tuple[int, int, int, np.ndarray, np.ndarray] | None = None

    def read_valid(self, window: Window) -> np.ndarray:
        """Boolean validity of the window's pixels: valid only where every chosen band is."""
        try:
            masks = self.dataset.read_masks(self.bands, window=window)
        except (RasterioError, OSError) as exc:
            raise read_error(self.dataset, window, exc) from None
        return np.all(masks > 0, axis=0)

    def read_window(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Raw values [C, h, w] as float32 and their validity (masks, NaN and infinities)."""
        try:
            raw = self.dataset.read(self.bands, window=window, out_dtype=np.float32)
        except (RasterioError, OSError) as exc:
            raise read_error(self.dataset, window, exc) from None
        return raw, self.read_valid(window) & _finite(raw)

    def to_model_range(self, raw: np.ndarray) -> np.ndarray:
        """Source values [C, h, w] -> the model's value range (scaled and clipped), float32."""
        values = raw.astype(np.float32, copy=False) * self._gain + self._offset
        if self._clip is not None:
            np.clip(values, self._clip[0], self._clip[1], out=values)
        return values

    def normalize(self, values: np.ndarray) -> np.ndarray:
        """Values in the model's range -> normalized network input (mean/std of the card)."""
        return (values - self._mean) * self._inv_std

    def read_box(
        self, row: int, col: int, height: int, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Any window, also partly or wholly outside the raster: (values in the model's range
        [C, height, width] float32, validity [height, width]). Outside and invalid pixels hold
        the band means, so they look neutral after normalization."""
        values = np.broadcast_to(self._mean, (len(self.bands), height, width)).copy()
        valid = np.zeros((height, width), bool)
        top, left = max(row, 0), max(col, 0)
        bottom = min(row + height, self.dataset.height)
        right = min(col + width, self.dataset.width)
        if bottom > top and right > left:
            window = Window(left, top, right - left, bottom - top)
            raw, inside = self.read_window(window)
            rows = slice(top - row, bottom - row)
            cols = slice(left - col, right - col)
            part = self.to_model_range(raw)
            part[:, ~inside] = np.broadcast_to(self._mean, part.shape)[:, ~inside]
            values[:, rows, cols] = part
            valid[rows, cols] = inside
        return values, valid

    def read_tile(self, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """A size x size tile at (row, col), reflection-padded where it passes the raster edge.

        Returns (normalized float32 [C, size, size], validity bool [size, size]); padded pixels
        are marked invalid only in the sense that they are outside the raster (never written).
        """
        height = min(size, self.dataset.height - row)
        width = min(size, self.dataset.width - col)
        block = self._block_for(row, height, col, width, size)
        start = col - block[2]
        values = block[3][:, :, start : start + width]
        valid = block[4][:, start : start + width]
        if height < size or width < size:
            values = reflect_pad(values, size, size)
            valid = np.pad(valid, ((0, size - height), (0, size - width)))
        return values, valid

    def _block_for(
        self, row: int, height: int, col: int, width: int, size: int
    ) -> tuple[int, int, int, np.ndarray, np.ndarray]:
        """The prepared block of tile row `row` that holds columns [col, col + width)."""
        block = self._block
        if (
            block is not None
            and block[0] == row
            and block[1] == height
            and block[2] <= col
            and col + width <= block[2] + block[3].shape[-1]
        ):
            return block
        span = min(self.dataset.width - col, max(READ_BLOCK_TILES * size, READ_BLOCK_MIN_PX))
        raw, valid = self.read_window(Window(col, row, span, height))
        values = self.normalize(self.to_model_range(raw))
        # Invalid pixels get the normalized mean (0) so nodata fill values don't steer the model.
        values[:, ~valid] = 0.0
        self._block = (row, height, col, values, valid)
        return self._block


def reflect_pad(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pads the last two axes at the bottom/right to (height, width) by mirror reflection."""
    pad_h = height - array.shape[-2]
    pad_w = width - array.shape[-1]
    pads = [(0, 0)] * (array.ndim - 2) + [(0, pad_h), (0, pad_w)]
    # A one-pixel axis has nothing to mirror; repeat it instead.
    if min(array.shape[-2:]) > 1:
        return np.pad(array, pads, mode="reflect")
    return np.pad(array, pads, mode="edge")
