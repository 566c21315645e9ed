"""Virtual rasters (GDAL's VRT XML) over other rasters: a window of one, one resampled to
another pixel size, a mosaic of several. The engine writes the XML itself (a documented format
every GDAL reads), so it needs rasterio alone, not GDAL's Python bindings."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import rasterio
from affine import Affine
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from engine.errors import CrossEarthError
from engine.files import atomic_write

# rasterio's dtype names -> GDAL's.
_GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "uint64": "UInt64",
    "int64": "Int64",
    "float32": "Float32",
    "float64": "Float64",
    "complex64": "CFloat32",
    "complex128": "CFloat64",
}


@dataclass(frozen=True)
class Placement:
    """Where one source's pixels go: `src` (col, row, width, height) of the source drawn into
    `dst` (col, row, width, height, fractional where resampled) of the virtual raster."""

    source: str  # the name GDAL opens (absolute, relative to the VRT, or /vsi...)
    relative: bool
    src: tuple[float, float, float, float]
    dst: tuple[float, float, float, float]


def gdal_name(source: Path | str) -> str:
    """Local files absolute (the VRT lives elsewhere); /vsi paths and URLs as written."""
    text = os.fspath(source)
    if text.startswith("/vsi") or "://" in text:
        return text
    return str(Path(text).absolute())


def window_vrt(source: Path | str, window: Window, target: Path) -> Path:
    """A VRT of `window` of `source`: values, nodata, masks, band names and colours carried
    over; the window's own georeferencing."""
    col, row = int(window.col_off), int(window.row_off)
    width, height = int(window.width), int(window.height)
    with _open(source) as dataset:
        transform = dataset.transform * Affine.translation(col, row)
        placement = Placement(
            gdal_name(source), False, (col, row, width, height), (0, 0, width, height)
        )
        document = _document(dataset, width, height, transform, [placement], "nearest")
    return _write(document, target)


def resampled_vrt(
    source: Path | str, x_res: float, y_res: float, resampling: str, target: Path
) -> Path:
    """A VRT of the whole of `source` at pixel size (`x_res`, `y_res`) in its CRS's units,
    with GDAL's `resampling` ("average", "bilinear", ...). The size is rounded to whole pixels
    and the pixel size adjusted to keep the extent exactly."""
    with _open(source) as dataset:
        a, e = dataset.transform.a, dataset.transform.e
        if not (x_res > 0 and y_res > 0 and math.isfinite(x_res) and math.isfinite(y_res)):
            raise CrossEarthError(f"cannot resample {source} to a pixel size of {x_res:g}")
        width = max(1, round(dataset.width * abs(a) / x_res))
        height = max(1, round(dataset.height * abs(e) / y_res))
        transform = dataset.transform * Affine.scale(dataset.width / width, dataset.height / height)
        placement = Placement(
            gdal_name(source),
            False,
            (0, 0, dataset.width, dataset.height),
            (0, 0, width, height),
        )
        document = _document(dataset, width, height, transform, [placement], resampling)
    return _write(document, target)


def wrapper_vrt(source: str, target: Path) -> Path:
    """A VRT that is all of `source` (a name Path() would change, such as /vsicurl/ URLs)."""
    with _open(source) as dataset:
        width, height = dataset.width, dataset.height
        placement = Placement(source, False, (0, 0, width, height), (0, 0, width, height))
        document = _document(dataset, width, height, dataset.transform, [placement], "nearest")
    return _write(document, target)


def mosaic_vrt(sources: Sequence[Path], target: Path) -> Path:
    """A VRT mosaic of rasters in one CRS with the bands of the first: the union of their
    extents at the average of their pixel sizes, later sources drawn over earlier ones, nodata
    left transparent. Sources are named relative to the VRT's folder where they lie in it, so
    the folder can move as a whole."""
    if not sources:
        raise ValueError("a mosaic needs at least one source")
    bounds, sizes = [], []
    for path in sources:
        with _open(path) as dataset:
            bounds.append(dataset.bounds)
            sizes.append((abs(dataset.transform.a), abs(dataset.transform.e)))
    x_res = sum(s[0] for s in sizes) / len(sizes)
    y_res = sum(s[1] for s in sizes) / len(sizes)
    left = min(b.left for b in bounds)
    right = max(b.right for b in bounds)
    bottom = min(b.bottom for b in bounds)
    top = max(b.top for b in bounds)
    width = max(1, round((right - left) / x_res))
    height = max(1, round((top - bottom) / y_res))
    transform = Affine(x_res, 0.0, left, 0.0, -y_res, top)
    placements = []
    for path, box in zip(sources, bounds, strict=True):
        with _open(path) as dataset:
            src = (0, 0, dataset.width, dataset.height)
        dst = (
            (box.left - left) / x_res,
            (top - box.top) / y_res,
            (box.right - box.left) / x_res,
            (box.top - box.bottom) / y_res,
        )
        relative = Path(path).resolve().parent == Path(target).resolve().parent
        name = Path(path).name if relative else gdal_name(path)
        placements.append(Placement(name, relative, src, dst))
    with _open(sources[0]) as first:
        document = _document(first, width, height, transform, placements, "nearest")
    return _write(document, target)


