"""The model card (model.json): everything the engine needs to know about a model package.

A card is checked against a schema (pydantic) before anything uses it: types, finite numbers
(JSON readers accept NaN and Infinity), ranges and list lengths, then the rules that tie fields
together. Every problem is one CrossEarthError naming the file and the field path, e.g.
"model.json: input.mean[1]: must be a finite number, got NaN".
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from engine.error_codes import MODEL_CARD, MODEL_CARD_READ
from engine.errors import ConfigFieldError, CrossEarthError, ModelError

if TYPE_CHECKING:  # pydantic loads on first use (see _schema)
    from pydantic_core import ErrorDetails

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
    # The package's ONNX graph (`crossearth export`): file, sha256, opset, tile (the source
    # tile side it takes), bands, max_abs_diff (vs PyTorch when exported), exported_with.
    onnx: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        """How many classes the model predicts."""
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        """The class names in index order."""
        return [c.name for c in self.classes]

    def to_json_dict(self) -> dict[str, Any]:
        """The card as model.json data (the inverse of `card_from_dict`)."""
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
        if data["onnx"] is None:
            del data["onnx"]
        return data

    def save(self, path: Path) -> None:
        """Writes model.json; a reader never sees a half-written card."""
        from engine.files import atomic_write

        text = json.dumps(self.to_json_dict(), indent=2) + "\n"
        with atomic_write(Path(path)) as temp:
            temp.write_text(text, encoding="utf-8")


# Outputs are class GeoTIFFs with one value per class.
MAX_CLASSES = 65535


# Long by design: the whole model.json schema is one declaration, read top to bottom, and built
# inside a function so that pydantic loads only when a card is first read.
def _schema() -> Any:
    """The pydantic models of model.json, built on first use (pydantic loads in ~0.1 s)."""
    from pydantic import AfterValidator, BaseModel, ConfigDict, Field

    def positive(value: float) -> float:
        if value <= 0:
            raise _custom("must be positive", value)
        return value

    def at_least_one(value: int) -> int:
        if value < 1:
            raise _custom("must be a positive whole number", value)
        return value

    def byte(value: int) -> int:
        if not 0 <= value <= 255:
            raise _custom("colour values must lie in 0..255", value)
        return value

    def named(value: str) -> str:
        if not value.strip():
            raise _custom("must not be empty", value)
        return value

    Finite = Annotated[float, Field(allow_inf_nan=False)]
    Positive = Annotated[float, Field(allow_inf_nan=False), AfterValidator(positive)]
    Count = Annotated[int, AfterValidator(at_least_one)]
    Byte = Annotated[int, AfterValidator(byte)]
    Name = Annotated[str, AfterValidator(named)]

    class Strict(BaseModel):
        # Strict: "3" is not a number and true is not 1; unknown fields are ignored so that
        # cards from newer tools with extra information still read.
        model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)

    class Class(Strict):
        index: int
        name: str
        color: Annotated[list[Byte], Field(min_length=3, max_length=3)]

    class Input(Strict):
        bands: Annotated[list[Name], Field(min_length=1)]
        value_range: Annotated[list[Finite], Field(min_length=2, max_length=2)] = [0.0, 255.0]
        mean: list[Finite]
        std: list[Positive]

    class Tile(Strict):
        size: Count
        stride: int

    def plain_name(value: str) -> str:
        if not value or value in (".", "..") or "/" in value or "\\" in value:
            raise _custom("must be a file name inside the package", value)
        return value

    class Onnx(Strict):
        file: Annotated[str, AfterValidator(plain_name)]
        sha256: Annotated[str, Field(pattern="^[0-9a-f]{64}$")]
        opset: Count
        tile: Count
        bands: Count
        max_abs_diff: Finite
        exported_with: str = ""

    class Architecture(Strict):
        name: Name
        config: dict[str, Any] = {}

    class Card(Strict):
        # In the order problems are reported: what the model is before what it is called.
        architecture: Architecture
        classes: Annotated[list[Class], Field(min_length=1, max_length=MAX_CLASSES)]
        input: Input
        tile: Tile
        name: str
        version: str | int | float = "0"
        size_multiple: Count = 1
        input_scale: Count = 1
        gsd_m: Positive | None = None
        description: str | None = ""
        license: str | None = "unknown"
        provenance: dict[str, Any] = {}
        metrics: dict[str, Any] = {}
        onnx: Onnx | None = None

    return Card


def _custom(message: str, value: Any) -> Exception:
    from pydantic_core import PydanticCustomError

    return PydanticCustomError(
        "card", "{problem}, got {value}", {"problem": message, "value": _shown(value)}
    )


_CARD_SCHEMA: Any = None


def _shown(value: Any) -> str:
    """A value as the user wrote it in JSON, shortened."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = json.dumps(value) if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field_path(location: tuple[Any, ...]) -> str:
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("str", "int", "float", "none") or "[" in str(part):
            continue  # the member of a union pydantic tried, not a field
        else:
            text += f".{part}" if text else str(part)
    return text


