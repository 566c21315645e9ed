"""`crossearth` command line: segment rasters, convert checkpoints, list and inspect models."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .cli_messages import cli_message, error_event
from .errors import Cancelled, CrossEarthError, InputError, SegmentationCancelled
from .files import add_temporary_listener, remove_run_temporaries, remove_temporary_listener
from .option_values import CONFIDENCE_NODATA, WEIGHTS_DTYPES, parse_band_numbers

log = logging.getLogger("engine.cli")


def _int_list(text: str) -> list[int]:
    try:
        return parse_band_numbers(text)
    except CrossEarthError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _workers(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a number of workers; give e.g. 2, or auto"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1 (or auto)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must not be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The `crossearth` parser: the engine's sub-commands and those of the entry-point group."""
    parser = argparse.ArgumentParser(
        prog="crossearth",
        description="Segment GDAL rasters with CrossEarth model packages.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    seg = _add_segment_command(commands)
    _add_batch_command(commands, seg)
    _add_convert_command(commands)
    _add_models_command(commands)
    _add_download_command(commands)
    _add_check_command(commands)
    _add_plugin_commands(commands)
    _add_info_command(commands)
    _add_export_command(commands)
    for name, register in _own_commands().items():
        handler = register(commands)
        commands.choices[name].set_defaults(**{_HANDLER: handler})
    return parser


def _own_commands() -> dict[str, Callable[[argparse._SubParsersAction], Any]]:
    """The engine's commands that live in modules of their own (engine/commands/)."""
    from .commands import fit, serve

    return {"fit": fit.register, "serve": serve.register}


def _add_segment_command(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
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
    # In this order, which --help shows; segment-batch reuses all but the files.
    _add_model_options(seg)
    _add_output_options(seg)
    _add_resolution_options(seg)
    _add_run_options(seg)
    return seg


def _add_model_options(seg: argparse.ArgumentParser) -> None:
    """Which model, on which device, and how the raster is tiled and scaled for it."""
    seg.add_argument(
        "--model",
        default=None,
        help="model package folder or installed model name (default: bundled)",
    )
    seg.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    seg.add_argument("--tile", type=_positive_int, help="tile size in pixels (default: model's)")
    seg.add_argument(
        "--overlap",
        type=_non_negative_int,
        help="overlap of neighbouring tiles in pixels (default: model's)",
    )
    seg.add_argument("--batch", type=_positive_int, default=4, help="tiles per batch (default 4)")
    seg.add_argument(
        "--bands", type=_int_list, help="source bands in the model's order, 1-based, e.g. 3,2,1"
    )
    seg.add_argument(
        "--scaling",
        default="auto",
        help="auto (8-bit as is, else 2-98%% stretch), none, or LOW,HIGH",
    )


def _add_output_options(seg: argparse.ArgumentParser) -> None:
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
    seg.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (never the input)",
    )


def _add_resolution_options(seg: argparse.ArgumentParser) -> None:
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


def _add_run_options(seg: argparse.ArgumentParser) -> None:
    """Threads, scaling out on Ray, precision and the progress display."""
    seg.add_argument("--threads", type=_positive_int, help="CPU threads for the model")
    seg.add_argument(
        "--workers",
        type=_workers,
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
        choices=["auto", "torch", "onnxruntime", "openvino"],
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
    seg.add_argument(
        "--progress",
        choices=["bar", "json", "none"],
        default="bar",
        help="progress display; json prints one event per line (for the plugin)",
    )


def _add_convert_command(commands: argparse._SubParsersAction) -> None:
    conv = commands.add_parser(
        "convert",
        help="convert an official CrossEarth checkpoint (.pth) into a model package",
        description="Convert an official CrossEarth checkpoint (mmseg layout) into a model "
        "package (weights.safetensors + model.json). Presets: " + ", ".join(_preset_names()),
    )
    conv.add_argument("checkpoint", type=Path, help="official checkpoint (.pth)")
    conv.add_argument("output", type=Path, help="package folder to create")
    source = conv.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="the released checkpoint this is (see above)")
    source.add_argument(
        "--mmseg-config", type=Path, help="the official mmseg config (.py) it was trained with"
    )
    conv.add_argument(
        "--backbone",
        type=Path,
        help="frozen DINOv2 weights (dinov2_converted.pth) for rein+head checkpoints",
    )
    conv.add_argument("--name", help="model name in the card (default: the folder name)")
    conv.add_argument(
        "--classes", help="class names, comma-separated (with --mmseg-config, when it has none)"
    )
    conv.add_argument(
        "--band-names", help="input band names in the model's order, e.g. nir,red,green"
    )
    conv.add_argument(
        "--dtype",
        choices=WEIGHTS_DTYPES,
        default="float32",
        help="weight precision in the package (default float32, exact)",
    )
    conv.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing package this tool wrote (a folder holding only model.json "
        "and weights.safetensors); nothing else is ever replaced",
    )
    conv.add_argument(
        "--progress",
        choices=["bar", "json", "none"],
        default="none",
        help="json prints progress and the temporary files as JSON events (for the plugin)",
    )


def _add_models_command(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="list bundled and user model packages")
    models.add_argument("--json", action="store_true", help="print the list as JSON")
    models.add_argument(
        "--available",
        action="store_true",
        help="list the official models 'crossearth download' installs (classes, bands, GSD, "
        "size, license, source), marking those already installed; with --json, added to the "
        'list as "available"',
    )


def _add_download_command(commands: argparse._SubParsersAction) -> None:
    down = commands.add_parser(
        "download",
        help="download an official CrossEarth model from Hugging Face and install it",
        description="Download a released CrossEarth checkpoint with huggingface_hub (cached, "
        "resumed, SHA-256 checked; HF_ENDPOINT, HF_HUB_OFFLINE, HF_TOKEN and proxies apply) "
        "and convert it into a package in the user models folder. See 'crossearth models "
        "--available' for the names.",
    )
    down.add_argument("name", help="the model's name, e.g. potsdam-r-source")
    down.add_argument(
        "--keep-checkpoint",
        action="store_true",
        help="keep the downloaded .pth in the Hugging Face cache (default: delete what this "
        "download fetched once the package is written)",
    )
    down.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the installed package of that name (only a package this tool wrote)",
    )
    down.add_argument(
        "--progress",
        choices=["bar", "json", "none"],
        default="bar",
        help="progress display; json prints one event per line (for the plugin)",
    )


