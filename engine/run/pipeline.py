"""The segmentation job: raster in, class raster out, one strip of rows in memory at a time.

`segment` is the job's named steps: plan it (engine/run/plan.py), run the plan, remove the
plan's scratch VRTs. `run_plan` loads the model on the plan's runtime, streams the tiles
through it into the outputs (engine/run/row_stream.py) and finishes them (engine/run/writer.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from engine.cancel import CancelFlag, cancel_check
from engine.models.packages import ModelPackage
from engine.raster.raster_input import TileReader, open_raster
from engine.run.options import ProgressCallback, SegmentOptions
from engine.run.plan import Plan, plan_segment, tile_geometry
from engine.run.row_stream import stream_rows
from engine.run.runtimes import LoadedModel
from engine.run.tiling import plan_tiles
from engine.run.writer import OutputWriter, complete_outputs

# The request's types, importable from here as the job's entry point.
__all__ = [
    "CancelFlag",
    "LoadedModel",
    "ProgressCallback",
    "SegmentOptions",
    "SegmentResult",
    "run_plan",
    "segment",
    "tile_geometry",
]


@dataclass
class SegmentResult:
    output: Path
    confidence: Path | None
    polygons: Path | None
    class_names: list[str]
    class_pixels: dict[str, int]
    nodata_pixels: int
    tiles: int
    tiles_skipped: int
    seconds: float
    device: str
    bands: list[int]
    scaling: str
    warnings: list[str] = field(default_factory=list)
    resolution: str = ""
    # Optional outputs the run could not write ({"polygons": "the disk is full ..."}); the
    # class raster is complete and in place all the same.
    failed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls: type[_Result],
        plan: Plan,
        *,
        counts: Any,
        nodata_pixels: int,
        tiles: int,
        tiles_skipped: int,
        seconds: float,
        device: str,
        failed: dict[str, str] | None = None,
        **extra: Any,
    ) -> _Result:
        """What a finished job wrote and how it ran (`extra`: a subclass's own fields)."""
        names = plan.card.class_names
        failed = failed or {}
        return cls(
            output=plan.outputs.classes,
            confidence=None if "confidence" in failed else plan.outputs.confidence,
            polygons=None if "polygons" in failed else plan.outputs.polygons,
            class_names=names,
            class_pixels={n: int(c) for n, c in zip(names, counts, strict=True)},
            nodata_pixels=nodata_pixels,
            tiles=tiles,
            tiles_skipped=tiles_skipped,
            seconds=seconds,
            device=device,
            bands=plan.bands,
            scaling=plan.scaling.description,
            warnings=list(plan.warnings),
            resolution=plan.resolution.description,
            failed=failed,
            **extra,
        )


_Result = TypeVar("_Result", bound=SegmentResult)


def segment(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    model: str | os.PathLike[str] | ModelPackage | LoadedModel | None = None,
    options: SegmentOptions | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelFlag = None,
) -> SegmentResult:
    """Segments a raster into a class GeoTIFF (and optionally a confidence GeoTIFF and class
    polygons).

    `model` is a package path or installed name (None: the bundled default), a ModelPackage, or
    a LoadedModel. Raises CrossEarthError for bad input and SegmentationCancelled when `cancel`
    is set; in both cases no output file is left behind and no existing file is touched.
    """
    started = time.perf_counter()
    plan = plan_segment(input_path, output_path, model, options or SegmentOptions())
    try:
        return run_plan(plan, progress, cancel, started=started)
    finally:
        plan.remove_scratch()


def run_plan(
    plan: Plan,
    progress: ProgressCallback | None = None,
    cancel: CancelFlag = None,
    *,
    started: float | None = None,
) -> SegmentResult:
    """Runs a planned job in this process (the plan's scratch VRTs stay for the caller)."""
    report = progress or (lambda fraction, message: None)
    started = time.perf_counter() if started is None else started
    loaded = _load(plan, report)
    device = loaded.device if loaded.runtime == "torch" else f"cpu ({loaded.runtime})"
    tiles, counted, writer, failed = _stream(plan, loaded, device, report, cancel_check(cancel))
    seconds = time.perf_counter() - started
    report(1.0, f"done in {seconds:.1f} s")
    return SegmentResult.of(
        plan,
        counts=writer.counts,
        nodata_pixels=writer.nodata_pixels,
        tiles=tiles,
        tiles_skipped=counted,
        seconds=seconds,
        device=device,
        failed=failed,
    )


def _load(plan: Plan, report: ProgressCallback) -> LoadedModel:
    """The plan's model on its runtime and device (kept loaded by a warm worker)."""
    from engine.run.runtimes import is_loaded, load_model

    if plan.loaded is not None:
        return plan.loaded
    assert plan.package is not None and plan.runtime is not None
    options, name = plan.options, plan.card.name
    if plan.runtime == "torch":
        from engine.run.devices import resolve_device

        resolve_device(options.device)  # a missing GPU is refused before loading starts
    if is_loaded(plan.package, options.device, options.threads, plan.runtime):
        report(0.0, f"model {name} ({plan.runtime}) is loaded already")
    else:
        report(0.0, f"loading model {name} ({plan.runtime})")
    return load_model(plan.package, options.device, options.threads, plan.runtime)


def _stream(
    plan: Plan,
    loaded: LoadedModel,
    device: str,
    report: ProgressCallback,
    is_cancelled: Callable[[], bool],
) -> tuple[int, int, OutputWriter, dict[str, str]]:
    """Streams the plan's tiles through the model into its outputs and finishes them.
    Returns (tiles, skipped tiles, the writer with its counts, failed outputs)."""
    from engine.run.runtimes import make_runner, release

    options = plan.options
    runner = make_runner(
        loaded, options.batch_size, options.amp, plan.resampled_tile, compile=options.compile
    )
    tiles = plan_tiles(plan.height, plan.width, plan.size, plan.stride)
    writer: OutputWriter | None = None
    counted = {"skipped": 0}

    def tiles_done(done: int, skipped: int) -> None:
        counted["skipped"] = skipped
        report(0.95 * done / len(tiles), f"tile {done}/{len(tiles)}")

    try:
        with open_raster(plan.source) as reader:
            writer = OutputWriter(
                plan.card, plan.outputs, plan.profile, plan.tags, options.confidence_dtype
            )
            report(0.0, f"segmenting {len(tiles)} tiles of {plan.size} px on {device}")
            for rows in stream_rows(
                TileReader(reader, plan.bands, plan.scaling, plan.card.input),
                runner,
                tiles,
                size=plan.size,
                height=plan.height,
                width=plan.width,
                num_classes=plan.card.num_classes,
                batch_size=options.batch_size,
                rows=(0, plan.height),
                confidence_dtype=options.confidence_dtype if plan.outputs.confidence else None,
                is_cancelled=is_cancelled,
                on_tiles=tiles_done,
            ):
                writer.write(rows)
        failed = complete_outputs(writer, plan, report, is_cancelled)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    finally:
        release(loaded)
    return len(tiles), counted["skipped"], writer, failed
