"""How a segmentation is asked for: SegmentOptions, the one mapping from the command line's
arguments to them (`segment`, `segment-batch`, and the plugin's worker, which speaks the command
line), and the one set of checks every run applies before it plans anything."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.error_codes import OPTION_EMPTY_NAME, OPTION_SIMPLIFY, OPTION_THREADS
from engine.errors import ConfigError, CrossEarthError
from engine.option_values import CONFIDENCE_NODATA

OUTPUT_GRIDS = ("source", "model")
# progress(fraction 0..1, message)
ProgressCallback = Callable[[float, str], None]


@dataclass(frozen=True)
class SegmentOptions:
    tile_size: int | None = None  # default: the card's
    overlap: int | None = None  # default: the card's overlap, scaled to the tile size
    batch_size: int = 4
    bands: list[int] | None = None  # 1-based source bands in the model's order
    scaling: str | tuple[float, float] = "auto"  # auto, none or (low, high)
    device: str = "auto"
    threads: int | None = None
    amp: bool = True
    confidence: Path | None = None
    confidence_dtype: str = "float32"
    polygons: Path | None = None  # GeoPackage of class polygons
    extent: tuple[float, float, float, float] | None = None  # in the raster's CRS
    overwrite: bool = False  # replace existing output files (never an input)
    gsd: str | float = "auto"  # processing resolution: auto (the model's), native, or metres
    output_grid: str = "source"  # source: the input's grid; model: the processing grid
    min_region: str | None = None  # sieve: pixels ("20", "20px") or area ("5000m2", "0.5ha")
    keep_classes: list[str] | None = None  # classes whose small regions are kept
    simplify_m: float | None = None  # polygon simplification tolerance in metres
    runtime: str = "auto"  # auto or a runtime of engine/run/runtime_registry.py
    compile: bool = False  # torch.compile the model (PyTorch runtime; engine/run/runner.py)


def check_options(options: SegmentOptions) -> None:
    """The checks that need no raster and no model, for every kind of run."""
    if options.batch_size < 1:
        raise CrossEarthError(f"batch size must be at least 1, got {options.batch_size}")
    if options.threads is not None and options.threads < 1:
        raise ConfigError(
            f"threads must be at least 1, got {options.threads}",
            code=OPTION_THREADS,
            option="threads",
            value=options.threads,
        )
    if options.output_grid not in OUTPUT_GRIDS:
        raise CrossEarthError(
            f"output grid '{options.output_grid}' is not valid; use source or model"
        )
    if options.confidence_dtype not in CONFIDENCE_NODATA:
        raise CrossEarthError(
            f"confidence type '{options.confidence_dtype}' is not valid; use float32 or uint8"
        )
    if options.simplify_m is not None and not (
        math.isfinite(options.simplify_m) and options.simplify_m >= 0
    ):
        raise ConfigError(
            f"simplify {options.simplify_m} must be a distance in metres >= 0",
            code=OPTION_SIMPLIFY,
            option="simplify",
            value=options.simplify_m,
        )


# SegmentOptions fields whose `segment` argument has another name; every other field is
# taken from the argument of its own name (converted below), so `segment` and `segment-batch`
# build their options the same way.
_RENAMED = {
    "tile_size": "tile",
    "batch_size": "batch",
    "confidence_dtype": "confidence_type",
    "simplify_m": "simplify",
    "amp": "no_amp",
}
# Set per input by `segment-batch` (--confidence/--polygons are flags there, files in segment).
PER_INPUT_FIELDS = ("confidence", "polygons")


def option_argument(field_name: str) -> str:
    """The `segment` argument (dest) that sets a SegmentOptions field."""
    return _RENAMED.get(field_name, field_name)


def options_from_args(args: Any, *, skip: tuple[str, ...] = ()) -> SegmentOptions:
    """SegmentOptions from parsed `segment` (or `segment-batch`) arguments; `skip` names the
    fields the caller sets itself."""
    values: dict[str, Any] = {}
    for option in dataclasses.fields(SegmentOptions):
        name = option_argument(option.name)
        if option.name in skip or not hasattr(args, name):
            continue
        values[option.name] = _converted(option.name, getattr(args, name))
    return SegmentOptions(**values)


def _converted(field_name: str, value: Any) -> Any:
    """An argument's value as its SegmentOptions field holds it."""
    if field_name == "amp":
        return not value
    if field_name == "extent" and isinstance(value, str):
        from engine.raster.subset import parse_extent

        return parse_extent(value)
    if field_name == "gsd" and isinstance(value, str):
        from engine.raster.resolution import parse_gsd

        return parse_gsd(value)
    if field_name == "keep_classes" and isinstance(value, str):
        names = [part.strip() for part in value.split(",")]
        if not all(names):
            raise ConfigError(
                f"keep_classes '{value}' has an empty name; separate names with commas",
                code=OPTION_EMPTY_NAME,
                option="keep_classes",
                value=value,
            )
        return names
    return value
