"""`crossearth segment`: one raster into a class GeoTIFF, optionally with a confidence raster
and class polygons."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.commands import Handler
from engine.commands.arguments import (
    add_overwrite_option,
    add_progress_option,
    int_list,
    non_negative_int,
    positive_int,
    workers,
)
from engine.commands.progress import json_event, progress_reporter
from engine.error_codes import INPUT_BANDS_MISSING
from engine.errors import CrossEarthError, InputError
from engine.option_values import CONFIDENCE_NODATA
from engine.run.runtime_registry import CHOICES

# `segment`: the class raster is complete and in place, an optional output is not.
PARTIAL_EXIT_CODE = 3


def register(commands: argparse._SubParsersAction) -> Handler:
    """Adds `segment` to the engine's sub-commands; returns its handler."""
    seg = commands.add_parser(
        "segment",
        help="segment a raster into a class GeoTIFF",
        description="Segments a raster into a class GeoTIFF. Exit code 0 when every output is "
        f"written, 2 for bad input (nothing written), {PARTIAL_EXIT_CODE} when the class raster "
        "is complete but the confidence raster or the polygons could not be written (one line "
        "each on stderr; the class raster stays).",
    )
    # str, not Path: a /vsicurl/https://... source must keep its '//'.
    seg.add_argument("input", help="input raster (any GDAL format, /vsi paths and URLs too)")
    seg.add_argument("output", type=Path, help="output class GeoTIFF")
    add_segment_options(seg)
    return run


def add_segment_options(seg: argparse.ArgumentParser) -> None:
    """segment's options, in the order --help shows them; segment-batch takes all but the
    files."""
    add_model_options(seg)
    add_output_options(seg)
    add_resolution_options(seg)
    add_run_options(seg)


def add_model_options(seg: argparse.ArgumentParser) -> None:
    """Which model, on which device, and how the raster is tiled and scaled for it."""
    seg.add_argument(
        "--model",
        default=None,
        help="model package folder or installed model name (default: bundled)",
    )
    seg.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    seg.add_argument("--tile", type=positive_int, help="tile size in pixels (default: model's)")
    seg.add_argument(
        "--overlap",
        type=non_negative_int,
        help="overlap of neighbouring tiles in pixels (default: model's)",
    )
    seg.add_argument("--batch", type=positive_int, default=4, help="tiles per batch (default 4)")
    seg.add_argument(
        "--bands", type=int_list, help="source bands in the model's order, 1-based, e.g. 3,2,1"
    )
    seg.add_argument(
        "--scaling",
        default="auto",
        help="auto (8-bit as is, else 2-98%% stretch), none, or LOW,HIGH",
    )


def add_output_options(seg: argparse.ArgumentParser) -> None:
    """The files besides the class raster, the area segmented, and replacing outputs."""
    seg.add_argument("--confidence", type=Path, help="also write a per-pixel confidence GeoTIFF")
    seg.add_argument(
        "--confidence-type",
        choices=list(CONFIDENCE_NODATA),
        default="float32",
        help="confidence as float 0..1 or uint8 percent (default float32)",
    )
    seg.add_argument(
        "--polygons", type=Path, help="also write class polygons to a GeoPackage (.gpkg)"
    )
    seg.add_argument(
        "--extent",
        help="segment only XMIN,YMIN,XMAX,YMAX (in the raster's CRS) instead of the whole raster",
    )
    add_overwrite_option(seg, "replace existing output files (never the input)")


def add_resolution_options(seg: argparse.ArgumentParser) -> None:
    """The processing resolution, the output grid, and cleaning up small regions."""
    seg.add_argument(
        "--gsd",
        default="auto",
        help="processing resolution: auto (the model's GSD, default), native (the raster's "
        "pixels) or metres; tiles are resampled on the fly and the output keeps the input grid",
    )
    seg.add_argument(
        "--output-grid",
        choices=["source", "model"],
        default="source",
        help="write the classes on the input's grid (default) or on the processing grid",
    )
    seg.add_argument(
        "--min-region",
        help="merge regions smaller than this into the surrounding class: pixels (20, 20px) "
        "or an area (5000m2, 0.5ha)",
    )
    seg.add_argument(
        "--keep-classes",
        help="comma-separated class names whose small regions are kept (with --min-region)",
    )
    seg.add_argument(
        "--simplify",
        type=float,
        help="simplify the class polygons to this tolerance in metres (with --polygons)",
    )


