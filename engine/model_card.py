"""The model card (model.json): everything the engine needs to know about a model package."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import CrossEarthError

CARD_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ClassInfo:
    index: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class InputSpec:
    """What the model expects as input, in the model's band order."""

    bands: tuple[str, ...]
    # The value range the normalization below is defined on (e.g. 0..255 for 8-bit RGB).
    value_range: tuple[float, float] = (0.0, 255.0)
    mean: tuple[float, ...] = (123.675, 116.28, 103.53)
    std: tuple[float, ...] = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    architecture: str
    config: dict[str, Any]
    classes: tuple[ClassInfo, ...]
    input: InputSpec
    tile_size: int
    tile_stride: int
    # Tile sides must be a multiple of this, in source pixels (patch size / input scale).
    size_multiple: int = 1
    # The network sees tiles upsampled by this factor (model pixels per source pixel); its
    # scores are averaged back onto the source grid. For imagery coarser than the network's
    # design (e.g. 28.5 m Landsat on a ViT with 16 px patches).
    input_scale: int = 1
    gsd_m: float | None = None
    description: str = ""
    license: str = "unknown"
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def to_json_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["format_version"] = CARD_FORMAT_VERSION
        data["classes"] = [
            {"index": c.index, "name": c.name, "color": list(c.color)} for c in self.classes
        ]
        data["input"] = {
            "bands": list(self.input.bands),
            "value_range": list(self.input.value_range),
            "mean": list(self.input.mean),
            "std": list(self.input.std),
        }
        data["tile"] = {"size": data.pop("tile_size"), "stride": data.pop("tile_stride")}
        data["architecture"] = {"name": data.pop("architecture"), "config": data.pop("config")}
        return data

    def save(self, path: Path) -> None:
        """Writes model.json; a reader never sees a half-written card."""
        import os

        temp = path.with_name(f".{path.name}.partial")
        temp.write_text(json.dumps(self.to_json_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(temp, path)


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise CrossEarthError(f"{where}: missing field '{key}'")
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise CrossEarthError(f"{where}: field '{key}' must be {names}, got {value!r}")
    return value


def _numbers(values: Any, where: str, key: str, length: int | None = None) -> tuple[float, ...]:
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        raise CrossEarthError(f"{where}: '{key}' must be a list of numbers, got {values!r}")
    if length is not None and len(values) != length:
        raise CrossEarthError(f"{where}: '{key}' must have {length} values, got {len(values)}")
    return tuple(float(v) for v in values)


def card_from_dict(data: Any, where: str = "model.json") -> ModelCard:
    """Validates a parsed model.json and returns the card; every problem is a CrossEarthError."""
    if not isinstance(data, dict):
        raise CrossEarthError(f"{where}: expected a JSON object at the top level")
    version = data.get("format_version", CARD_FORMAT_VERSION)
    if version != CARD_FORMAT_VERSION:
        raise CrossEarthError(
            f"{where}: format_version {version!r} is not supported (this engine reads "
            f"{CARD_FORMAT_VERSION}); update crossearth-qgis or re-export the package"
        )
    arch = _require(data, "architecture", dict, where)
    arch_name = _require(arch, "name", str, f"{where} architecture")
    arch_config = arch.get("config", {})
    if not isinstance(arch_config, dict):
        raise CrossEarthError(f"{where}: architecture.config must be an object")

    raw_classes = _require(data, "classes", list, where)
    if not raw_classes:
        raise CrossEarthError(f"{where}: 'classes' is empty; a model needs at least one class")
    classes = []
    for position, item in enumerate(raw_classes):
        item_where = f"{where} classes[{position}]"
        if not isinstance(item, dict):
            raise CrossEarthError(f"{item_where}: expected an object with index, name, color")
        index = _require(item, "index", int, item_where)
        if index != position:
            raise CrossEarthError(f"{item_where}: index {index} out of order (expected {position})")
        color = _numbers(item.get("color"), item_where, "color", 3)
        if not all(0 <= c <= 255 for c in color):
            raise CrossEarthError(f"{item_where}: colour values must lie in 0..255")
        classes.append(
            ClassInfo(index, _require(item, "name", str, item_where), tuple(int(c) for c in color))
        )

    raw_input = _require(data, "input", dict, where)
    bands = _require(raw_input, "bands", list, f"{where} input")
    if not bands or not all(isinstance(b, str) for b in bands):
        raise CrossEarthError(f"{where}: input.bands must be a non-empty list of band names")
    input_spec = InputSpec(
        bands=tuple(bands),
        value_range=_numbers(raw_input.get("value_range", [0, 255]), where, "input.value_range", 2),
        mean=_numbers(raw_input.get("mean"), where, "input.mean", len(bands)),
        std=_numbers(raw_input.get("std"), where, "input.std", len(bands)),
    )
    if any(s <= 0 for s in input_spec.std):
        raise CrossEarthError(f"{where}: input.std values must be positive")

    tile = _require(data, "tile", dict, where)
    tile_size = _require(tile, "size", int, f"{where} tile")
    tile_stride = _require(tile, "stride", int, f"{where} tile")
    if not 0 < tile_stride <= tile_size:
        raise CrossEarthError(f"{where}: tile.stride must be in 1..tile.size ({tile_size})")
    size_multiple = data.get("size_multiple", 1)
    if not isinstance(size_multiple, int) or size_multiple < 1:
        raise CrossEarthError(f"{where}: size_multiple must be a positive integer")
    if tile_size % size_multiple:
        raise CrossEarthError(
            f"{where}: tile.size {tile_size} is not a multiple of size_multiple {size_multiple}"
        )
    input_scale = data.get("input_scale", 1)
    if not isinstance(input_scale, int) or isinstance(input_scale, bool) or input_scale < 1:
        raise CrossEarthError(f"{where}: input_scale must be a positive integer")
    gsd = data.get("gsd_m")
    if gsd is not None and (not isinstance(gsd, (int, float)) or gsd <= 0):
        raise CrossEarthError(f"{where}: gsd_m must be a positive number or null")
    return ModelCard(
        name=_require(data, "name", str, where),
        version=str(data.get("version", "0")),
        architecture=arch_name,
        config=arch_config,
        classes=tuple(classes),
        input=input_spec,
        tile_size=tile_size,
        tile_stride=tile_stride,
        size_multiple=size_multiple,
        input_scale=input_scale,
        gsd_m=None if gsd is None else float(gsd),
        description=str(data.get("description", "")),
        license=str(data.get("license", "unknown")),
        provenance=dict(data.get("provenance", {})),
        metrics=dict(data.get("metrics", {})),
    )


def read_card(path: Path) -> ModelCard:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CrossEarthError(f"cannot read model card {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CrossEarthError(
            f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}); fix or re-export the package"
        ) from exc
    return card_from_dict(data, where=str(path))
