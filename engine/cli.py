"""`crossearth`: the command line. Its sub-commands come from the entry-point group
`crossearth.commands`, as rasterio's `rio` finds its plugins: the engine's own (engine/commands/),
training's, and any other package's. This module parses, runs the chosen handler, and turns
every failure into one line (or one JSON event) and an exit code."""

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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.commands.cli_messages import cli_message, error_event
from engine.commands.progress import json_event
from engine.error_codes import ENVIRONMENT_LIGHT, USAGE
from engine.errors import Cancelled, CrossEarthError, SegmentationCancelled
from engine.files import add_temporary_listener, remove_run_temporaries, remove_temporary_listener

log = logging.getLogger("engine.cli")

# Each entry of this group names `register(subparsers) -> handler`, which adds the sub-parser of
# the entry's name and returns the function that runs it.
COMMAND_GROUP = "crossearth.commands"
_HANDLER = "_plugin_handler"
_UNAVAILABLE = "_plugin_unavailable"


def build_parser() -> argparse.ArgumentParser:
    """The `crossearth` parser: the sub-commands of the entry-point group."""
    parser = argparse.ArgumentParser(
        prog="crossearth",
        description="Segment GDAL rasters with CrossEarth model packages.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_commands(commands)
    return parser


def _command_points() -> list[Any]:
    """The group's entry points, the engine's own first (in ENGINE_COMMANDS' order; their
    names cannot be taken by another package), then the others by name."""
    from importlib.metadata import EntryPoint

    from engine.commands import ENGINE_COMMANDS
    from engine.project import entry_points

    points = entry_points(COMMAND_GROUP)
    own = [EntryPoint(name, value, COMMAND_GROUP) for name, value in ENGINE_COMMANDS.items()]
    return own + [point for point in points if point.name not in ENGINE_COMMANDS]


def _add_commands(commands: argparse._SubParsersAction) -> None:
    """Every command of the group. One that cannot be loaded (its package not installed, or
    broken) keeps its name and says why in one line when it is run, so it never stops the
    others."""
    for point in _command_points():
        if point.name in commands.choices:
            continue  # the first of a name wins: the engine's own commands cannot be replaced
        try:
            handler = point.load()(commands)
            if point.name not in commands.choices or not callable(handler):
                raise TypeError(f"{point.value} did not add a '{point.name}' command")
        except Exception as exc:  # a plugin's failure must not break the other commands
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


def _add_unavailable_command(commands: argparse._SubParsersAction, name: str, problem: str) -> None:
    if name in commands.choices:  # a register() that failed half-way
        del commands.choices[name]
        commands._choices_actions[:] = [a for a in commands._choices_actions if a.dest != name]
    # No options of its own: whatever follows the name is ignored, the one-line reason shown.
    placeholder = commands.add_parser(
        name, add_help=False, help="not available (run it to see why)"
    )
    placeholder.set_defaults(**{_UNAVAILABLE: problem})


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
    # The Hugging Face Hub client logs each retry of a failing request (two lines a try); the
    # download's failure is one line of its own, so the retries are for -v only. Read by
    # huggingface_hub when it is first imported, which is later (downloads only).
    os.environ.setdefault("HF_HUB_VERBOSITY", "info" if args.verbose else "error")
    signal.signal(signal.SIGTERM, _terminate)
    json_mode = getattr(args, "progress", None) == "json"
    announce = _announce_temporary if json_mode else None
    if announce is not None:
        add_temporary_listener(announce)
    try:
        handler = getattr(args, _HANDLER)
        with _gdal_messages_to_logging():
            return handler(args)
    except BaseException as exc:
        remove_run_temporaries()
        failure = _failure(exc, args.command)
        if failure is None:
            raise
        error, event, code = failure
        _report_error(error, json_mode, event)
        return code
    finally:
        if announce is not None:
            remove_temporary_listener(announce)


def _failure(exc: BaseException, command: str) -> tuple[CrossEarthError, str, int] | None:
    """The error to report, its event and the exit code for what ended a command (None: a bug,
    which keeps its traceback)."""
    if isinstance(exc, Cancelled):
        return exc, "cancelled", 130
    if isinstance(exc, KeyboardInterrupt):
        return SegmentationCancelled("interrupted; no output was written"), "cancelled", 130
    if isinstance(exc, ModuleNotFoundError):
        module = exc.name or ""
        if module.split(".")[0] not in FULL_ENGINE_MODULES:
            return None
        return _needs_full_engine(command, module), "error", 2
    if isinstance(exc, CrossEarthError):
        return exc, "error", 2
    return None


# What the light engine environment (numpy, rasterio, ONNX Runtime) lacks: PyTorch and what
# builds on it. Commands that need them say so in one line there.
FULL_ENGINE_MODULES = (
    "torch",
    "timm",
    "safetensors",
    "torchvision",
    "onnx",
    "onnxscript",
    "scipy",
    "huggingface_hub",
)


def _needs_full_engine(command: str, module: str) -> CrossEarthError:
    return CrossEarthError(
        f"'{command}' needs {module.split('.')[0]}, which this engine environment does not have "
        "(a light environment segments with ONNX graphs only); set up the full engine "
        "environment (PyTorch) for it",
        code=ENVIRONMENT_LIGHT,
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
            json_event("error", code=USAGE, message=message, fields={"usage": usage})
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
    json_event("temporary", path=os.fsdecode(path))


def _report_error(error: CrossEarthError, json_mode: bool, event: str) -> None:
    # The plugin words the error from its code and fields; a shell user reads the flags.
    if json_mode:
        print(json.dumps(error_event(error, event)), flush=True)
    print(f"crossearth: {cli_message(error)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
