"""The worker's command lines: one request per engine command, `args()` its argv.

Every option is one "--name=value" word (see `_option`), and local paths are made absolute,
because the worker runs in the engine's folder (engine_env.worker_directory), not in ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def _absolute(path: str) -> str:
    # The worker runs in the engine's folder (see engine_env.worker_directory), not in ours.
    return str(Path(path).expanduser().absolute())


def _if_local(source: str) -> str:
    """A file or folder that exists here, made absolute; GDAL connection strings, /vsi paths
    and model names pass unchanged."""
    path = Path(source).expanduser()
    return str(path.absolute()) if path.exists() else source


def _positional(source: str) -> str:
    """A positional argument as `_if_local`, but never starting with '-' (argparse would read
    it as an option): such a name can only be a file name, so it is made absolute."""
    value = _if_local(source)
    return _absolute(value) if value.startswith("-") else value


def _option(name: str, value: object) -> str:
    """One "--name=value" token. Given as two words, a value that starts with '-' (a negative
    coordinate west of Greenwich, "-9999=ignore", a class named "-x") is read as an option."""
    return f"--{name}={value}"


@dataclass
class SegmentRequest:
    """One segmentation job; `args()` is its command line for the worker."""

    input: str
    output: str
    model: str = ""  # package path or installed name; "" = the bundled default
    device: str = "auto"
    tile: int | None = None
    overlap: int | None = None
    batch: int = 4
    bands: list[int] | None = None
    confidence: str | None = None
    polygons: str | None = None
    extent: tuple[float, float, float, float] | None = None  # in the raster's CRS
    # Processing resolution: "auto", "native" or metres ("0.5"); None = the engine's default.
    gsd: str | None = None
    output_grid: str | None = None  # "source" or "model"; None = the engine's default
    min_region: str | None = None  # sieve size: "12" pixels, "2000m2" or "1.5ha"
    keep_classes: list[str] | None = None  # classes whose small regions stay
    simplify: float | None = None  # polygon simplification tolerance in metres
    # Sharded on Ray: a number of model workers or "auto"; None = one process (no Ray).
    workers: str | None = None
    cluster: str | None = None  # a Ray cluster's address ("auto", "ray://host:port"); None = local
    # What runs the model: "auto", "torch", "onnxruntime" or "openvino"; None = the engine's auto.
    runtime: str | None = None
    compile: bool = False  # torch.compile the model (PyTorch runtime)
    # Replace existing outputs: only when the analyst confirmed it (the engine refuses else).
    overwrite: bool = False

    def args(self) -> list[str]:
        args = ["segment", _positional(self.input), _absolute(self.output)]
        args.append(_option("progress", "json"))
        if self.model:
            args.append(_option("model", _if_local(self.model)))
        args += [_option("device", self.device or "auto"), _option("batch", self.batch)]
        if self.tile:
            args.append(_option("tile", self.tile))
        if self.overlap is not None:
            args.append(_option("overlap", self.overlap))
        if self.bands:
            args.append(_option("bands", ",".join(str(b) for b in self.bands)))
        if self.confidence:
            args.append(_option("confidence", _absolute(self.confidence)))
        if self.polygons:
            args.append(_option("polygons", _absolute(self.polygons)))
        if self.extent is not None:
            args.append(_option("extent", ",".join(repr(float(v)) for v in self.extent)))
        if self.gsd:
            args.append(_option("gsd", self.gsd))
        if self.output_grid:
            args.append(_option("output-grid", self.output_grid))
        if self.min_region:
            args.append(_option("min-region", self.min_region))
        if self.keep_classes:
            args.append(_option("keep-classes", ",".join(self.keep_classes)))
        if self.simplify:
            args.append(_option("simplify", f"{float(self.simplify):g}"))
        if self.workers:
            args.append(_option("workers", self.workers))
        if self.cluster:
            args.append(_option("cluster", self.cluster))
        if self.runtime and self.runtime != "auto":
            args.append(_option("runtime", self.runtime))
        if self.compile:
            args.append("--compile")
        if self.overwrite:
            args.append("--overwrite")
        return args

    def outputs(self) -> list[Path]:
        return [Path(p) for p in (self.output, self.confidence, self.polygons) if p]


# `convert --dtype` / `train --weights-dtype` choices: the plugin may not import the engine,
# so it names them here once (tests/test_one_source.py checks they equal the engine's).
WEIGHTS_DTYPES = ["float32", "float16", "bfloat16"]

# `segment --runtime` choices, with the names the dock shows: the engine's
# engine/run/runtime_registry.py CHOICES and ONNX_RUNTIMES (tests/test_one_source.py holds the
# copies equal).
RUNTIME_LABELS = {
    "auto": "Auto",
    "torch": "PyTorch",
    "onnxruntime": "ONNX Runtime (CPU)",
    "openvino": "OpenVINO (CPU)",
}
RUNTIMES = tuple(RUNTIME_LABELS)
ONNX_RUNTIMES = ("onnxruntime", "openvino")


@dataclass
class ConvertRequest:
    """Converting an official checkpoint (.pth) into a model package folder."""

    checkpoint: str
    output: str  # the package folder to create
    preset: str | None = None
    mmseg_config: str | None = None
    backbone: str | None = None
    name: str | None = None
    classes: list[str] | None = None
    dtype: str = "float32"
    overwrite: bool = False  # replace a package at `output` (confirmed by the analyst)

    def args(self) -> list[str]:
        args = ["convert", _positional(self.checkpoint), _absolute(self.output)]
        # JSON progress also announces the temporary package folder (removed after a kill).
        args.append(_option("progress", "json"))
        args.append(_option("dtype", self.dtype))
        if self.preset:
            args.append(_option("preset", self.preset))
        if self.mmseg_config:
            args.append(_option("mmseg-config", _if_local(self.mmseg_config)))
        if self.backbone:
            args.append(_option("backbone", _if_local(self.backbone)))
        if self.name:
            args.append(_option("name", self.name))
        if self.classes:
            args.append(_option("classes", ",".join(self.classes)))
        if self.overwrite:
            args.append("--overwrite")
        return args


@dataclass
class DownloadRequest:
    """Downloading an official model (`crossearth download`) into the user models folder."""

    name: str  # a catalog name, e.g. potsdam-r-source
    keep_checkpoint: bool = False  # keep the .pth in the Hugging Face cache
    overwrite: bool = False  # replace the installed package of that name (confirmed)

    def args(self) -> list[str]:
        # JSON progress also announces the temporary package folder (removed after a kill).
        args = ["download", _option("progress", "json")]
        if self.keep_checkpoint:
            args.append("--keep-checkpoint")
        if self.overwrite:
            args.append("--overwrite")
        return [*args, "--", self.name]


@dataclass
class FineTuneRequest:
    """Fine-tuning a model package on local labels (`crossearth train`)."""

    image: str
    output: str  # the package folder to write
    base: str = ""  # model package path or installed name; "" = the bundled default
    labels: str | None = None  # a label raster ...
    polygons: str | None = None  # ... or polygons with class_field
    class_field: str | None = None
    mask: str | None = None  # labelled area
    classes: list[str] | None = None
    label_map: str | None = None  # "1=forest,2=water,9=ignore"
    bands: list[int] | None = None
    mode: str = "reins"
    # None: not passed, so the training recipe's own default holds (training/config.py is the
    # one source of these numbers; the plugin cannot import it).
    steps: int | None = None
    batch: int | None = None
    lr: float | None = None
    window: int | None = None
    val_fraction: float | None = None
    # Knowledge distillation: a package with the same classes that also teaches the model.
    teacher: str | None = None
    distill_weight: float | None = None
    device: str = "auto"
    name: str | None = None
    overwrite: bool = False  # replace a package at `output` (confirmed by the analyst)

    def args(self) -> list[str]:
        args = ["train", _option("image", _if_local(self.image))]
        args.append(_option("output", _absolute(self.output)))
        if self.base:
            args.append(_option("base", _if_local(self.base)))
        if self.labels:
            args.append(_option("labels", _if_local(self.labels)))
        if self.polygons:
            args.append(_option("polygons", _if_local(self.polygons)))
            args.append(_option("class-field", self.class_field or ""))
        if self.mask:
            args.append(_option("mask", _if_local(self.mask)))
        if self.classes:
            args.append(_option("classes", ",".join(self.classes)))
        if self.label_map:
            args.append(_option("label-map", self.label_map))
        if self.bands:
            args.append(_option("bands", ",".join(str(b) for b in self.bands)))
        if self.window:
            args.append(_option("window", self.window))
        if self.name:
            args.append(_option("name", self.name))
        args.append(_option("mode", self.mode))
        if self.steps is not None:
            args.append(_option("steps", self.steps))
        if self.batch is not None:
            args.append(_option("batch", self.batch))
        if self.lr is not None:
            args.append(_option("lr", repr(float(self.lr))))
        if self.val_fraction is not None:
            args.append(_option("val-fraction", repr(float(self.val_fraction))))
        if self.teacher:
            args.append(_option("teacher", _if_local(self.teacher)))
        if self.distill_weight is not None:
            args.append(_option("distill-weight", repr(float(self.distill_weight))))
        args += [_option("device", self.device or "auto"), _option("progress", "json")]
        if self.overwrite:
            args.append("--overwrite")
        return args
