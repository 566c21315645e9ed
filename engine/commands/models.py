"""`crossearth models`: the installed model packages, and with --available the official ones."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from engine.commands import Handler
from engine.errors import CrossEarthError


def register(commands: argparse._SubParsersAction) -> Handler:
    """Adds `models` to the engine's sub-commands; returns its handler."""
    models = commands.add_parser("models", help="list bundled and user model packages")
    models.add_argument("--json", action="store_true", help="print the list as JSON")
    models.add_argument(
        "--available",
        action="store_true",
        help="list the official models 'crossearth download' installs (classes, bands, GSD, "
        "size, license, source), marking those already installed; with --json, added to the "
        'list as "available"',
    )
    return run


def run(args: argparse.Namespace) -> int:
    """Runs `crossearth models` with the parsed arguments; returns the exit code."""
    from engine.files import describe_path
    from engine.models.packages import (
        bundled_models_dir,
        default_model_name,
        list_packages,
        user_models_dir,
    )

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


def _available_models(packages: list[Any]) -> list[dict[str, Any]]:
    """The catalog as JSON, each entry with `installed` (path of its package, or None)."""
    from engine.models.catalog import load_catalog

    installed: dict[str, str] = {}
    for package in packages:
        for key in (package.path.name, package.card.name):
            installed.setdefault(key, str(package.path))
    return [{**entry.to_json(), "installed": installed.get(entry.name)} for entry in load_catalog()]


def _print_available(available: list[dict[str, Any]]) -> None:
    from engine.models.catalog import format_size

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
