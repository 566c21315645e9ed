"""`crossearth download NAME`: an official model from its hub, installed as a package."""

from __future__ import annotations

import argparse

from engine.commands import Handler
from engine.commands.arguments import add_overwrite_option, add_progress_option
from engine.commands.progress import json_event, progress_reporter


def register(commands: argparse._SubParsersAction) -> Handler:
    """Adds `download` to the engine's sub-commands; returns its handler."""
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
    add_overwrite_option(
        down, "replace the installed package of that name (only a package this tool wrote)"
    )
    add_progress_option(down)
    return run


def run(args: argparse.Namespace) -> int:
    """Runs `crossearth download` with the parsed arguments; returns the exit code."""
    from engine.models.catalog import format_size
    from engine.models.download import download, download_summary

    with progress_reporter(args.progress) as update:
        result = download(
            args.name,
            keep_checkpoint=args.keep_checkpoint,
            overwrite=args.overwrite,
            progress=update,
        )
    if args.progress == "json":
        json_event("done", **download_summary(result))
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
