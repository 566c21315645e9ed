"""`crossearth export MODEL`: adds an ONNX graph of a package's model to the package."""

from __future__ import annotations

import argparse

from engine.commands import Handler
from engine.commands.arguments import (
    add_overwrite_option,
    add_progress_option,
    positive_int,
)
from engine.commands.progress import json_event, progress_reporter


def register(commands: argparse._SubParsersAction) -> Handler:
    """Adds `export` to the engine's sub-commands; returns its handler."""
    export = commands.add_parser(
        "export",
        help="add an ONNX graph to a model package (for --runtime onnxruntime/openvino)",
        description="Export the package's model to ONNX (PyTorch's dynamo exporter), check it "
        "against the PyTorch scores on a fixed input, and record it in the card. Segmenting "
        "with the graph needs only numpy, rasterio and ONNX Runtime (or OpenVINO).",
    )
    export.add_argument("model", help="model package folder or installed model name")
    export.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (default 18)")
    export.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="largest score difference from PyTorch accepted (default 1e-4)",
    )
    add_overwrite_option(export, "replace the graph an earlier export added")
    add_progress_option(export)
    return run


def run(args: argparse.Namespace) -> int:
    """Runs `crossearth export` with the parsed arguments; returns the exit code."""
    from engine.models.export import export_onnx

    with progress_reporter(args.progress) as update:
        result = export_onnx(
            args.model,
            opset=args.opset,
            tolerance=args.tolerance,
            overwrite=args.overwrite,
            progress=update,
        )
    summary = {
        "graph": str(result.graph),
        "opset": result.opset,
        "tile": result.tile,
        "max_abs_diff": result.max_abs_diff,
        "checked_with": result.checked_with,
        "bytes": result.bytes,
    }
    if args.progress == "json":
        json_event("done", **summary)
    else:
        print(
            f"wrote {result.graph} ({result.bytes / 1e6:.1f} MB, opset {result.opset}, tiles of "
            f"{result.tile} px); max |difference| from PyTorch {result.max_abs_diff:.1e} "
            f"({result.checked_with})"
        )
    return 0
