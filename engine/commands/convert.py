"""`crossearth convert`: an official CrossEarth checkpoint (.pth) into a model package."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.commands import Handler
from engine.commands.arguments import (
    add_overwrite_option,
    add_progress_option,
    names,
)
from engine.commands.progress import progress_printer
from engine.option_values import WEIGHTS_DTYPES


def _preset_names() -> list[str]:
    # The preset table is plain data; importing it does not import torch.
    from engine.crossearth.presets import CHECKPOINTS

    return sorted(CHECKPOINTS)


def register(commands: argparse._SubParsersAction) -> Handler:
    """Adds `convert` to the engine's sub-commands; returns its handler."""
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
    add_overwrite_option(
        conv,
        "replace an existing package this tool wrote (a folder holding only model.json "
        "and weights.safetensors); nothing else is ever replaced",
    )
    add_progress_option(
        conv,
        "none",
        help="json prints progress and the temporary files as JSON events (for the plugin)",
    )
    return run


def run(args: argparse.Namespace) -> int:
    """Runs `crossearth convert` with the parsed arguments; returns the exit code."""
    from engine.crossearth.convert import convert

    bands = names(args.band_names)
    report = convert(
        args.checkpoint,
        args.output,
        preset=args.preset,
        mmseg_config=args.mmseg_config,
        backbone=args.backbone,
        name=args.name,
        class_names=names(args.classes),
        bands=tuple(bands) if bands else None,
        dtype=args.dtype,
        overwrite=args.overwrite,
        progress=progress_printer(args.progress)[0] if args.progress == "json" else None,
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
