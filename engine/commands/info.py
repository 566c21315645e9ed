"""`crossearth info MODEL`: a model package's card."""

from __future__ import annotations

import argparse
import json

from engine.commands import Handler


def register(commands: argparse._SubParsersAction) -> Handler:
    """Adds `info` to the engine's sub-commands; returns its handler."""
    info = commands.add_parser("info", help="show a model package's card")
    info.add_argument("model", help="model package folder or installed model name")
    info.add_argument("--json", action="store_true", help="print the card as JSON")
    return run


def run(args: argparse.Namespace) -> int:
    """Runs `crossearth info` with the parsed arguments; returns the exit code."""
    from engine.files import describe_path
    from engine.models.packages import find_package

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
