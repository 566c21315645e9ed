"""Errors worded for the command line: the library's code and fields, said with its flags.

The engine's errors (engine/errors.py) name options as the Python API does ("bands",
"overwrite"); here they become the flags a shell user types ("--bands", "--overwrite").
An error without a wording of its own is shown with its message as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.error_codes import (
    CANCELLED_BATCH,
    CONFIG_CLASSES_COUNT,
    CONFIG_CLASSES_WITH_PRESET,
    CONFIG_SOURCE,
    CONFIG_UNKNOWN_PRESET,
    DEVICE_UNAVAILABLE,
    FIT_INPUT,
    FIT_LAYER_GSD,
    INPUT_BANDS_AMBIGUOUS,
    INPUT_BANDS_COUNT,
    INPUT_BANDS_RANGE,
    INPUT_NOT_CROSSEARTH,
    LABELS_CLASS_FIELD,
    LABELS_UNMAPPED,
    MEMORY,
    MEMORY_GPU,
    MODEL,
    MODEL_BACKBONE_MISSING,
    MODEL_INSTALLED,
    MODEL_NO_DEFAULT,
    MODEL_NONFINITE,
    MODEL_NOT_DOWNLOADABLE,
    MODEL_NOT_PACKAGE,
    OPTION_EMPTY_NAME,
    OPTION_SIMPLIFY,
    OPTION_THREADS,
    OUTPUT_BATCH_EXISTS,
    OUTPUT_BATCH_SUMMARY_EXISTS,
    OUTPUT_DIR_IS_FILE,
    OUTPUT_DIR_NOT_WRITABLE,
    OUTPUT_EXISTS,
    OUTPUT_REPLACES_INPUT,
    OUTPUT_SUMMARY_REPLACES_INPUT,
    PACKAGE_EXISTS,
    PARTS_DAMAGED,
    PARTS_INTERRUPTED,
    PARTS_OTHER_PARAMETERS,
    POSTPROCESS_KEEP_CLASSES,
    TRAIN_NOTHING_TO_RESUME,
    TRAIN_RESUME_FILE,
    TRAIN_RUN_DIR,
    TRAIN_RUN_DIR_USED,
    WORKERS_GPUS,
    WORKERS_INVALID,
    WORKERS_TOO_FEW,
)
from engine.errors import CrossEarthError

# Option names whose flag is not simply "--" + the name with dashes.
OPTION_FLAGS: dict[str, str] = {
    "tile_size": "--tile",
    "batch_size": "--batch",
    "mmseg_config": "--mmseg-config",
    "no_amp": "--no-amp",
}


def flag(option: str) -> str:
    """The command-line flag of a library option name."""
    return OPTION_FLAGS.get(option, "--" + option.replace("_", "-"))


def _bands(values: Any) -> str:
    return ",".join(str(v) for v in values)


_RUN_FOLDER_FIX = "choose another --output (the run folder is OUTPUT.run) or another --run-dir"

_RESUME_WEIGHTS_FIX = {
    "package": "to fine-tune a package pass its folder with --base; ",
    MODEL: "to train from these weights convert it with 'crossearth convert' and pass the "
    "package with --base; ",
}

Wording = Callable[[dict[str, Any]], str]

# code -> the line the CLI prints (without "crossearth: "), from the error's fields.
CLI_WORDING: dict[str, Wording] = {
    OUTPUT_EXISTS: lambda f: (
        f"{f['what']} {f['path']} already exists; pass --overwrite to replace it, or choose "
        "another name"
    ),
    PACKAGE_EXISTS: lambda f: (
        f"{f['path']} already exists; remove it, {f['choose']} or pass --overwrite (only a model "
        "package this tool wrote is ever replaced)"
    ),
    MODEL_INSTALLED: lambda f: (
        f"'{f['name']}' is already installed in {f['folder']}; pass --overwrite to replace it "
        "with a new download"
    ),
    FIT_INPUT: lambda f: "fit needs a raster, or the band names of a layer with --layer-bands",
    FIT_LAYER_GSD: lambda f: (
        f"--layer-gsd {f['value']:g} is not a pixel size; give metres, e.g. 0.3"
    ),
    INPUT_BANDS_COUNT: lambda f: (
        f"--bands lists {len(f['value'])} band(s) but the model takes {len(f['wanted'])} "
        f"({', '.join(f['wanted'])}); list one source band per model input"
    ),
    INPUT_BANDS_RANGE: lambda f: (
        f"--bands {_bands(f['value'])} out of range: the raster has bands 1..{f['count']}"
    ),
    INPUT_BANDS_AMBIGUOUS: lambda f: (
        f"cannot tell which of the raster's {f['count']} bands ({f['described']}) are the "
        f"model's {', '.join(f['wanted'])}; pass --bands, e.g. --bands {f['suggestion']}"
    ),
    DEVICE_UNAVAILABLE: lambda f: (
        f"device '{f['device']}' requested but {f['reason']}; use --device cpu or auto"
    ),
    MODEL_NOT_PACKAGE: lambda f: (
        f"{f['path']} is not a model package: it has no {f['card']}; point --model at a folder "
        f"holding {f['card']} and {f['weights']}"
    ),
    MODEL_NO_DEFAULT: lambda f: (
        "no bundled default model is installed; pass --model with a model package folder or "
        "the name of an installed model (see 'crossearth models')"
    ),
    MODEL_NONFINITE: lambda f: (
        "the model produced NaN or infinite scores; its weights are damaged or it overflowed "
        "in reduced precision: re-install the package, or pass --no-amp"
    ),
    MEMORY_GPU: lambda f: (
        f"out of GPU memory on {f['device']} even with batch size 1; use a smaller tile size "
        "or --device cpu"
    ),
    MEMORY: lambda f: (
        f"{f['what']} needs about {f['needed_gib']:.1f} GiB of memory but "
        f"{f['available_gib']:.1f} GiB are available; use "
        + (
            f"fewer --workers (or a smaller {flag('tile')} or {flag('batch')})"
            if "workers" in f.get("options", ())
            else f"a smaller {flag('tile')} or {flag('batch')}"
        )
    ),
    INPUT_NOT_CROSSEARTH: lambda f: (
        f"{f['path']} is not a CrossEarth checkpoint: no backbone.reins.* and decode_head.* "
        f"weights; it looks like {f['kind']}"
        + (" (pass it with --backbone)" if f.get("option") == "backbone" else "")
        + f" (keys such as {f['keys']})"
    ),
    CONFIG_SOURCE: lambda f: "give exactly one of --preset NAME or --mmseg-config CONFIG.py",
    CONFIG_CLASSES_WITH_PRESET: lambda f: (
        "--classes only applies with --mmseg-config; presets name their classes"
    ),
    CONFIG_CLASSES_COUNT: lambda f: (
        f"--classes names {f['given']} classes but the model has {f['count']}"
    ),
    MODEL_BACKBONE_MISSING: lambda f: (
        f"{f['problem']}; pass the frozen DINOv2 weights with --backbone dinov2_converted.pth"
    ),
    WORKERS_INVALID: lambda f: (
        f"--workers '{f['value']}' is not valid; give a number of workers (e.g. 2) or auto"
    ),
    WORKERS_TOO_FEW: lambda f: f"--workers {f['value']} must be at least 1 (or auto)",
    WORKERS_GPUS: lambda f: (
        f"--workers {f['value']} needs {f['value']} GPUs but this machine has {f['gpus']}; use "
        f"--workers {f['gpus']} (or auto), or --device cpu"
    ),
    POSTPROCESS_KEEP_CLASSES: lambda f: (
        f"--keep-classes names {', '.join(repr(n) for n in f['value'])}, which the model does "
        f"not have; its classes are {', '.join(f['classes'])}"
    ),
    OUTPUT_DIR_IS_FILE: lambda f: f"--output-dir {f['path']} is a file; give a folder",
    OUTPUT_DIR_NOT_WRITABLE: lambda f: (
        f"the output folder {f['path']} is not writable; choose another --output-dir"
    ),
    OUTPUT_REPLACES_INPUT: lambda f: (
        f"the output {f['path']} would replace {f['source']}, which the input {f['input']} "
        "reads; choose another --output-dir"
    ),
    OUTPUT_SUMMARY_REPLACES_INPUT: lambda f: (
        f"the batch's {Path(str(f['path'])).name} would replace the input {f['input']}; choose "
        "another --output-dir"
    ),
    OUTPUT_BATCH_EXISTS: lambda f: (
        f"{f['path']} already exists; pass --overwrite to replace it, or --resume to keep the "
        "finished outputs of an earlier batch and do the rest"
    ),
    OUTPUT_BATCH_SUMMARY_EXISTS: lambda f: (
        f"{f['path']} already exists (from an earlier batch); pass --resume to finish that "
        "batch or --overwrite to redo it, or choose another --output-dir"
    ),
    OPTION_EMPTY_NAME: lambda f: (
        f"{flag(f['option'])} '{f['value']}' has an empty name; separate names with commas"
    ),
    CANCELLED_BATCH: lambda f: (
        f"batch stopped after {f['done']} of {f['total']} inputs; the {f['finished']} finished "
        f"output(s) in {f['path']} are kept and no index was written: run the same command "
        "with --resume to do the rest"
    ),
    PARTS_DAMAGED: lambda f: f"{f['problem']}; run again without --resume",
    PARTS_INTERRUPTED: lambda f: (
        f"{f['path']} holds the parts of an interrupted run writing this output; pass --resume "
        "to continue it (with the same parameters) or --overwrite to start again"
    ),
    PARTS_OTHER_PARAMETERS: lambda f: (
        f"{f['path']} holds the parts of a run with other parameters (input, model, bands, "
        "scaling, tile, extent or confidence differ); use --resume only with the same "
        "parameters, or remove the folder to start again"
    ),
    MODEL_NOT_DOWNLOADABLE: lambda f: (
        f"'{f['name']}' is not a downloadable model; available: {f['available']} (see "
        "'crossearth models --available')"
    ),
    CONFIG_UNKNOWN_PRESET: lambda f: (
        f"unknown preset '{f['name']}'; known: {f['known']} (see 'crossearth convert --help')"
    ),
    TRAIN_RUN_DIR: lambda f: f"{f['problem']}; {_RUN_FOLDER_FIX}",
    TRAIN_RUN_DIR_USED: lambda f: (
        f"{f['problem']}; pass --resume auto to continue that run, or {_RUN_FOLDER_FIX}"
    ),
    TRAIN_RESUME_FILE: lambda f: (
        f"{f['problem']}; {_RESUME_WEIGHTS_FIX.get(f['weights'] or '', '')}to resume, pass a "
        f"step_NNNNNNN.pt file from {f['folder']} or --resume auto"
    ),
    TRAIN_NOTHING_TO_RESUME: lambda f: (
        f"no checkpoint to resume from in {f['folder']}; start without --resume"
    ),
    LABELS_UNMAPPED: lambda f: (
        f"the reference labels hold value(s) {f['values']} that are not classes of the model "
        f"({f['classes']}); map them with --label-map"
    ),
    LABELS_CLASS_FIELD: lambda f: f"{f['path']} holds polygons: give --class-field",
    OPTION_THREADS: lambda f: f"--threads must be at least 1, got {f['value']}",
    OPTION_SIMPLIFY: lambda f: f"--simplify {f['value']} must be a distance in metres >= 0",
}


def cli_message(error: CrossEarthError) -> str:
    """The error as the CLI prints it (after "crossearth: "): one line, flags included."""
    wording = CLI_WORDING.get(error.code)
    if wording is not None:
        try:
            return wording(error.fields)
        except (KeyError, TypeError, ValueError):
            pass  # a raise site without the fields its code promises: its message still holds
    return str(error)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return str(value)  # paths, devices, numpy scalars: their text


def error_event(error: CrossEarthError, event: str = "error") -> dict[str, Any]:
    """The `--progress json` event for an error: code, the CLI's message (with flags), the
    library's flag-free text and the fields."""
    return {
        "event": event,
        "code": error.code,
        "message": cli_message(error),
        "text": str(error),
        "fields": _jsonable(error.fields),
    }
