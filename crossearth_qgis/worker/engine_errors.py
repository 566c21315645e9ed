"""What a worker's failure means for the analyst: EngineError and its wording.

The engine reports an error as `{"event": "error", "code": ..., "message": ..., "fields": ...}`
(`--progress json`). The sentence in the message bar is built here from the code and the
fields, in the words of the dock and the algorithms ("set Bands to 3,2,1", "confirm replacing
it"); an error without a wording of its own shows the engine's message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ..environment.engine_env import (
    SETUP_HINT,
    EngineEnvironmentError,
    Interpreter,
    missing_modules,
    worker_directory,
)

CLI_PREFIX = "crossearth: "


class EngineError(Exception):
    """The worker reported a problem. `str()` is one plain sentence; `details` has stderr;
    `code` and `fields` are the engine's (engine/errors.py), "" and {} when it gave none."""

    def __init__(
        self,
        message: str,
        details: str = "",
        code: str = "",
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.details = details
        self.code = code
        self.fields = dict(fields or {})


class EngineCancelled(EngineError):
    def __init__(self, message: str = "Cancelled; no output was written.") -> None:
        super().__init__(message, code="cancelled")


def sentence(text: str) -> str:
    """One sentence: without the CLI's prefix, capitalised, with a full stop."""
    text = text.strip()
    if text.startswith(CLI_PREFIX):
        text = text[len(CLI_PREFIX) :]
    if text and text[0].islower():
        text = text[0].upper() + text[1:]
    if text and text[-1] not in ".!?":
        text += "."
    return text


def _joined(values: Any) -> str:
    return ",".join(str(v) for v in values)


def _memory(f: dict[str, Any]) -> str:
    options = f.get("options", ())
    fix = (
        "use fewer workers (or a smaller tile size or batch size)"
        if "workers" in options
        else "choose a smaller tile size or batch size"
    )
    return (
        f"{f['what']} needs about {f['needed_gib']:.1f} GiB of memory but "
        f"{f['available_gib']:.1f} GiB are available; {fix}"
    )


def _not_crossearth(f: dict[str, Any]) -> str:
    hint = " (choose it as the backbone file)" if f.get("option") == "backbone" else ""
    return (
        f"{f['path']} is not a CrossEarth checkpoint: no backbone.reins.* and decode_head.* "
        f"weights; it looks like {f['kind']}{hint} (keys such as {f['keys']})"
    )


# code -> the analyst's sentence from the fields (the dock and the algorithms name settings
# "Bands", "the device", "Workers", "the tile size"; replacing is a confirmation).
WORDING: dict[str, Callable[[dict[str, Any]], str]] = {
    "input.bands_ambiguous": lambda f: (
        f"cannot tell which of the raster's {f['count']} bands ({f['described']}) are the "
        f"model's {', '.join(f['wanted'])}; set Bands to {f['suggestion']}"
    ),
    "input.bands_count": lambda f: (
        f"Bands lists {len(f['value'])} band(s) but the model takes {len(f['wanted'])} "
        f"({', '.join(f['wanted'])}); list one source band per model input"
    ),
    "input.bands_range": lambda f: (
        f"Bands {_joined(f['value'])} out of range: the raster has bands 1..{f['count']}"
    ),
    "device.unavailable": lambda f: (
        f"device '{f['device']}' requested but {f['reason']}; choose the device cpu or auto"
    ),
    "output.exists": lambda f: (
        f"{f['what']} {f['path']} already exists; confirm replacing it, or choose another name"
    ),
    "package.exists": lambda f: (
        f"{f['path']} already exists; remove it, {f['choose']} or confirm replacing it"
    ),
    "model.installed": lambda f: (
        f"'{f['name']}' is already installed in {f['folder']}; confirm replacing it with a new "
        "download"
    ),
    "model.not_package": lambda f: (
        f"{f['path']} is not a model package: it has no {f['card']}; choose a folder holding "
        f"{f['card']} and {f['weights']}"
    ),
    "model.no_default": lambda f: (
        "no bundled default model is installed; choose a model package folder or an installed "
        "model (see the model list)"
    ),
    "model.nonfinite": lambda f: (
        "the model produced NaN or infinite scores; its weights are damaged or it overflowed "
        "in reduced precision: re-install the package"
    ),
    "memory": _memory,
    "memory.gpu": lambda f: (
        f"out of GPU memory on {f['device']} even with batch size 1; choose a smaller tile size "
        "or the device cpu"
    ),
    "workers.gpus": lambda f: (
        f"{f['value']} workers need {f['value']} GPUs but this machine has {f['gpus']}; set "
        f"Workers to {f['gpus']} (or auto), or choose the device cpu"
    ),
    "workers.invalid": lambda f: (
        f"Workers '{f['value']}' is not valid; give a number of workers (e.g. 2) or auto"
    ),
    "workers.too_few": lambda f: f"Workers {f['value']} must be at least 1 (or auto)",
    "postprocess.keep_classes": lambda f: (
        f"the classes to keep name {', '.join(repr(n) for n in f['value'])}, which the model "
        f"does not have; its classes are {', '.join(f['classes'])}"
    ),
    "option.threads": lambda f: f"the thread count must be at least 1, got {f['value']}",
    "option.simplify": lambda f: (
        f"the simplification tolerance {f['value']} must be a distance in metres >= 0"
    ),
    "input.not_crossearth": _not_crossearth,
    "environment.light": lambda f: (
        f"'{f['command']}' needs the full engine (PyTorch); the engine Python is a light one "
        "(ONNX Runtime): choose 'Full' in Settings > Options > CrossEarth and click 'Set up "
        "engine environment'"
    ),
    "config.source": lambda f: "give exactly one of a preset or an mmseg config",
    "config.classes_with_preset": lambda f: (
        "class names only apply with an mmseg config; presets name their classes"
    ),
    "config.classes_count": lambda f: (
        f"the class names name {f['given']} classes but the model has {f['count']}"
    ),
    "model.backbone_missing": lambda f: (
        f"{f['problem']}; choose the frozen DINOv2 weights (dinov2_converted.pth) as the "
        "backbone file"
    ),
}


# The codes whose engine message the analyst reads as it is: the engine words them flag-free,
# naming settings as the dock and the algorithms do. Every engine code (engine/error_codes.py)
# is either worded above or listed here (tests/test_error_codes.py holds the two together).
ENGINE_WORDS = frozenset(
    (
        "error",
        "model.linked",
        "input.geotransform",
        "input.gsd_too_fine",
        "output.outside",
        "output.is_folder",
        "input",
        "output",
        "model",
        "config",
        "cancelled",
        "input.not_found",
        "input.read",
        "input.bands",
        "input.bands_missing",
        "labels.unmapped",
        "labels.class_field",
        "output.not_ours",
        "output.dir_is_file",
        "output.dir_not_writable",
        "output.replaces_input",
        "output.summary_replaces_input",
        "output.batch_exists",
        "output.batch_summary_exists",
        "model.not_found",
        "model.broken",
        "model.card",
        "model.card_read",
        "model.onnx",
        "model.export",
        "model.export_mismatch",
        "model.not_downloadable",
        "config.field",
        "config.unknown_preset",
        "config.teacher_classes",
        "config.teacher_input",
        "option.runtime",
        "option.compile",
        "option.empty_name",
        "usage",
        "fit.input",
        "fit.layer_gsd",
        "runtime.missing",
        "runtime.unavailable",
        "runtime.graph",
        "runtime.device",
        "memory.onnx",
        "environment.no_runtime",
        "parts.damaged",
        "parts.interrupted",
        "parts.other_parameters",
        "cancelled.batch",
        "train.run_dir",
        "train.run_dir_used",
        "train.resume_file",
        "train.nothing_to_resume",
    )
)


def analyst_message(code: str, fields: dict[str, Any], message: str) -> str:
    """The sentence for an engine error: worded from its code and fields where the plugin
    knows the code, else the engine's own message (without "crossearth: ")."""
    wording = WORDING.get(code)
    if wording is not None:
        try:
            return sentence(wording(fields))
        except (KeyError, TypeError, ValueError):
            pass  # an engine of another version, with other fields: its message still holds
    return sentence(message)


def reported_error(reported: dict[str, Any] | None, stderr: list[str], details: str) -> EngineError:
    """The EngineError for a worker that exited with 2: from its JSON error event, or from the
    "crossearth: ..." line (or argparse's "error: ...") on stderr."""
    if reported:
        code = str(reported.get("code", ""))
        fields = reported.get("fields")
        fields = fields if isinstance(fields, dict) else {}
        # "text" is the engine's flag-free wording, "message" the command line's (older engines)
        message = str(reported.get("text") or reported.get("message", ""))
        return EngineError(analyst_message(code, fields, message), details, code, fields)
    return EngineError(sentence(_error_line(stderr)), details)


def _error_line(stderr: list[str]) -> str:
    """The engine's "crossearth: ..." line on stderr, or argparse's "crossearth segment:
    error: ..." (usage errors also exit with 2)."""
    for line in reversed(stderr):
        if line.startswith(CLI_PREFIX):
            return line
    for line in reversed(stderr):
        if "error:" in line:
            return line.split("error:", 1)[1]
    return "\n".join(stderr) or "the worker gave no reason"


def failure(code: int, stderr: list[str], interpreter: Interpreter) -> EngineError:
    """A worker that crashed (not a reported error): a missing module, a kill, anything else."""
    details = "\n".join(stderr)
    first_missing = re.search(r"No module named '([\w.]+)'", details)
    if first_missing and first_missing.group(1).split(".")[0] == "engine":
        return EngineError(
            f"The plugin's engine code could not be imported from {worker_directory()}; "
            "reinstall the plugin from its zip file.",
            details,
        )
    if first_missing:
        # Name everything that is missing, not only the first import that failed.
        try:
            missing = missing_modules(interpreter.python) or [first_missing.group(1)]
        except EngineEnvironmentError:
            missing = [first_missing.group(1)]
        names = ", ".join(f"'{name.split('.')[0]}'" for name in missing)
        return EngineError(
            f"The CrossEarth engine environment is missing: {interpreter.describe()} has no "
            f"Python module {names}. To fix it, {SETUP_HINT}.",
            details,
        )
    if code < 0:  # killed by a signal, e.g. the kernel's out-of-memory killer
        return EngineError(
            f"The CrossEarth worker was stopped by the system (signal {abs(code)}), most often "
            "because memory ran out; try a smaller tile size or batch size.",
            details,
        )
    last = next((line for line in reversed(stderr) if line.strip()), "no message")
    return EngineError(
        f"The CrossEarth worker stopped unexpectedly (exit code {code}): {last.strip()}", details
    )
