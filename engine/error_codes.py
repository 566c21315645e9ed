"""Every error code the engine and training raise, named once, each with its fix.

A code is a `str` (so it compares, prints and travels as JSON like the plain string it is), and
carries the problem it names and the fix a user reaches for. Every raise uses one of these
constants; front ends word an error from its code and fields (engine/commands/cli_messages.py
for the command line, the plugin's worker/engine_errors.py for the analyst). docs/errors.md is
written from this table: `python -m engine.error_codes > docs/errors.md`.
"""

from __future__ import annotations

import sys


class ErrorCode(str):
    """A code ("output.exists") with what it means and how to fix it."""

    problem: str
    fix: str

    def __new__(cls, code: str) -> ErrorCode:
        value = super().__new__(cls, code)
        value.problem, value.fix = _TABLE[code]
        return value

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        # Across processes (Ray, pickled errors) a code is its plain string.
        return (str, (str(self),))


# Each code, then the problem it names and the fix (indented); in the order of docs/errors.md.
_TEXT = """
# the default code of each error class (engine/errors.py)
error
    a problem without a more precise code
    read the message; it names the fix
input
    an input is missing, unreadable or unusable
    check the input it names
output
    an output cannot be written
    choose another output or free disk space
model
    a model package does not fit together
    re-install or re-export the package
config
    a configuration is not usable
    correct the value it names
device.unavailable
    the requested device (a GPU) is not available
    choose cpu or auto
memory
    the run needs more memory than the machine has free
    use a smaller tile size or batch size (or fewer workers)
cancelled
    the run was stopped; no output was left
    run it again
# inputs
input.not_found
    the input raster does not exist
    check the path
input.geotransform
    the raster's georeferencing is not a usable grid
    fix its geotransform (gdal_edit.py -a_ullr) or remove it
input.gsd_too_fine
    the processing GSD is far finer than the raster's pixels
    choose a coarser GSD, or native
input.read
    a window of the input cannot be read (damaged file)
    repair or re-export it
input.bands
    the band list is empty or malformed
    give e.g. 3,2,1
input.bands_count
    the band list does not name one band per model input
    list one source band per model input
input.bands_range
    a band number is beyond the raster's bands
    use bands 1..N of the raster
input.bands_missing
    the raster has fewer bands than the model needs
    use a model that fits the raster (`crossearth fit` names them) or a raster with the bands
input.bands_ambiguous
    the raster's bands cannot be matched to the model's by their names
    choose the bands (bands / --bands)
input.not_crossearth
    the checkpoint is not a CrossEarth checkpoint (no Rein and decode-head weights)
    choose the CrossEarth checkpoint; a DINOv2 file is the backbone
labels.unmapped
    the reference labels hold values that are not classes of the model
    map them with a label map
labels.class_field
    polygon labels need the field that holds the class
    give the class field
# outputs
output.exists
    the output already exists
    allow overwrite, or choose another name
output.outside
    a name would put the output outside its folder
    give a plain name, without '/', '\\' or '..'
output.is_folder
    the output name is a folder
    give a file name
output.not_ours
    the output is not a plain file this tool wrote
    remove it yourself
output.dir_is_file
    the output folder is a file
    give a folder
output.dir_not_writable
    the output folder is not writable
    choose another output folder
output.replaces_input
    an output would replace a file the run reads
    choose another name or folder
output.summary_replaces_input
    the batch's index or mosaic would replace an input
    choose another output folder
output.batch_exists
    an output of the batch already exists
    allow overwrite, or resume to keep the finished outputs
output.batch_summary_exists
    the folder holds an earlier batch's index or mosaic
    resume that batch, overwrite it, or choose another folder
package.exists
    the model package folder already exists
    remove it, choose another name, or allow overwrite (only a package this tool wrote)
# models
model.not_found
    no package folder or installed model has that name
    see `crossearth models`
model.not_package
    the folder has no model.json
    choose a folder with model.json and weights
model.no_default
    no bundled default model is installed
    choose a model
model.broken
    an installed model is broken
    reinstall it or remove its folder
model.linked
    a file of the package is a symbolic link
    copy the real file into the package folder
model.card
    a field of the model card is not valid
    correct the field it names
model.card_read
    the model card cannot be read
    check the package folder's permissions
model.nonfinite
    the model produced NaN or infinite scores
    re-install the package, or turn off mixed precision (amp)
model.onnx
    the package's ONNX graph is missing, damaged or not the one its card records
    export it again (`crossearth export`) or use the torch runtime
model.export
    the model could not be exported to ONNX
    use the torch runtime for it
model.export_mismatch
    the exported graph's scores differ from PyTorch's beyond the tolerance
    raise the tolerance only if the difference is acceptable
model.installed
    the model is already installed
    allow overwrite to download it again
model.not_downloadable
    the name is not a downloadable model
    see `crossearth models --available`
model.backbone_missing
    the checkpoint holds only the Reins and head
    give the frozen DINOv2 weights (dinov2_converted.pth) as the backbone
# configurations and options
config.field
    a field of an architecture config is not usable
    correct the field it names
config.source
    a conversion needs exactly one of a preset or an mmseg config
    give one
config.unknown_preset
    the preset name is not known
    use one of the presets listed
config.classes_with_preset
    class names apply only with an mmseg config
    leave the class names out with a preset
config.classes_count
    the class names do not match the model's number of classes
    give one name per class
config.teacher_classes
    the teacher of a distillation has other classes
    distil from a model with the same classes in the same order
config.teacher_input
    the teacher of a distillation reads its bands another way
    distil from a model with the same bands and normalisation
option.threads
    threads must be at least 1
    give 1 or more
option.simplify
    the simplify tolerance is not a distance >= 0
    give metres, e.g. 0.5
option.runtime
    the runtime is not known
    use auto, torch, onnxruntime or openvino
option.compile
    compiling applies to the PyTorch runtime only
    run with the torch runtime, or without compiling
option.empty_name
    a comma-separated list holds an empty name
    separate names with commas
postprocess.keep_classes
    keep-classes names a class the model does not have
    use the model's class names
usage
    the command line is not valid
    see the command's --help
fit.input
    fit needs a raster or a layer's band names
    give a raster or layer bands
fit.layer_gsd
    the layer's pixel size is not a size
    give metres, e.g. 0.3
# runtimes, devices, memory, environments
runtime.missing
    no ONNX runtime is installed
    install onnxruntime (or openvino)
runtime.unavailable
    the model needs PyTorch, which this environment does not have
    export its ONNX graph where PyTorch is installed, or set up the Full engine
runtime.graph
    the package's ONNX graph cannot take this run's tiles
    use the tile size the graph was exported for, or the torch runtime
runtime.device
    the ONNX runtimes run on the CPU only
    use the device cpu, or torch for a GPU
memory.gpu
    out of GPU memory even with batch size 1
    use a smaller tile size, or the device cpu
memory.onnx
    out of memory running the ONNX graph
    use a smaller batch size
environment.light
    the command needs PyTorch, which a Light engine environment does not have
    set up the Full engine environment (PyTorch)
environment.no_runtime
    this Python has no model runtime (neither PyTorch nor ONNX Runtime)
    install the engine requirements
# scale-out (Ray)
workers.invalid
    the number of workers is not valid
    give a number (e.g. 2) or auto
workers.too_few
    workers must be at least 1
    give 1 or more, or auto
workers.gpus
    more GPU workers than the machine has GPUs
    use as many workers as GPUs (or auto), or the device cpu
parts.damaged
    the parts a killed run left are damaged
    run again without resume
parts.interrupted
    an interrupted run left parts for this output
    resume it with the same parameters, or overwrite to start again
parts.other_parameters
    the parts beside the output belong to a run with other parameters
    resume only with the same parameters, or overwrite to start again
cancelled.batch
    the batch was stopped; finished outputs are kept, no index was written
    resume the batch to finish it
# training
train.run_dir
    the run folder cannot be used
    choose another output or run folder
train.run_dir_used
    the run folder holds an earlier run
    resume it (resume auto), or choose another output or run folder
train.resume_file
    the file to resume from is not a training checkpoint of this run
    give a step_NNNNNNN.pt file of the run folder, or resume auto
train.nothing_to_resume
    the run folder has no checkpoint
    start without resuming
"""
_ENTRIES = [line for line in _TEXT.splitlines() if line and not line.startswith("#")]
_TABLE: dict[str, tuple[str, str]] = {
    code: (problem.strip(), fix.strip())
    for code, problem, fix in zip(_ENTRIES[::3], _ENTRIES[1::3], _ENTRIES[2::3], strict=True)
}

