"""`crossearth fit`: which models can take a raster (bands, data type, pixel size), and what
would when none can; the advice segment's band error carries too (engine/models/model_fit.py)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import replace

from engine.error_codes import FIT_INPUT, FIT_LAYER_GSD
from engine.models.model_fit import RasterFacts, raster_facts, report_for


def register(commands: argparse._SubParsersAction) -> Callable[[argparse.Namespace], int]:
    """Adds `fit` to the engine's sub-commands; returns its handler."""
    fit = commands.add_parser(
        "fit",
        help="which models can take a raster, and what would when none can",
        description="Compares a raster's bands, data type and pixel size with each installed "
        "model and each official download, and names those that take it.",
    )
    fit.add_argument("input", nargs="?", help="the raster (or give --layer-bands)")
    fit.add_argument("--model", help="the model chosen for it: its problems come first")
    fit.add_argument(
        "--layer-bands",
        help="instead of a raster: its band names in order, e.g. red,green,blue (a web layer)",
    )
    fit.add_argument("--layer-gsd", type=float, help="with --layer-bands: its pixel size in metres")
    fit.add_argument("--layer-name", help="the name the advice gives the raster or layer")
    fit.add_argument("--json", action="store_true", help="print the report as JSON")
    return run


def run(args: argparse.Namespace) -> int:
    """Prints the fit report of the raster (or the described layer) and the chosen model."""
    from engine.errors import ConfigError

    if args.layer_gsd is not None and not args.layer_gsd > 0:
        raise ConfigError(
            f"the layer's pixel size {args.layer_gsd:g} is not a size; give metres, e.g. 0.3",
            code=FIT_LAYER_GSD,
            option="layer_gsd",
            value=args.layer_gsd,
        )
    if args.layer_bands:
        names = [part.strip().lower() for part in args.layer_bands.split(",") if part.strip()]
        facts = RasterFacts(
            args.layer_name or "the layer",
            tuple((name,) for name in names),
            "uint8",
            args.layer_gsd,
        )
    elif args.input:
        facts = raster_facts(args.input)
        if args.layer_name:
            facts = replace(facts, name=args.layer_name)
    else:
        raise ConfigError(
            "fit needs a raster, or the band names of a layer", code=FIT_INPUT, option="input"
        )
    report = report_for(facts, args.model)
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        print(report.text() or f"'{facts.name}' fits the model '{args.model}'.")
    return 0