def _add_check_command(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser(
        "check", help="report the engine environment: torch, CUDA, GPUs and their memory"
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")


def _add_export_command(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="add an ONNX graph to a model package (for --runtime onnxruntime/openvino)",
        description="Export the package's model to ONNX (PyTorch's dynamo exporter), check it "
        "against the PyTorch scores on a fixed input, and record it in the card. Segmenting "
        "with the graph needs only numpy, rasterio and ONNX Runtime (or OpenVINO).",
    )
    export.add_argument("model", help="model package folder or installed model name")
    export.add_argument("--opset", type=_positive_int, default=18, help="ONNX opset (default 18)")
    export.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest score difference from PyTorch accepted (default 1e-4)",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace the graph an earlier export added"
    )
    export.add_argument("--progress", choices=["bar", "json", "none"], default="bar")


def _add_info_command(commands: argparse._SubParsersAction) -> None:
    info = commands.add_parser("info", help="show a model package's card")
    info.add_argument("model", help="model package folder or installed model name")
    info.add_argument("--json", action="store_true", help="print the card as JSON")


# Sub-commands other packages plug in, found like rasterio finds its `rio` plugins: each entry
# of this group names `register(subparsers) -> handler`, which adds the sub-parser of the
# entry's name and returns the function that runs it (training/cli.py provides train/evaluate).
COMMAND_GROUP = "crossearth.commands"
# `segment`: the class raster is complete and in place, an optional output is not.
PARTIAL_EXIT_CODE = 3
_HANDLER = "_plugin_handler"
_UNAVAILABLE = "_plugin_unavailable"


def _add_plugin_commands(commands: argparse._SubParsersAction) -> None:
    """The commands of the entry-point group. One that cannot be loaded (its package not
    installed, or broken) keeps its name and says why in one line when it is run, so it never
    stops the engine's own commands."""
    from .project import entry_points

    for point in entry_points(COMMAND_GROUP):
        if point.name in commands.choices:
            continue  # the engine's own commands cannot be replaced
        try:
            handler = point.load()(commands)
            if point.name not in commands.choices or not callable(handler):
                raise TypeError(f"{point.value} did not add a '{point.name}' command")
        except Exception as exc:  # a plugin's failure must not break the engine's commands
            _add_unavailable_command(commands, point.name, _plugin_problem(point, exc))
            continue
        commands.choices[point.name].set_defaults(**{_HANDLER: handler})


def _plugin_problem(point: Any, exc: Exception) -> str:
    package = point.value.split(":")[0].split(".")[0]
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in (
        FULL_ENGINE_MODULES
    ):
        return str(_needs_full_engine(point.name, exc.name or ""))
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == package:
        return (
            f"the '{point.name}' command is not available: {package} is not installed (the "
            f"package that provides it, entry point {point.name} = {point.value})"
        )
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return (
        f"the '{point.name}' command is not available: its entry point {point.value} is broken "
        f"({type(exc).__name__}{': ' + detail if detail else ''}); reinstall the package "
        "that provides it"
    )


def _add_unavailable_command(
    commands: argparse._SubParsersAction, name: str, problem: str
) -> None:
    if name in commands.choices:  # a register() that failed half-way
        del commands.choices[name]
        commands._choices_actions[:] = [a for a in commands._choices_actions if a.dest != name]
    # No options of its own: whatever follows the name is ignored, the one-line reason shown.
    placeholder = commands.add_parser(
        name, add_help=False, help="not available (run it to see why)"
    )
    placeholder.set_defaults(**{_UNAVAILABLE: problem})


def _json_event(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def _progress_printer(mode: str) -> tuple[Callable[[float, str], None], Callable[[], None]]:
    if mode == "json":
        return (lambda f, m: _json_event("progress", fraction=round(f, 4), message=m)), (
            lambda: None
        )
    if mode == "none":
        return (lambda f, m: None), (lambda: None)
    from tqdm import tqdm

    bars: list[tqdm] = []  # created on the first update, so input errors print no empty bar

    def update(fraction: float, message: str) -> None:
        if not bars:
            bars.append(
                tqdm(
                    total=100,
                    unit="%",
                    file=sys.stderr,
                    bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}",
                )
            )
        bar = bars[0]
        bar.n = round(fraction * 100, 1)
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    def close() -> None:
        for bar in bars:
            bar.close()

    return update, close


def _cmd_segment(args: argparse.Namespace) -> int:
    from .pipeline import SegmentOptions, segment
    from .resolution import parse_gsd
    from .subset import parse_extent

    options = SegmentOptions(
        tile_size=args.tile,
        overlap=args.overlap,
        batch_size=args.batch,
        bands=args.bands,
        scaling=args.scaling,
        device=args.device,
        threads=args.threads,
        amp=not args.no_amp,
        confidence=args.confidence,
        confidence_dtype=args.confidence_type,
        polygons=args.polygons,
        extent=parse_extent(args.extent) if args.extent else None,
        overwrite=args.overwrite,
        gsd=parse_gsd(args.gsd),
        output_grid=args.output_grid,
        min_region=args.min_region,
        keep_classes=_names(args.keep_classes),
        simplify_m=args.simplify,
        runtime=args.runtime,
        compile=args.compile,
    )
    update, close = _progress_printer(args.progress)
    try:
        if args.workers is not None or args.cluster or args.resume:
            result = _segment_sharded(args, options, update)
        else:
            result = segment(args.input, args.output, args.model, options, progress=update)
    except InputError as exc:
        if exc.code != "input.bands_missing":
            raise
        from .model_fit import with_advice

        raise with_advice(exc, args.input, args.model) from None
    finally:
        close()
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
    if args.progress == "json":
        _json_event("done", **summary)
    else:
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
        if sharded is not None:
            figures = summary["sharded"]
            print(
                f"{figures['shards']} shards ({figures['shards_run']} run, "
                f"{figures['shards_reused']} reused), {figures['retries']} retried"
            )
        for warning in result.warnings:
            print(f"warning: {warning}")
    for name, problem in result.failed.items():
        print(f"crossearth: {name} not written: {problem}", file=sys.stderr)
    # 3: the class raster is complete and in place, an optional output is missing.
    return PARTIAL_EXIT_CODE if result.failed else 0


def _segment_sharded(
    args: argparse.Namespace, options: Any, update: Callable[[float, str], None]
) -> Any:
    """`segment --workers/--cluster`: the same job on Ray workers (Ray is imported only
    here)."""
    if args.workers is None and not args.cluster:
        raise CrossEarthError(
            "--resume continues a sharded run; give it the same --workers or --cluster"
        )
    from .distributed import segment_sharded

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


# Options of `segment` that `segment-batch` defines its own way (files per input, its --resume).
_BATCH_OWN = {"help", "input", "output", "confidence", "polygons", "resume"}


def _add_batch_command(commands: argparse._SubParsersAction, seg: argparse.ArgumentParser) -> None:
    batch = commands.add_parser(
        "segment-batch",
        help="segment many rasters: one output each, an index and a VRT mosaic",
        description="Segments every input into --output-dir. INPUTS are raster files, folders "
        "(the rasters inside, by extension: .tif, .vrt, .img, .jp2, .png, ...), globs "
        "('scenes/**/*.tif'), list files (@list.txt or a .txt file: one path, URL or GDAL /vsi "
        "path per line, relative paths from the list's folder), URLs (https://, s3://, gs://) "
        "and GDAL /vsi paths. Outputs are named after each input's file name: "
        "<stem>_classes.tif, <stem>_confidence.tif (--confidence), <stem>_classes.gpkg "
        "(--polygons); equal stems from different folders get _2, _3, ... in input order "
        "(a/x.tif -> x_classes.tif, b/x.tif -> x_2_classes.tif). index.gpkg holds each "
        "input's footprint (in EPSG:4326 when the inputs' CRSs differ) with its status (ok, "
        "failed, skipped), message, pixels per class (JSON) and seconds; mosaic.vrt joins the "
        "class rasters when they share a CRS. Every input is opened before the first one runs; "
        "an input that fails later is recorded and the batch "
        "goes on. Exit code 0 when every input is ok or skipped, 2 when some failed.",
    )
    batch.add_argument("inputs", nargs="+", metavar="INPUT", help="rasters, folders, globs, lists")
    batch.add_argument(
        "--output-dir", type=Path, required=True, help="folder for the outputs (created)"
    )
    for action in seg._actions:
        if action.dest in _BATCH_OWN or not action.option_strings:
            continue
        # The same options as `segment` (the same Action objects), so they never drift apart.
        batch._add_action(action)
    batch.add_argument(
        "--confidence", action="store_true", help="also write <stem>_confidence.tif per input"
    )
    batch.add_argument(
        "--polygons", action="store_true", help="also write <stem>_classes.gpkg per input"
    )
    batch.add_argument(
        "--resume",
        action="store_true",
        help="finish an earlier batch into the same --output-dir: inputs whose outputs all "
        "exist are skipped, the rest (and the index and mosaic) are written again",
    )


def _cmd_segment_batch(args: argparse.Namespace) -> int:
    from .batch import BatchRequest, run_batch, segment_options_from_args
    from .distributed.session import parse_workers

    if args.overwrite and args.resume:
        raise CrossEarthError(
            "--overwrite redoes every input and --resume keeps finished ones; pass one of them"
        )
    workers = getattr(args, "workers", None)
    parse_workers(workers)  # a bad value is refused before any input runs
    request = BatchRequest(
        items=args.inputs,
        output_dir=args.output_dir,
        model=args.model,
        options=segment_options_from_args(args),
        confidence=args.confidence,
        polygons=args.polygons,
        resume=args.resume,
        workers=workers,
        cluster=getattr(args, "cluster", None) or None,
    )
    json_mode = args.progress == "json"
    update, close = _progress_printer(args.progress)

    def say(line: str) -> None:
        if args.progress == "bar":
            from tqdm import tqdm

            tqdm.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def on_event(event: str, fields: dict[str, Any]) -> None:
        if event == "progress":
            update(fields["fraction"], fields["message"])
        elif json_mode:
            _json_event(event, **fields)
        elif event == "input_done":
            target = f" -> {fields['output']}" if fields["output"] else ""
            seconds = f" in {fields['seconds']:.1f} s" if fields["seconds"] is not None else ""
            message = f": {fields['message']}" if fields["message"] else ""
            say(
                f"[{fields['index']}/{fields['total']}] {fields['status']:<7} "
                f"{fields['input']}{target}{seconds}{message}"
            )

    try:
        result = run_batch(request, on_event)
    finally:
        close()
    counts = {status: result.count(status) for status in ("ok", "failed", "skipped")}
    if json_mode:
        _json_event(
            "done",
            inputs=len(result.rows),
            **counts,
            index=str(result.index),
            mosaic=str(result.mosaic) if result.mosaic else None,
            note=result.note or None,
            seconds=round(result.seconds, 2),
        )
    else:
        print(
            f"{len(result.rows)} inputs in {result.seconds:.1f} s: {counts['ok']} ok, "
            f"{counts['skipped']} skipped, {counts['failed']} failed"
        )
        print(f"index: {result.index}")
        print(f"mosaic: {result.mosaic}" if result.mosaic else result.note)
    if counts["failed"]:
        print(
            f"crossearth: {counts['failed']} of {len(result.rows)} inputs failed (status "
            f"'failed' in {result.index}); the others are done",
            file=sys.stderr,
        )
        return 2
    return 0


def _preset_names() -> list[str]:
    # The preset table is plain data; importing it does not import torch.
    from .crossearth.presets import CHECKPOINTS

    return sorted(CHECKPOINTS)


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise CrossEarthError(f"'{text}' has an empty name; separate names with commas")
    return names


def _cmd_convert(args: argparse.Namespace) -> int:
    from .crossearth.convert import convert

    bands = _names(args.band_names)
    report = convert(
        args.checkpoint,
        args.output,
        preset=args.preset,
        mmseg_config=args.mmseg_config,
        backbone=args.backbone,
        name=args.name,
        class_names=_names(args.classes),
        bands=tuple(bands) if bands else None,
        dtype=args.dtype,
        overwrite=args.overwrite,
        progress=_progress_printer(args.progress)[0] if args.progress == "json" else None,
    )
    card = report.package.card
    for warning in report.warnings:
        print(f"warning: {warning}")
    print(
        f"wrote {report.package.path}: {card.name}, {card.num_classes} classes "
        f"({', '.join(card.class_names)}), bands {'/'.join(card.input.bands)}, "
        f"tile {card.tile_size}/{card.tile_stride}"
    )
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from .catalog import format_size
    from .download import download, download_summary

    update, close = _progress_printer(args.progress)
    try:
        result = download(
            args.name,
            keep_checkpoint=args.keep_checkpoint,
            overwrite=args.overwrite,
            progress=update,
        )
    finally:
        close()
    if args.progress == "json":
        _json_event("done", **download_summary(result))
        return 0
    card = result.package.card
    if result.downloaded:
        names = ", ".join(path.name for path in result.downloaded)
        print(f"downloaded {names} ({format_size(result.downloaded_bytes)})")
    print(
        f"installed {card.name} in {result.package.path}: {card.num_classes} classes "
        f"({', '.join(card.class_names)}), bands {'/'.join(card.input.bands)}"
    )
    for path in result.downloaded:
        if path not in result.kept:
            print(
                f"removed {path.name} from the Hugging Face cache again (--keep-checkpoint "
                "keeps it)"
            )
    for path in result.kept:
        print(f"kept in the Hugging Face cache: {path}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    return 0


def _available_models(packages: list[Any]) -> list[dict[str, Any]]:
    """The catalog as JSON, each entry with `installed` (path of its package, or None)."""
    from .catalog import load_catalog

    installed: dict[str, str] = {}
    for package in packages:
        for key in (package.path.name, package.card.name):
            installed.setdefault(key, str(package.path))
    return [{**entry.to_json(), "installed": installed.get(entry.name)} for entry in load_catalog()]


def _print_available(available: list[dict[str, Any]]) -> None:
    from .catalog import format_size

    print("official models ('crossearth download NAME' installs one):")
    licenses = {item["license"] for item in available}
    for item in available:
        if item["installed"]:
            state = "installed"
        elif item["downloadable"]:
            state = format_size(item["size"], item["size_exact"])
        else:
            state = "not released"
        gsd = f"{item['gsd_m']:g} m" if item["gsd_m"] else "GSD not stated"
        classes = ", ".join(c["name"] for c in item["classes"])
        print(f"{item['name']}  [{state}]  {item['description']}")
        print(
            f"    {len(item['classes'])} classes: {classes}; bands {'/'.join(item['bands'])}; "
            f"{gsd}; tile {item['tile'][0]} px"
        )
        source = item["checkpoint"]
        if source:
            backbone = item["backbone"]
            extra = f" + {backbone['filename']}" if backbone else ""
            print(
                f"    source: Hugging Face {source['repo']}, {source['filename']}{extra} "
                f"(revision {source['revision'][:12]})"
            )
        if len(licenses) > 1:
            print(f"    license: {item['license']}")
    if len(licenses) == 1:
        print(f"license: {licenses.pop()}")


def _cmd_models(args: argparse.Namespace) -> int:
    from .files import describe_path
    from .packages import bundled_models_dir, default_model_name, list_packages, user_models_dir

    # Paths stay as the file system has them in JSON (the plugin passes them back); printed
    # text shows undecodable bytes as escapes instead of failing.
    packages, problems = list_packages()
    default = default_model_name()
    available = None
    problems_json: list[dict[str, str]] = []
    if args.available:
        try:
            available = _available_models(packages)
        except CrossEarthError as exc:
            if not args.json:
                raise
            # A broken catalog file must not hide the installed models from the plugin.
            available = []
            catalog = os.environ.get("CROSSEARTH_MODEL_CATALOG", "")
            problems_json = [{"path": catalog, "problem": str(exc)}]
    if args.json:
        print(
            json.dumps(
                {
                    "bundled_dir": str(bundled_models_dir()),
                    "user_dir": str(user_models_dir()),
                    "default": default,
                    "models": [
                        {
                            "name": p.card.name,
                            "path": str(p.path),
                            "source": p.source,
                            "default": default in (p.path.name, p.card.name),
                            "card": p.card.to_json_dict(),
                        }
                        for p in packages
                    ],
                    "problems": [problem.to_json() for problem in problems] + problems_json,
                    **({"available": available} if available is not None else {}),
                }
            )
        )
        return 0
    if available is not None:
        _print_available(available)
        return 0
    print(f"bundled models: {describe_path(bundled_models_dir())}")
    print(f"user models:    {describe_path(user_models_dir())}")
    if not packages:
        print("no model packages installed")
    for package in packages:
        card = package.card
        marker = " (default)" if package.path.name == default or card.name == default else ""
        print(
            f"{card.name}{marker}  v{card.version}  [{package.source}]  {card.num_classes} "
            f"classes, bands {'/'.join(card.input.bands)}  {describe_path(package.path)}"
        )
    for problem in problems:
        print(f"broken package: {problem}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    update, close = _progress_printer(args.progress)
    try:
        result = export_onnx(
            args.model,
            opset=args.opset,
            tolerance=args.tolerance,
            overwrite=args.overwrite,
            progress=update,
        )
    finally:
        close()
    summary = {
        "graph": str(result.graph),
        "opset": result.opset,
        "tile": result.tile,
        "max_abs_diff": result.max_abs_diff,
        "checked_with": result.checked_with,
        "bytes": result.bytes,
    }
    if args.progress == "json":
        _json_event("done", **summary)
    else:
        print(
            f"wrote {result.graph} ({result.bytes / 1e6:.1f} MB, opset {result.opset}, tiles of "
            f"{result.tile} px); max |difference| from PyTorch {result.max_abs_diff:.1e} "
            f"({result.checked_with})"
        )
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .files import describe_path
    from .packages import find_package

    package = find_package(args.model)
    card = package.card
    if args.json:
        print(json.dumps(card.to_json_dict(), indent=2))
        return 0
    print(f"{card.name} v{card.version}  ({describe_path(package.path)})")
    if card.description:
        print(card.description)
    print(f"architecture: {card.architecture} {json.dumps(card.config)}")
    low, high = card.input.value_range
    print(
        f"input bands:  {', '.join(card.input.bands)}; values {low:g}..{high:g}, "
        f"mean {list(card.input.mean)}, std {list(card.input.std)}"
    )
    print(
        f"tiles:        {card.tile_size} px, stride {card.tile_stride} px (multiple of "
        f"{card.size_multiple})"
    )
    print(f"GSD:          {card.gsd_m:g} m" if card.gsd_m else "GSD:          not stated")
    print(f"license:      {card.license}")
    print("classes:")
    for c in card.classes:
        print(f"  {c.index:>3}  {c.name:<24} #{c.color[0]:02x}{c.color[1]:02x}{c.color[2]:02x}")
    if card.metrics:
        print(f"metrics:      {json.dumps(card.metrics)}")
    if card.provenance:
        print(f"provenance:   {json.dumps(card.provenance)}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .devices import environment_report

    report = environment_report()
    if not report["runtimes"]:
        raise CrossEarthError(
            f"this Python ({report['executable']}) has no model runtime: neither PyTorch (the "
            "full engine) nor ONNX Runtime (the light engine); install the engine requirements",
            code="environment.no_runtime",
            executable=report["executable"],
        )
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"python {report['python']} ({report['executable']})")
    runtimes = ", ".join(f"{name} {version}" for name, version in report["runtimes"].items())
    print(f"runtimes: {runtimes or 'none'}; rasterio {report['rasterio']}")
    print(f"CUDA available: {'yes' if report['cuda_available'] else 'no'}")
    ray = report.get("ray")
    print(f"ray {ray} (--workers, --cluster)" if ray else "ray not installed (no --workers)")
    for device in report["devices"]:
        memory = f", {device['memory_gib']} GiB" if "memory_gib" in device else ""
        print(f"  {device['id']}: {device['name']}{memory}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "segment": _cmd_segment,
    "segment-batch": _cmd_segment_batch,
    "convert": _cmd_convert,
    "models": _cmd_models,
    "download": _cmd_download,
    "check": _cmd_check,
    "info": _cmd_info,
    "export": _cmd_export,
}


def _terminate(signum: int, frame: Any) -> None:
    # A terminated worker (the plugin's Cancel) unwinds like Ctrl-C, so temporary files go.
    raise KeyboardInterrupt


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    # Library warnings (e.g. rasterio's NotGeoreferencedWarning for a JPEG) as one line each,
    # without the source line Python prints by default.
    text = " ".join(str(message).split())
    print(f"warning: {text}", file=sys.stderr)


def _safe_streams() -> None:
    # File names that are not valid UTF-8 reach us as surrogate escapes; printing them must
    # not end in a UnicodeEncodeError.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


@contextlib.contextmanager
def _gdal_messages_to_logging() -> Iterator[None]:
    """A rasterio Env for the whole command: inside one, GDAL reports to Python's logging."""
    import rasterio

    with rasterio.Env():
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `crossearth` command line and returns its exit code: 0 done, 2 bad input
    (one 'crossearth: ...' line on stderr, no traceback), 3 a segment whose class raster is
    complete but an optional output failed, 130 interrupted."""
    _safe_streams()
    warnings.showwarning = _one_line_warning
    args = _parse(build_parser(), list(argv) if argv is not None else sys.argv[1:])
    problem = getattr(args, _UNAVAILABLE, None)
    if problem is not None:
        print(f"crossearth: {problem}", file=sys.stderr)
        return 2
    # Commands that record how they were run (training provenance) read it from here.
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # GDAL's own messages: the engine turns each failure into one line of its own, so GDAL's
    # words are for -v only (without an Env, GDAL would print them to stderr itself).
    logging.getLogger("rasterio._env").setLevel(logging.INFO if args.verbose else logging.CRITICAL)
    signal.signal(signal.SIGTERM, _terminate)
    json_mode = getattr(args, "progress", None) == "json"
    announce = _announce_temporary if json_mode else None
    if announce is not None:
        add_temporary_listener(announce)
    try:
        handler = getattr(args, _HANDLER, None) or COMMANDS[args.command]
        with _gdal_messages_to_logging():
            return handler(args)
    except Cancelled as exc:
        remove_run_temporaries()
        _report_error(exc, json_mode, "cancelled")
        return 130
    except KeyboardInterrupt:
        remove_run_temporaries()
        _report_error(
            SegmentationCancelled("interrupted; no output was written"), json_mode, "cancelled"
        )
        return 130
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in FULL_ENGINE_MODULES:
            remove_run_temporaries()
            raise
        remove_run_temporaries()
        _report_error(_needs_full_engine(args.command, exc.name or ""), json_mode, "error")
        return 2
    except CrossEarthError as exc:
        remove_run_temporaries()
        _report_error(exc, json_mode, "error")
        return 2
    except BaseException:
        remove_run_temporaries()
        raise
    finally:
        if announce is not None:
            remove_temporary_listener(announce)


# What the light engine environment (numpy, rasterio, ONNX Runtime) lacks: PyTorch and what
# builds on it. Commands that need them say so in one line there.
FULL_ENGINE_MODULES = (
    "torch", "timm", "safetensors", "torchvision", "onnx", "onnxscript", "scipy", "huggingface_hub",
)


def _needs_full_engine(command: str, module: str) -> CrossEarthError:
    return CrossEarthError(
        f"'{command}' needs {module.split('.')[0]}, which this engine environment does not have "
        "(a light environment segments with ONNX graphs only); set up the full engine "
        "environment (PyTorch) for it",
        code="environment.light",
        command=command,
        module=module.split(".")[0],
    )


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parsed arguments. A usage error exits with 2 as argparse does, and in JSON progress
    mode is also an error event (code "usage"), so front ends get every error the same way."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            args, unknown = parser.parse_known_args(argv)
            # An unavailable command takes no options; main() says why it cannot run.
            if unknown and getattr(args, _UNAVAILABLE, None) is None:  # as parse_args() says
                parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as exc:
        text = captured.getvalue()
        sys.stderr.write(text)
        if exc.code == 2 and _json_requested(argv):
            lines = text.strip().splitlines()
            message = lines[-1].split("error: ", 1)[-1] if lines else "invalid arguments"
            usage = " ".join(line.strip() for line in lines[:-1])
            _json_event("error", code="usage", message=message, fields={"usage": usage})
        raise
    sys.stderr.write(captured.getvalue())
    return args


def _json_requested(argv: list[str]) -> bool:
    return any(
        a == "--progress=json" or (a == "--progress" and b == "json")
        for a, b in zip(argv, [*argv[1:], ""], strict=True)
    )


def _announce_temporary(path: Path) -> None:
    # The plugin removes exactly these names if it ever has to kill the worker.
    _json_event("temporary", path=os.fsdecode(path))


def _report_error(error: CrossEarthError, json_mode: bool, event: str) -> None:
    # The plugin words the error from its code and fields; a shell user reads the flags.
    if json_mode:
        print(json.dumps(error_event(error, event)), flush=True)
    print(f"crossearth: {cli_message(error)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
