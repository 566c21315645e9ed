"""Processing resolution: a model works at the ground sample distance (GSD) it was trained at.

The engine reads the raster's pixel size in metres (for a geographic CRS at the centre latitude
of the window being segmented) and resamples its tiles to the model's GSD on the fly; scores go
back to the source grid before classes are decided, so the output keeps the input's grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.error_codes import INPUT_GSD_TOO_FINE
from engine.errors import CrossEarthError, InputError

# Mean Earth radius (IUGG), metres: pixel sizes in degrees become metres at a latitude.
EARTH_RADIUS_M = 6_371_008.8
# Below this relative difference the raster is taken to be at the model's GSD already: no
# resampling for rounding noise in a transform.
SAME_GSD_TOLERANCE = 0.02

GsdRequest = str | float  # "auto", "native" or metres


def parse_gsd(text: str | float | None) -> GsdRequest:
    """'auto' (the model's GSD), 'native' (the raster's pixels) or a GSD in metres."""
    if text is None:
        return "auto"
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        word = str(text).strip().lower()
        if word in ("", "auto"):
            return "auto"
        if word == "native":
            return "native"
        try:
            value = float(word.removesuffix("m"))
        except ValueError:
            raise CrossEarthError(
                f"GSD '{text}' is not valid; use auto, native or a pixel size in metres (e.g. 0.5)"
            ) from None
    if not math.isfinite(value) or value <= 0:
        raise CrossEarthError(f"GSD {text} must be a positive number of metres")
    return value


def raster_gsd_m(dataset: Any) -> float | None:
    """The raster's pixel size in metres (geometric mean of width and height), or None when
    its CRS is unknown. Geographic CRSs are converted at the raster's centre latitude."""
    crs = dataset.crs
    if crs is None:
        return None
    transform = dataset.transform
    width_units = math.hypot(transform.a, transform.d)
    height_units = math.hypot(transform.b, transform.e)
    if crs.is_geographic:
        centre_lat = (transform * (dataset.width / 2, dataset.height / 2))[1]
        metres_per_degree = math.pi / 180 * EARTH_RADIUS_M
        width_m = width_units * metres_per_degree * math.cos(math.radians(centre_lat))
        height_m = height_units * metres_per_degree
    else:
        try:
            factor = float(crs.linear_units_factor[1])
        except Exception:  # a CRS without linear units (engineering CRS): taken as metres
            factor = 1.0
        # Mercator (Web Mercator tiles above all) stretches the map by 1 / cos(latitude): a
        # "metre" of EPSG:3857 at 50 deg N is 0.64 m on the ground.
        factor *= mercator_scale(crs, transform * (dataset.width / 2, dataset.height / 2))
        width_m, height_m = width_units * factor, height_units * factor
    if width_m <= 0 or height_m <= 0:
        return None
    return math.sqrt(width_m * height_m)


def is_mercator(crs: Any) -> bool:
    """Whether a projected CRS is a Mercator projection (scale grows with latitude)."""
    try:
        wkt = crs.to_wkt().lower()
    except Exception:
        return False
    # Transverse (UTM) and oblique Mercator keep their scale within a fraction of a percent.
    return "mercator" in wkt and "transverse" not in wkt and "oblique" not in wkt


def mercator_scale(crs: Any, point: tuple[float, float]) -> float:
    """Ground metres per map metre at `point` (map coordinates): cos(latitude) for Mercator
    projections, 1 for every other (their scale error is a fraction of a percent)."""
    if not is_mercator(crs):
        return 1.0
    from rasterio.warp import transform

    _, (latitude,) = transform(crs, "EPSG:4326", [point[0]], [point[1]])
    return math.cos(math.radians(max(-89.9, min(89.9, latitude))))


@dataclass(frozen=True)
class ProcessingResolution:
    """How the run resamples: `factor` = raster GSD / processing GSD (2: the network sees the
    raster upsampled 2x; 0.5: averaged 2x2)."""

    processing_gsd_m: float | None
    factor: float
    description: str
    notes: tuple[str, ...] = ()


# The finest processing grid against the raster's own (per side): beyond, no imagery holds the
# detail, and the job grows with the square of it (hours for a small raster).
MAX_REFINEMENT = 64.0


def processing_resolution(
    request: GsdRequest, raster_gsd: float | None, model_gsd: float | None, model_name: str
) -> ProcessingResolution:
    """Decides the processing GSD for a raster and a model; notes say why it is native."""
    notes: list[str] = []
    if request == "native":
        target = None
    elif request == "auto":
        target = model_gsd
        if model_gsd is None:
            notes.append(
                f"model '{model_name}' states no ground sample distance; running at the "
                "raster's native resolution"
            )
    else:
        target = float(request)
    if target is not None and raster_gsd is None:
        notes.append(
            "the raster has no CRS, so its pixel size in metres is unknown; running at its "
            "native resolution"
        )
        target = None
    if target is None or raster_gsd is None:
        shown = f"{raster_gsd:g} m" if raster_gsd else "unknown size"
        return ProcessingResolution(raster_gsd, 1.0, f"native ({shown} pixels)", tuple(notes))
    factor = raster_gsd / target
    if factor > MAX_REFINEMENT:
        whose = "the model's GSD" if request == "auto" else "the processing GSD"
        raise InputError(
            f"{whose} {target:g} m is {factor:,.0f}x finer than the raster's {raster_gsd:g} m "
            f"pixels: the model would read {factor * factor:.3g} pixels for each of the "
            f"raster's; choose a GSD of at least {raster_gsd / MAX_REFINEMENT:.3g} m, or native",
            code=INPUT_GSD_TOO_FINE,
            option="gsd",
            gsd=target,
            raster_gsd=raster_gsd,
            suggestion="native",
        )
    if abs(factor - 1.0) <= SAME_GSD_TOLERANCE:
        return ProcessingResolution(
            raster_gsd, 1.0, f"native ({raster_gsd:g} m, the model's GSD)", tuple(notes)
        )
    how = "refined" if factor > 1 else "coarsened"
    return ProcessingResolution(
        target,
        factor,
        f"{target:g} m (raster {raster_gsd:g} m, {how} {max(factor, 1 / factor):.2f}x)",
        tuple(notes),
    )


def source_geometry(
    model_tile: int, model_stride: int, factor: float, height: int, width: int, multiple: int
) -> tuple[int, int, int]:
    """(source tile, source stride, model tile) for a processing tile of `model_tile` pixels:
    a source tile of model_tile / factor pixels is resampled to exactly model_tile. A tile
    larger than the raster is clamped to it (the model tile rounded up to `multiple`)."""
    size = max(1, round(model_tile / factor))
    stride = max(1, min(size, round(model_stride / factor)))
    longest = max(height, width)
    if size > longest:
        overlap_share = 1 - stride / size
        size = longest
        stride = max(1, round(size * (1 - overlap_share)))
        model_tile = max(multiple, math.ceil(size * factor / multiple) * multiple)
    return size, stride, model_tile
