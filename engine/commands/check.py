"""`crossearth check`: what this engine environment can do (runtimes, CUDA, GPUs)."""

from __future__ import annotations

import argparse
import json

from engine.commands import Handler
from engine.error_codes import ENVIRONMENT_NO_RUNTIME
from engine.errors import CrossEarthError


def register(commands: argparse._SubParsersAction) -> Handler:
    """Adds `check` to the engine's sub-commands; returns its handler."""
    check = commands.add_parser(
        "check", help="report the engine environment: torch, CUDA, GPUs and their memory"
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    return run


def run(args: argparse.Namespace) -> int:
    """Runs `crossearth check` with the parsed arguments; returns the exit code."""
    from engine.run.devices import environment_report

    report = environment_report()
    if not report["runtimes"]:
        raise CrossEarthError(
            f"this Python ({report['executable']}) has no model runtime: neither PyTorch (the "
            "full engine) nor ONNX Runtime (the light engine); install the engine requirements",
            code=ENVIRONMENT_NO_RUNTIME,
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