ERROR = ErrorCode("error")
INPUT = ErrorCode("input")
OUTPUT = ErrorCode("output")
MODEL = ErrorCode("model")
CONFIG = ErrorCode("config")
DEVICE_UNAVAILABLE = ErrorCode("device.unavailable")
MEMORY = ErrorCode("memory")
CANCELLED = ErrorCode("cancelled")
INPUT_NOT_FOUND = ErrorCode("input.not_found")
INPUT_GEOTRANSFORM = ErrorCode("input.geotransform")
INPUT_GSD_TOO_FINE = ErrorCode("input.gsd_too_fine")
INPUT_READ = ErrorCode("input.read")
INPUT_BANDS = ErrorCode("input.bands")
INPUT_BANDS_COUNT = ErrorCode("input.bands_count")
INPUT_BANDS_RANGE = ErrorCode("input.bands_range")
INPUT_BANDS_MISSING = ErrorCode("input.bands_missing")
INPUT_BANDS_AMBIGUOUS = ErrorCode("input.bands_ambiguous")
INPUT_NOT_CROSSEARTH = ErrorCode("input.not_crossearth")
LABELS_UNMAPPED = ErrorCode("labels.unmapped")
LABELS_CLASS_FIELD = ErrorCode("labels.class_field")
OUTPUT_EXISTS = ErrorCode("output.exists")
OUTPUT_OUTSIDE = ErrorCode("output.outside")
OUTPUT_IS_FOLDER = ErrorCode("output.is_folder")
OUTPUT_NOT_OURS = ErrorCode("output.not_ours")
OUTPUT_DIR_IS_FILE = ErrorCode("output.dir_is_file")
OUTPUT_DIR_NOT_WRITABLE = ErrorCode("output.dir_not_writable")
OUTPUT_REPLACES_INPUT = ErrorCode("output.replaces_input")
OUTPUT_SUMMARY_REPLACES_INPUT = ErrorCode("output.summary_replaces_input")
OUTPUT_BATCH_EXISTS = ErrorCode("output.batch_exists")
OUTPUT_BATCH_SUMMARY_EXISTS = ErrorCode("output.batch_summary_exists")
PACKAGE_EXISTS = ErrorCode("package.exists")
MODEL_NOT_FOUND = ErrorCode("model.not_found")
MODEL_NOT_PACKAGE = ErrorCode("model.not_package")
MODEL_NO_DEFAULT = ErrorCode("model.no_default")
MODEL_BROKEN = ErrorCode("model.broken")
MODEL_LINKED = ErrorCode("model.linked")
MODEL_CARD = ErrorCode("model.card")
MODEL_CARD_READ = ErrorCode("model.card_read")
MODEL_NONFINITE = ErrorCode("model.nonfinite")
MODEL_ONNX = ErrorCode("model.onnx")
MODEL_EXPORT = ErrorCode("model.export")
MODEL_EXPORT_MISMATCH = ErrorCode("model.export_mismatch")
MODEL_INSTALLED = ErrorCode("model.installed")
MODEL_NOT_DOWNLOADABLE = ErrorCode("model.not_downloadable")
MODEL_BACKBONE_MISSING = ErrorCode("model.backbone_missing")
CONFIG_FIELD = ErrorCode("config.field")
CONFIG_SOURCE = ErrorCode("config.source")
CONFIG_UNKNOWN_PRESET = ErrorCode("config.unknown_preset")
CONFIG_CLASSES_WITH_PRESET = ErrorCode("config.classes_with_preset")
CONFIG_CLASSES_COUNT = ErrorCode("config.classes_count")
CONFIG_TEACHER_CLASSES = ErrorCode("config.teacher_classes")
CONFIG_TEACHER_INPUT = ErrorCode("config.teacher_input")
OPTION_THREADS = ErrorCode("option.threads")
OPTION_SIMPLIFY = ErrorCode("option.simplify")
OPTION_RUNTIME = ErrorCode("option.runtime")
OPTION_COMPILE = ErrorCode("option.compile")
OPTION_EMPTY_NAME = ErrorCode("option.empty_name")
POSTPROCESS_KEEP_CLASSES = ErrorCode("postprocess.keep_classes")
USAGE = ErrorCode("usage")
FIT_INPUT = ErrorCode("fit.input")
FIT_LAYER_GSD = ErrorCode("fit.layer_gsd")
RUNTIME_MISSING = ErrorCode("runtime.missing")
RUNTIME_UNAVAILABLE = ErrorCode("runtime.unavailable")
RUNTIME_GRAPH = ErrorCode("runtime.graph")
RUNTIME_DEVICE = ErrorCode("runtime.device")
MEMORY_GPU = ErrorCode("memory.gpu")
MEMORY_ONNX = ErrorCode("memory.onnx")
ENVIRONMENT_LIGHT = ErrorCode("environment.light")
ENVIRONMENT_NO_RUNTIME = ErrorCode("environment.no_runtime")
WORKERS_INVALID = ErrorCode("workers.invalid")
WORKERS_TOO_FEW = ErrorCode("workers.too_few")
WORKERS_GPUS = ErrorCode("workers.gpus")
PARTS_DAMAGED = ErrorCode("parts.damaged")
PARTS_INTERRUPTED = ErrorCode("parts.interrupted")
PARTS_OTHER_PARAMETERS = ErrorCode("parts.other_parameters")
CANCELLED_BATCH = ErrorCode("cancelled.batch")
TRAIN_RUN_DIR = ErrorCode("train.run_dir")
TRAIN_RUN_DIR_USED = ErrorCode("train.run_dir_used")
TRAIN_RESUME_FILE = ErrorCode("train.resume_file")
TRAIN_NOTHING_TO_RESUME = ErrorCode("train.nothing_to_resume")

ALL: dict[str, ErrorCode] = {code: ErrorCode(code) for code in _TABLE}


def markdown() -> str:
    """docs/errors.md: every code with its problem and fix, in the order above."""
    lines = [
        "# Error codes",
        "",
        "Every error the engine reports carries one of these codes (the JSON `error` event's",
        "`code`; the plugin words its message from it). Generated from `engine/error_codes.py`",
        "by `python -m engine.error_codes > docs/errors.md`; a test keeps the two equal.",
        "",
        "| code | problem | fix |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{code}` | {code.problem} | {code.fix} |" for code in ALL.values()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
