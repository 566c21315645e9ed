"""`crossearth segment-batch`: many rasters, one class raster each, an index and a mosaic."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.commands import Handler
from engine.commands.progress import json_event, progress_printer
from engine.commands.segment import add_segment_options
from engine.errors import CrossEarthError

# Options of `segment` that `segment-batch` defines its own way (files per input, its --resume).
_BATCH_OWN = {"help", "input", "output", "confidence", "polygons", "resume"}


def register(commands: argparse._SubParsersAction) -> Handler:
    """Adds `segment-batch` to the engine's sub-commands; returns its handler."""
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
    seg = argparse.ArgumentParser(add_help=False)
    add_segment_options(seg)
    for action in seg._actions:
        if action.dest in _BATCH_OWN or not action.option_strings:
            continue
        # The same options as `segment` (made by the same code), so they never drift apart.
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
    return run


def run(args: argparse.Namespace) -> int:
    """Runs `crossearth segment-batch` with the parsed arguments; returns the exit code."""
    from engine.distributed.session import parse_workers
    from engine.run.batch import BatchRequest, run_batch, segment_options_from_args

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
    update, close = progress_printer(args.progress)

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
            json_event(event, **fields)
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
        json_event(
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