_TYPE_NAMES = {
    "int_type": "a whole number",
    "float_type": "a number",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def _describe_error(error: ErrorDetails) -> str:
    kind, value, context = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "card":
        return f"{context['problem']}, got {context['value']}"
    if kind == "finite_number":
        return f"must be a finite number, got {_shown(value)}"
    if kind in _TYPE_NAMES:
        return f"must be {_TYPE_NAMES[kind]}, got {_shown(value)}"
    if kind == "too_short":
        return f"must have at least {context['min_length']} item(s), got {context['actual_length']}"
    if kind == "too_long":
        got = context.get("actual_length")
        return f"must have at most {context['max_length']} item(s), got {got or 'more'}"
    return f"{error['msg'].rstrip('.')}, got {_shown(value)}"


def _validate(data: dict[str, Any], where: str) -> Any:
    from pydantic import ValidationError

    global _CARD_SCHEMA
    if _CARD_SCHEMA is None:
        _CARD_SCHEMA = _schema()
    try:
        return _CARD_SCHEMA.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # A union reports one error per member; the first names the field well enough.
        first = errors[0]
        path = _field_path(first["loc"])
        # A union (text or a number) reports one type error per member: name them together.
        kinds = [
            _TYPE_NAMES[e["type"]]
            for e in errors
            if _field_path(e["loc"]) == path and e["type"] in _TYPE_NAMES
        ]
        if first["type"] == "missing":
            message = f"{where}: missing field '{path}'"
        elif len(kinds) > 1:
            choices = ", ".join(kinds[:-1]) + " or " + kinds[-1]
            message = f"{where}: {path}: must be {choices}, got {_shown(first.get('input'))}"
        else:
            message = f"{where}: {path}: {_describe_error(first)}"
        fields_wrong = {_field_path(e["loc"]) for e in errors}
        if len(fields_wrong) > 1:
            message += f" (and {len(fields_wrong) - 1} more problem(s))"
        raise ModelError(message, code=MODEL_CARD, path=where, field=path) from None


def _check_architecture(name: str, config: dict[str, Any], num_classes: int, where: str) -> None:
    """The architecture's config is checked with the card (by the check its registration
    gave), so a broken one shows in `crossearth models` and never reaches the network code (a
    zero head count would divide)."""
    from engine.models.architectures import check_config

    try:
        check_config(name, config, num_classes)
    except ConfigFieldError as exc:
        field = f"architecture.config.{exc.field}"
        raise ModelError(
            f"{where}: {field}: {exc.problem}", code=MODEL_CARD, path=where, field=field
        ) from None
    except CrossEarthError as exc:
        raise CrossEarthError(f"{where}: architecture.config: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise CrossEarthError(f"{where}: architecture.config: {exc}") from None


def printable_text(text: str) -> str:
    """`text` with what UTF-8 cannot hold (lone surrogates from undecodable file names or
    arguments) written as escapes, so that a card made from it reads back."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _undecodable_text(value: Any, path: str = "") -> str | None:
    """The field path of the first text that cannot be written as UTF-8 (JSON allows escaped
    lone surrogates such as "\\udcff"; printing them would fail later), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            found = _undecodable_text(key, path) or _undecodable_text(item, inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for position, item in enumerate(value):
            found = _undecodable_text(item, f"{path}[{position}]")
            if found is not None:
                return found
    return None


def card_from_dict(data: Any, where: str = "model.json") -> ModelCard:
    """Validates a parsed model.json and returns the card; every problem is a CrossEarthError."""
    if not isinstance(data, dict):
        raise CrossEarthError(f"{where}: expected a JSON object at the top level")
    version = data.get("format_version", CARD_FORMAT_VERSION)
    if type(version) is not int or version != CARD_FORMAT_VERSION:
        raise CrossEarthError(
            f"{where}: format_version {version!r} is not supported (this engine reads "
            f"{CARD_FORMAT_VERSION}); update crossearth-qgis or re-export the package"
        )
    # Text the tools print (provenance, metrics and config are printed as escaped JSON).
    shown_text = {k: v for k, v in data.items() if k not in ("provenance", "metrics")}
    if isinstance(shown_text.get("architecture"), dict):
        shown_text["architecture"] = {
            k: v for k, v in shown_text["architecture"].items() if k != "config"
        }
    bad_text = _undecodable_text(shown_text)
    if bad_text is not None:
        raise CrossEarthError(
            f"{where}: {bad_text or 'a key'}: holds an escaped lone surrogate (\\udXXX), which is "
            "no character; fix the text"
        )
    card = _validate(data, where)

    for position, item in enumerate(card.classes):
        if item.index != position:
            raise CrossEarthError(
                f"{where}: classes[{position}].index: {item.index} is out of order (expected "
                f"{position}); list the classes by index from 0"
            )
    bands = card.input.bands
    for key in ("mean", "std"):
        values = getattr(card.input, key)
        if len(values) != len(bands):
            raise CrossEarthError(
                f"{where}: input.{key}: must have {len(bands)} values (one per input band), "
                f"got {len(values)}"
            )
    low, high = card.input.value_range
    if not low < high:
        raise CrossEarthError(
            f"{where}: input.value_range: the low end must lie below the high end, got "
            f"[{low:g}, {high:g}]"
        )
    tile_size, tile_stride = card.tile.size, card.tile.stride
    if not 0 < tile_stride <= tile_size:
        raise CrossEarthError(
            f"{where}: tile.stride: must be in 1..tile.size ({tile_size}), got {tile_stride}"
        )
    if tile_size % card.size_multiple:
        raise CrossEarthError(
            f"{where}: tile.size: {tile_size} is not a multiple of size_multiple "
            f"{card.size_multiple}"
        )
    _check_architecture(card.architecture.name, card.architecture.config, len(card.classes), where)
    return ModelCard(
        name=card.name,
        version=str(card.version),
        architecture=card.architecture.name,
        config=card.architecture.config,
        classes=tuple(ClassInfo(c.index, c.name, tuple(c.color)) for c in card.classes),
        input=InputSpec(
            bands=tuple(bands),
            value_range=(low, high),
            mean=tuple(card.input.mean),
            std=tuple(card.input.std),
        ),
        tile_size=tile_size,
        tile_stride=tile_stride,
        size_multiple=card.size_multiple,
        input_scale=card.input_scale,
        gsd_m=card.gsd_m,
        description=card.description or "",
        license=card.license if card.license is not None else "unknown",
        provenance=dict(card.provenance),
        metrics=dict(card.metrics),
        onnx=card.onnx.model_dump() if card.onnx is not None else None,
    )


def read_card(path: Path) -> ModelCard:
    """The card in the model.json at `path`, checked; unreadable or invalid JSON is a
    CrossEarthError naming the file and field."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelError(
            f"cannot read model card {path}: {exc.strerror or exc}",
            code=MODEL_CARD_READ,
            path=str(path),
        ) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CrossEarthError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8 or re-export the package"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CrossEarthError(
            f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}); fix or re-export the package"
        ) from exc
    except RecursionError:
        raise CrossEarthError(f"{path}: nested too deeply to be a model card") from None
    return card_from_dict(data, where=str(path))
