"""Training recipe: everything `crossearth train` needs, from YAML or command-line arguments."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import CrossEarthError
from engine.option_values import WEIGHTS_DTYPES

IGNORE = 255


# The largest training window accepted. A batch's memory grows with the window's area (the
# backbone's attention with its square): a larger one is refused at once rather than running
# out of memory minutes into the run.
MAX_WINDOW = 4096


@dataclass
class ImageSource:
    """One training raster and where its labels come from (a label raster or polygons)."""

    image: Path
    labels: Path | None = None
    polygons: Path | None = None
    layer: str | None = None  # layer of a multi-layer vector file (GeoPackage)
    class_field: str | None = None  # attribute holding the class of each polygon
    mask: Path | None = None  # labelled area (polygons, or a raster: non-zero = labelled)

    def __post_init__(self) -> None:
        self.image = Path(self.image)
        self.labels = Path(self.labels) if self.labels else None
        self.polygons = Path(self.polygons) if self.polygons else None
        self.mask = Path(self.mask) if self.mask else None
        if (self.labels is None) == (self.polygons is None):
            raise CrossEarthError(
                f"{self.image.name}: give exactly one of a label raster (labels) or polygons"
            )
        if self.polygons is not None and not self.class_field:
            raise CrossEarthError(
                f"{self.polygons.name}: polygon labels need class_field, the attribute that "
                "holds each polygon's class"
            )


@dataclass
class ClassSpec:
    name: str
    color: tuple[int, int, int] | None = None


@dataclass
class TrainConfig:
    images: list[ImageSource]
    output: Path
    # Where the network comes from: a model package (path or installed name), or an
    # architecture preset trained from scratch (vit-s, vit-ti, tiny, vit-l-512, ...).
    base: str | None = None
    architecture: str | None = None
    patch_size: int | None = None  # patch size of a model trained from scratch (default 16)
    # Model pixels per source pixel (the card's input_scale); default: the base's, else 1.
    input_scale: int | None = None
    classes: list[ClassSpec] | None = None  # None: the labels' values (or the base's classes)
    # Source label value -> class name, class index, or "ignore".
    label_map: dict[Any, Any] | None = None
    # Map new classes onto base classes of another name: {new name: base name}.
    class_map: dict[str, str] | None = None
    bands: list[int] | None = None  # 1-based image bands in the model's order
    band_names: list[str] | None = None  # card band names for models trained from scratch
    mode: str = "reins"  # reins: frozen backbone, Reins + head trained; full: everything
    new_head: bool = False  # re-initialise the whole decode head
    # data
    window: int = 256
    block_size: int = 128
    val_fraction: float = 0.2
    class_balanced: bool = False
    scale_range: tuple[float, float] = (0.5, 2.0)
    flips: bool = True
    rotate90: bool = True
    photometric: bool = True
    esi_prob: float = 0.1
    esi_random_weight: float = 0.1
    esi_keep: float = 0.3
    esi_block: int = 64
    # Multi-Task Training (masked image reconstruction)
    mtp: bool = False
    mtp_ratio: float = 0.1
    mtp_block: int = 64
    mtp_weight: float = 1.0
    # Knowledge distillation: a package (path or installed name) with the same classes and
    # input whose class probabilities the model also learns, with this weight (training/distill.py).
    teacher: str | None = None
    distill_weight: float = 1.0
    # optimisation
    steps: int = 2000
    batch: int = 4
    accumulate: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup: int = 100
    poly_power: float = 0.9
    clip_grad: float = 1.0
    amp: bool = True
    num_points: int = 12544
    # bookkeeping
    checkpoint_every: int = 200
    eval_every: int = 200
    patience: int = 0  # evaluations without a better mIoU before stopping; 0 = never
    keep_checkpoints: int = 2
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    run_dir: Path | None = None  # checkpoints, logs, split; default OUTPUT.run
    # Labelled images never trained on, scored after training (results go into the card):
    # entries {image, labels[, label_map, bands]}; labels are class indices unless mapped.
    test: list[dict[str, Any]] = field(default_factory=list)
    # card of the trained package
    name: str | None = None
    description: str = ""
    license: str = "unknown"
    gsd_m: float | None = None
    tile_size: int | None = None
    tile_stride: int | None = None
    weights_dtype: str = "float32"

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        self.run_dir = (
            Path(self.run_dir) if self.run_dir else self.output.with_name(self.output.name + ".run")
        )
        self.images = [i if isinstance(i, ImageSource) else ImageSource(**i) for i in self.images]
        if self.classes is not None:
            self.classes = [c if isinstance(c, ClassSpec) else _class_spec(c) for c in self.classes]
        self.scale_range = tuple(float(v) for v in self.scale_range)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        problems = []
        if not self.images:
            problems.append("no training images given")
        if (self.base is None) == (self.architecture is None):
            problems.append("give exactly one of base (a model package) or architecture")
        if self.mode not in ("reins", "full"):
            problems.append(f"mode '{self.mode}' is not valid; use reins or full")
        if not 0 < self.val_fraction < 1:
            problems.append("val_fraction must lie between 0 and 1")
        low, high = self.scale_range
        if not 0 < low <= high:
            problems.append("scale_range must be two positive numbers, low <= high")
        for name in ("window", "block_size", "steps", "batch", "accumulate", "num_points"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        for name in ("checkpoint_every", "eval_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.weights_dtype not in WEIGHTS_DTYPES:
            problems.append(f"weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)}")
        if not 0 <= self.esi_prob <= 1 or not 0 <= self.mtp_ratio < 1:
            problems.append("esi_prob must lie in 0..1 and mtp_ratio in 0..1")
        if not 0 <= self.distill_weight < float("inf"):
            problems.append("distill_weight must be a number >= 0")
        # 0 is allowed for each: lr 0 keeps the starting weights (a baseline run), clip_grad 0
        # clips nothing, poly_power 0 keeps the learning rate constant.
        numbers = ("lr", "weight_decay", "clip_grad", "poly_power", "mtp_weight")
        for name in (*numbers, "esi_random_weight", "esi_keep"):
            if not 0 <= getattr(self, name) < float("inf"):
                problems.append(f"{name} must be a number >= 0, got {getattr(self, name)}")
        if self.window > MAX_WINDOW:
            problems.append(
                f"window {self.window} is larger than the largest window, {MAX_WINDOW} px; use a "
                "smaller one (256 to 1024 is usual)"
            )
        if problems:
            raise CrossEarthError("training config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                return {k: plain(v) for k, v in dataclasses.asdict(value).items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {str(k): plain(v) for k, v in value.items()}
            return value

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _rgb(color: Any, name: object) -> tuple[int, int, int]:
    """A class colour as three 0..255 integers; anything else would write a card that cannot be
    read back."""
    try:
        red, green, blue = (int(c) for c in color)
    except (TypeError, ValueError):
        red = green = blue = -1
    if not all(0 <= c <= 255 for c in (red, green, blue)):
        raise CrossEarthError(
            f"class {name!r}: color {color!r} must be three integers 0..255, e.g. [255, 0, 0]"
        )
    return red, green, blue


def _class_spec(item: Any) -> ClassSpec:
    if isinstance(item, str):
        return ClassSpec(item)
    if isinstance(item, dict) and "name" in item:
        color = item.get("color")
        return ClassSpec(str(item["name"]), _rgb(color, item["name"]) if color else None)
    raise CrossEarthError(f"class entry {item!r} must be a name or {{name, color}}")


def load_yaml(path: Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A YAML recipe; relative paths in it are relative to the YAML file. `overrides` (from the
    command line) win over the file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise CrossEarthError(f"cannot read training config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise CrossEarthError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise CrossEarthError(f"{path}: expected a mapping of settings at the top level")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    root = path.parent

    def resolve(value: Any) -> Any:
        return str((root / value).resolve()) if value and not Path(value).is_absolute() else value

    images = []
    for entry in data.get("images", []):
        if not isinstance(entry, dict):
            raise CrossEarthError(f"{path}: each images entry must be a mapping with 'image'")
        images.append(
            {
                k: resolve(v) if k in ("image", "labels", "polygons", "mask") else v
                for k, v in entry.items()
            }
        )
    data["images"] = images
    data["test"] = [
        {k: resolve(v) if k in ("image", "labels") else v for k, v in entry.items()}
        for entry in data.get("test", []) or []
    ]
    for key in ("output", "run_dir"):
        if data.get(key) and not (overrides and overrides.get(key)):
            data[key] = resolve(data[key])
    for key in ("base", "teacher"):
        if data.get(key) and (root / str(data[key])).exists():
            data[key] = resolve(data[key])
    return from_dict(data, str(path))


def from_dict(data: dict[str, Any], where: str = "training config") -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CrossEarthError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    if "output" not in data:
        raise CrossEarthError(f"{where}: 'output' (the package folder to write) is missing")
    try:
        return TrainConfig(**data)
    except TypeError as exc:
        raise CrossEarthError(f"{where}: {exc}") from None
