"""Vector files (GeoPackage, Shapefile, GeoJSON, ...) through pyogrio, which bundles its own GDAL
in its wheels: the engine writes polygons and indexes and reads label polygons without GDAL's
Python bindings. Geometries travel as WKB arrays (shapely makes and reads them)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def pyogrio() -> Any:
    """The pyogrio module. Imported on use: most runs write no vectors. pyogrio imports
    pyproj when it is installed, only for GeoDataFrames; a system pyproj without its data
    (seen with Debian's beside a venv) then warns, which says nothing about our files."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import pyogrio as module
    return module


@dataclass(frozen=True)
class VectorLayer:
    """A layer read whole: WKB geometries (None where a feature has none), field columns by
    name, and the layer's CRS as pyogrio gives it ("EPSG:4326" where it has an authority code,
    else WKT; "" without one: rasterio's CRS.from_user_input reads both)."""

    geometries: np.ndarray
    fields: dict[str, np.ndarray]
    crs: str


def write_layer(
    path: Path,
    layer: str,
    geometries: np.ndarray,
    fields: dict[str, np.ndarray],
    crs_wkt: str | None,
    geometry_type: str,
    append: bool = False,
) -> None:
    """Writes (or with `append`, adds to) `layer` of the vector file at `path`; single
    geometries are promoted to multi ones where the layer's type is a multi type, so the file
    holds what its layer declares."""
    module = pyogrio()
    names = list(fields)
    module.raw.write(
        str(path),
        geometries,
        [fields[name] for name in names],
        names,
        layer=layer,
        driver="GPKG" if Path(path).suffix.lower() == ".gpkg" else None,
        geometry_type=geometry_type,
        crs=crs_wkt or None,
        promote_to_multi=geometry_type.startswith("Multi"),
        append=append,
    )


def read_layer(
    path: Path, layer: str | None = None, columns: list[str] | None = None
) -> VectorLayer:
    """Every feature of `layer` (the first one when None), with the `columns` asked for (all
    when None)."""
    module = pyogrio()
    meta, _fids, geometries, field_data = module.raw.read(str(path), layer=layer, columns=columns)
    names = list(meta["fields"])
    return VectorLayer(
        geometries=geometries if geometries is not None else np.empty(0, object),
        fields={name: np.asarray(column) for name, column in zip(names, field_data, strict=True)},
        crs=meta.get("crs") or "",
    )


def layer_fields(path: Path, layer: str | None = None) -> list[str]:
    """The field names of `layer` (the first one when None)."""
    return [str(name) for name in pyogrio().read_info(str(path), layer=layer)["fields"]]


def feature_count(path: Path, layer: str) -> int:
    """How many features `layer` of the file holds (read back from the file itself)."""
    return int(pyogrio().read_info(str(path), layer=layer, force_feature_count=True)["features"])


def vector_errors() -> tuple[type[Exception], ...]:
    """The exceptions pyogrio raises for files it cannot read or write."""
    module = pyogrio()
    return (module.errors.DataSourceError, module.errors.DataLayerError, module.errors.FieldError,
            module.errors.GeometryError, module.errors.CRSError, module.errors.FeatureError,
            OSError)  # fmt: skip