def add_run_options(seg: argparse.ArgumentParser) -> None:
    """Threads, scaling out on Ray, precision and the progress display."""
    seg.add_argument("--threads", type=positive_int, help="CPU threads for the model")
    seg.add_argument(
        "--workers",
        type=workers,
        help="run sharded on Ray with N model workers, or auto (one per GPU; on CPU the cores "
        "divided by the threads per worker)",
    )
    seg.add_argument(
        "--cluster",
        help="run sharded on this Ray cluster (auto, host:port or ray://host:port) instead of "
        "a local Ray instance",
    )
    seg.add_argument(
        "--resume",
        action="store_true",
        help="with --workers/--cluster: reuse the finished parts a killed run of the same job "
        "left beside the output, and run only the rest",
    )
    seg.add_argument(
        "--runtime",
        choices=CHOICES,
        default="auto",
        help="what runs the model: auto (PyTorch on CUDA; on CPU ONNX Runtime or OpenVINO when "
        "the package has an ONNX graph, see 'crossearth export'), or one of them",
    )
    seg.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    seg.add_argument(
        "--compile",
        action="store_true",
        help="run the model through torch.compile (PyTorch runtime): the first run with a tile "
        "and batch size compiles for minutes, later ones start from the cache; pays off on GPUs "
        "and long runs",
    )
    add_progress_option(seg)


def run(args: argparse.Namespace) -> int:
    """Segments the raster; prints the summary (or the JSON done event) and the outputs that
    could not be written."""
    from engine.run.options import options_from_args

    result = _segment(args, options_from_args(args))
    summary = _summary(result)
    if args.progress == "json":
        json_event("done", **summary)
    else:
        _print_summary(result, summary)
    for name, problem in result.failed.items():
        print(f"crossearth: {name} not written: {problem}", file=sys.stderr)
    # 3: the class raster is complete and in place, an optional output is missing.
    return PARTIAL_EXIT_CODE if result.failed else 0


def _segment(args: argparse.Namespace, options: Any) -> Any:
    """The run, in this process or sharded; a band error carries the models that fit."""
    from engine.run.pipeline import segment

    try:
        with progress_reporter(args.progress) as update:
            if args.workers is not None or args.cluster or args.resume:
                return _segment_sharded(args, options, update)
            return segment(args.input, args.output, args.model, options, progress=update)
    except InputError as exc:
        if exc.code != INPUT_BANDS_MISSING:
            raise
        from engine.models.model_fit import with_advice

        raise with_advice(exc, args.input, args.model) from None


def _summary(result: Any) -> dict[str, Any]:
    """The done event's fields."""
    summary = {
        "output": str(result.output),
        "confidence": str(result.confidence) if result.confidence else None,
        "polygons": str(result.polygons) if result.polygons else None,
        "classes": result.class_pixels,
        "nodata_pixels": result.nodata_pixels,
        "tiles": result.tiles,
        "tiles_skipped": result.tiles_skipped,
        "seconds": round(result.seconds, 2),
        "device": result.device,
        "bands": result.bands,
        "scaling": result.scaling,
        "resolution": result.resolution,
        "warnings": result.warnings,
        "failed": result.failed,
    }
    sharded = getattr(result, "summary", None)
    if sharded is not None:
        summary["sharded"] = sharded()
    return summary


def _print_summary(result: Any, summary: dict[str, Any]) -> None:
    total = sum(result.class_pixels.values()) or 1
    print(
        f"wrote {result.output} in {result.seconds:.1f} s on {result.device} "
        f"({result.tiles} tiles, {result.tiles_skipped} skipped as nodata)"
    )
    for extra in (result.confidence, result.polygons):
        if extra:
            print(f"wrote {extra}")
    print(f"processing resolution: {result.resolution}")
    for name, count in result.class_pixels.items():
        print(f"  {name:<24} {count:>12,d} px  {100 * count / total:5.1f} %")
    if "sharded" in summary:
        figures = summary["sharded"]
        print(
            f"{figures['shards']} shards ({figures['shards_run']} run, "
            f"{figures['shards_reused']} reused), {figures['retries']} retried"
        )
    for warning in result.warnings:
        print(f"warning: {warning}")


def _segment_sharded(
    args: argparse.Namespace, options: Any, update: Callable[[float, str], None]
) -> Any:
    """`segment --workers/--cluster`: the same job on Ray workers (Ray is imported only
    here)."""
    if args.workers is None and not args.cluster:
        raise CrossEarthError(
            "--resume continues a sharded run; give it the same --workers or --cluster"
        )
    from engine.distributed import segment_sharded

    return segment_sharded(
        args.input,
        args.output,
        args.model,
        options,
        workers=args.workers if args.workers is not None else "auto",
        cluster=args.cluster,
        resume=args.resume,
        progress=update,
    )
