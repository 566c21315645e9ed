"""The batch's index (index.gpkg: each input's footprint, status, message, pixels per class
and seconds) and its mosaic (mosaic.vrt over the class rasters that share a CRS)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from engine.files import (
    create_temporary_folder,
    publish,
    remove_temporary,
    write_error,
)
from engine.raster.vector_io import feature_count, read_layer, vector_errors, write_layer
from engine.raster.vrt import mosaic_vrt
from engine.run.batch_inputs import OK, SKIPPED, BatchRow, PlannedInput, crs_name

log = logging.getLogger(__name__)

INDEX_LAYER = "index"
INDEX_FIELDS = ("input", "output", "status", "message", "classes", "seconds", "crs")
_EDGE_POINTS = 16  # points per footprint edge, so a reprojected footprint follows curved edges


def _ring(transform: Any, col0: float, row0: float, cols: float, rows: float) -> list:
    """The pixel window's outline in map coordinates, closed, with points along each edge."""
    n = _EDGE_POINTS
    pixels = (
        [(col0 + cols * i / n, row0) for i in range(n)]
        + [(col0 + cols, row0 + rows * i / n) for i in range(n)]
        + [(col0 + cols * (n - i) / n, row0 + rows) for i in range(n)]
        + [(col0, row0 + rows * (n - i) / n) for i in range(n)]
    )
    ring = [transform * point for point in pixels]
    return [*ring, ring[0]]


def _index_crs(crss: Iterable[Any]) -> Any:
    """The inputs' CRS when they all share one, else EPSG:4326 (None when none has a CRS)."""
    from rasterio.crs import CRS

    known = [crs for crs in crss if crs is not None]
    if not known:
        return None
    if all(crs == known[0] for crs in known):
        return known[0]  # inputs without a CRS have no place in it: their rows get no footprint
    return CRS.from_epsg(4326)


def _footprint(plan: PlannedInput, index_crs: Any) -> list[tuple[float, float]] | None:
    if plan.footprint is None:
        return None
    if index_crs is None or plan.crs is None:
        both_without = index_crs is None and plan.crs is None
        return plan.footprint[::_EDGE_POINTS] if both_without else None
    if plan.crs == index_crs:
        return plan.footprint[::_EDGE_POINTS]  # straight edges: the four corners suffice
    from rasterio.warp import transform

    xs, ys = zip(*plan.footprint, strict=True)
    try:
        tx, ty = transform(plan.crs, index_crs, list(xs), list(ys))
    except Exception:  # a CRS PROJ cannot transform: the row keeps no footprint
        log.warning("cannot reproject the footprint of %s", plan.input.given)
        return None
    return list(zip(tx, ty, strict=True))


def _index_values(row: BatchRow) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in INDEX_FIELDS}
    values["classes"] = json.dumps(row.classes) if row.classes is not None else ""
    return values


def _write_index(destination: Path, rows: list[BatchRow], crs: Any) -> None:
    """index.gpkg: one footprint polygon per input with its status, output and class counts."""
    import shapely

    failures: tuple[type[Exception], ...] = (RuntimeError, *vector_errors())
    staging = create_temporary_folder(destination)
    temp = staging / destination.name
    try:
        geometries = np.array(
            [shapely.Polygon(row.footprint) if row.footprint else None for row in rows],
            dtype=object,
        )
        columns = {name: [_index_values(row)[name] for row in rows] for name in INDEX_FIELDS}
        fields = {
            name: np.array([np.nan if v is None else v for v in values], np.float64)
            if name == "seconds"
            else np.array([None if v is None else str(v) for v in values], dtype=object)
            for name, values in columns.items()
        }
        write_layer(
            temp,
            INDEX_LAYER,
            shapely.to_wkb(geometries),
            fields,
            crs.to_wkt() if crs is not None else None,
            "Polygon",
        )
        found = feature_count(temp, INDEX_LAYER)
        if found != len(rows):
            raise RuntimeError(f"{found} of {len(rows)} rows were written")
        publish(temp, destination)
    except failures as exc:
        raise write_error(destination, exc) from None
    finally:
        remove_temporary(staging)


def _previous_rows(index: Path) -> dict[str, tuple[dict[str, int] | None, float | None]]:
    """Class counts and times of the finished inputs of an earlier batch's index (for the rows
    --resume skips); empty when there is none or it cannot be read."""
    found: dict[str, tuple[dict[str, int] | None, float | None]] = {}
    records: list[dict[str, Any]] = []
    with contextlib.suppress(Exception):
        if index.exists():
            table = read_layer(index, INDEX_LAYER, list(INDEX_FIELDS)).fields
            records = [
                {name: table[name][i] for name in INDEX_FIELDS}
                for i in range(len(table[INDEX_FIELDS[0]]))
            ]
    for record in records:
        if record.get("status") != OK or not record.get("output"):
            continue
        with contextlib.suppress(ValueError, TypeError):
            classes = json.loads(record["classes"]) if record.get("classes") else None
            seconds = float(record["seconds"]) if record.get("seconds") not in ("", None) else None
            found[str(record["output"])] = (classes, seconds)
    return found


def _write_mosaic(
    destination: Path, plans: list[PlannedInput], rows: list[BatchRow]
) -> tuple[Path | None, str]:
    """mosaic.vrt over the class rasters that exist, when they share a CRS; else a note."""
    outputs = [
        (plan, row)
        for plan, row in zip(plans, rows, strict=True)
        if row.status == OK or (row.status == SKIPPED and plan.classes.exists())
    ]
    if not outputs:
        return None, "no mosaic: no input has a class raster"
    crss = [plan.crs for plan, _ in outputs]
    if any(crs is None for crs in crss) or any(crs != crss[0] for crs in crss):
        names = sorted({crs_name(crs) or "none" for crs in crss})
        shown = ", ".join(name if len(name) < 40 else name[:37] + "..." for name in names)
        return None, f"no mosaic: the outputs are in different CRSs ({shown})"
    # Written beside the class rasters, so the VRT names them relative to itself and the
    # folder can be moved as a whole.
    mosaic_vrt([plan.classes for plan, _ in outputs], destination)
    return destination, ""