def _open(source: Path | str) -> Any:
    try:
        return rasterio.open(source)
    except rasterio.errors.RasterioIOError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CrossEarthError(f"cannot read {source} ({first}); check the file") from None


def _document(
    dataset: Any,
    width: int,
    height: int,
    transform: Affine,
    placements: Sequence[Placement],
    resampling: str,
) -> ElementTree.Element:
    root = ElementTree.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    if dataset.crs is not None:
        srs = ElementTree.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2")
        srs.text = dataset.crs.to_wkt()
    geotransform = ElementTree.SubElement(root, "GeoTransform")
    geotransform.text = ", ".join(repr(float(v)) for v in transform.to_gdal())
    _metadata(root, dataset.tags())
    masks = [flags for flags in dataset.mask_flag_enums]
    for index in range(1, dataset.count + 1):
        band = _band(root, dataset, index, placements, resampling)
        if MaskFlags.per_dataset not in masks[index - 1] and _own_mask(masks[index - 1]):
            mask = ElementTree.SubElement(band, "MaskBand")
            _mask_band(mask, f"mask,{index}", placements)
    if all(MaskFlags.per_dataset in flags for flags in masks) and not any(
        MaskFlags.alpha in flags for flags in masks
    ):
        mask = ElementTree.SubElement(root, "MaskBand")
        _mask_band(mask, "mask,1", placements)
    return root


def _own_mask(flags: Sequence[MaskFlags]) -> bool:
    """A band's own mask band (not derived from nodata, alpha or "all valid")."""
    return not any(f in flags for f in (MaskFlags.all_valid, MaskFlags.nodata, MaskFlags.alpha))


def _band(
    root: ElementTree.Element,
    dataset: Any,
    index: int,
    placements: Sequence[Placement],
    resampling: str,
) -> ElementTree.Element:
    dtype = dataset.dtypes[index - 1]
    band = ElementTree.SubElement(
        root, "VRTRasterBand", dataType=_GDAL_TYPES[dtype], band=str(index)
    )
    nodata = dataset.nodatavals[index - 1]
    if nodata is not None:
        ElementTree.SubElement(band, "NoDataValue").text = _number(nodata)
    interpretation = dataset.colorinterp[index - 1].name
    ElementTree.SubElement(band, "ColorInterp").text = interpretation.capitalize()
    description = dataset.descriptions[index - 1]
    if description:
        ElementTree.SubElement(band, "Description").text = description
    scale, offset = dataset.scales[index - 1], dataset.offsets[index - 1]
    if offset not in (None, 0.0):
        ElementTree.SubElement(band, "Offset").text = _number(offset)
    if scale not in (None, 1.0):
        ElementTree.SubElement(band, "Scale").text = _number(scale)
    if interpretation == "palette":
        table = ElementTree.SubElement(band, "ColorTable")
        colormap = dataset.colormap(index)
        for value in range(max(colormap) + 1 if colormap else 0):
            r, g, b, a = colormap.get(value, (0, 0, 0, 0))
            ElementTree.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(a))
    _metadata(band, dataset.tags(index))
    for placement in placements:
        kind = "ComplexSource" if nodata is not None else "SimpleSource"
        attributes = {"resampling": resampling} if resampling != "nearest" else {}
        source = ElementTree.SubElement(band, kind, attributes)
        _source(source, placement, str(index))
        if nodata is not None:
            ElementTree.SubElement(source, "NODATA").text = _number(nodata)
    return band


def _mask_band(parent: ElementTree.Element, band: str, placements: Sequence[Placement]) -> None:
    mask = ElementTree.SubElement(parent, "VRTRasterBand", dataType="Byte")
    for placement in placements:
        _source(ElementTree.SubElement(mask, "SimpleSource"), placement, band)


def _source(element: ElementTree.Element, placement: Placement, band: str) -> None:
    name = ElementTree.SubElement(
        element, "SourceFilename", relativeToVRT="1" if placement.relative else "0"
    )
    name.text = placement.source
    ElementTree.SubElement(element, "SourceBand").text = band
    for tag, (x, y, w, h) in (("SrcRect", placement.src), ("DstRect", placement.dst)):
        ElementTree.SubElement(
            element, tag, xOff=_number(x), yOff=_number(y), xSize=_number(w), ySize=_number(h)
        )


def _metadata(parent: ElementTree.Element, tags: dict[str, str]) -> None:
    if not tags:
        return
    block = ElementTree.SubElement(parent, "Metadata")
    for key, value in tags.items():
        ElementTree.SubElement(block, "MDI", key=key).text = value


def _number(value: float) -> str:
    number = float(value)
    if math.isnan(number):
        return "nan"
    return str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)


def _write(document: ElementTree.Element, target: Path) -> Path:
    """Writes the XML under a temporary name beside `target`, then renames it into place."""
    target = Path(target)
    with atomic_write(target) as temp:
        ElementTree.ElementTree(document).write(temp, encoding="utf-8", xml_declaration=False)
    return target
