"""Maps an official CrossEarth mmseg config onto our CrossEarthConfig and model card."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from engine.crossearth.config import BackboneConfig, CrossEarthConfig, HeadConfig, ReinsConfig
from engine.crossearth.mmseg_config import lookup, read_config, short_repr
from engine.crossearth.presets import DATASET_CLASSES, IRRG, MAX_CLASSES, RGB, make_card
from engine.error_codes import CONFIG_CLASSES_COUNT
from engine.errors import ConfigError, CrossEarthError
from engine.models.model_card import ClassInfo, ModelCard

DEFAULT_OUT_INDICES = (7, 11, 15, 23)  # ReinsDinoVisionTransformer's default
# Generous bounds on what a config may ask the converter to build (the released ViT-L has
# 1024 channels and 24 blocks); beyond them a value is a typo or hostile, not a model.
MAX_DIMENSION = 1 << 16
MAX_LAYERS = 256


def _expect(value: Any, allowed: tuple[Any, ...], what: str, source: str) -> None:
    if value not in allowed:
        raise CrossEarthError(
            f"{source}: {what} is {short_repr(value)}; the CrossEarth architecture needs "
            + " or ".join(repr(a) for a in allowed)
        )


def _integer(
    value: Any, field: str, source: str, maximum: int = MAX_DIMENSION, minimum: int = 1
) -> int:
    """`value` as an int in minimum..maximum; 4.0 passes (`feat / 2`), True and '4' do not."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    kind = "a positive integer" if minimum == 1 else f"an integer of at least {minimum}"
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CrossEarthError(f"{source}: {field} must be {kind}, got {short_repr(value)}")
    if value > maximum:
        raise CrossEarthError(
            f"{source}: {field} must be at most {maximum}, got {short_repr(value)}"
        )
    return value


def _number(value: Any, field: str, source: str, positive: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or (positive and value <= 0):
        kind = "a positive number" if positive else "a number"
        raise CrossEarthError(f"{source}: {field} must be {kind}, got {short_repr(value)}")
    return float(value)


def _sequence(value: Any, field: str, source: str, example: str) -> list[Any]:
    if not isinstance(value, (list, tuple)) or not value or len(value) > MAX_DIMENSION:
        raise CrossEarthError(
            f"{source}: {field} must be a list like {example}, got {short_repr(value)}"
        )
    return list(value)


def _mapping(value: Any, field: str, source: str, example: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CrossEarthError(
            f"{source}: {field} must be a dict like {example}, got {short_repr(value)}"
        )
    return value


class _Keys:
    """Checked reads of one config's dotted keys; errors name the file and the key."""

    def __init__(self, cfg: dict[str, Any], source: str) -> None:
        self.cfg = cfg
        self.source = source

    def get(self, path: str, default: Any = ...) -> Any:
        """The value at `path`, `default` where the config leaves it out."""
        return lookup(self.cfg, path, default, self.source)

    def integer(self, path: str, default: Any = ..., maximum: int = MAX_DIMENSION) -> int:
        """The value at `path` as an integer in 1..maximum."""
        return _integer(self.get(path, default), path, self.source, maximum)

    def number(self, path: str, default: Any = ..., positive: bool = False) -> float:
        """The value at `path` as a finite number."""
        return _number(self.get(path, default), path, self.source, positive)


def network_config(cfg: dict[str, Any], source: str, num_classes: int) -> CrossEarthConfig:
    """The CrossEarthConfig an mmseg config describes; anything this engine would build
    differently is a CrossEarthError naming the config key (`source` names the file)."""
    keys = _Keys(cfg, source)
    _check_architecture(keys)
    backbone = _backbone(keys)
    reins = _reins(keys, backbone)
    head = _head(keys, backbone.embed_dim)
    return CrossEarthConfig(num_classes=num_classes, backbone=backbone, reins=reins, head=head)


def _check_architecture(keys: _Keys) -> None:
    """Refuses a config whose modules are not the ones this engine builds."""
    get, source = keys.get, keys.source
    _expect(
        get("model.backbone.type"), ("ReinsDinoVisionTransformer",), "model.backbone.type", source
    )
    _expect(get("model.backbone.reins_config.type"), ("LoRAReins",), "the Reins type", source)
    _expect(
        get("model.backbone.reins_config.link_token_to_query", True),
        (True,),
        "reins_config.link_token_to_query",
        source,
    )
    _expect(get("model.backbone.ffn_layer", "mlp"), ("mlp",), "backbone.ffn_layer", source)
    _expect(
        get("model.decode_head.type"), ("ReinMask2FormerHead",), "model.decode_head.type", source
    )
    _expect(
        get("model.decode_head.replace_query_feat", False),
        (True,),
        "decode_head.replace_query_feat",
        source,
    )
    _expect(
        get("model.decode_head.enforce_decoder_input_project", False),
        (False,),
        "decode_head.enforce_decoder_input_project",
        source,
    )
    _expect(
        str(get("model.decode_head.pixel_decoder.type")).split(".")[-1],
        ("MSDeformAttnPixelDecoder",),
        "the pixel decoder type",
        source,
    )


def _backbone(keys: _Keys) -> BackboneConfig:
    """The ViT backbone's sizes."""
    get, integer, number, source = keys.get, keys.integer, keys.number, keys.source
    embed = integer("model.backbone.embed_dim")
    depth = integer("model.backbone.depth", maximum=MAX_LAYERS)
    patch = integer("model.backbone.patch_size")
    indices_path = "model.backbone.out_indices"
    indices = _sequence(
        get(indices_path, DEFAULT_OUT_INDICES), indices_path, source, "[7, 11, 15, 23]"
    )
    return BackboneConfig(
        embed_dim=embed,
        depth=depth,
        num_heads=integer("model.backbone.num_heads"),
        mlp_ratio=number("model.backbone.mlp_ratio", 4.0, positive=True),
        patch_size=patch,
        img_size=integer("model.backbone.img_size"),
        out_indices=tuple(
            _integer(i, f"{indices_path}[{n}]", source, MAX_LAYERS, minimum=0)
            for n, i in enumerate(indices)
        ),
        layerscale_init=number("model.backbone.init_values", 1e-5),
        in_chans=integer("model.backbone.in_chans", 3),
    )


def _reins(keys: _Keys, backbone: BackboneConfig) -> ReinsConfig:
    """The Reins adapter's sizes; its layers must match the backbone's."""
    get, integer, number, source = keys.get, keys.integer, keys.number, keys.source
    embed, depth, patch = backbone.embed_dim, backbone.depth, backbone.patch_size
    reins_path = "model.backbone.reins_config"
    for key, expected in (("embed_dims", embed), ("num_layers", depth), ("patch_size", patch)):
        value = get(f"{reins_path}.{key}", expected)
        if value != expected:
            raise CrossEarthError(
                f"{source}: {reins_path}.{key} is {short_repr(value)}, expected {expected}"
            )
    return ReinsConfig(
        token_length=integer(f"{reins_path}.token_length", 100),
        lora_dim=integer(f"{reins_path}.lora_dim", 16),
        query_dims=integer(f"{reins_path}.query_dims", 256),
        scale_init=number(f"{reins_path}.scale_init", 1e-3),
    )


def _head(keys: _Keys, embed: int) -> HeadConfig:
    """The Mask2Former head's sizes; it takes the backbone's `embed` channels at 4 levels."""
    get, integer, source = keys.get, keys.integer, keys.source
    head_path = "model.decode_head"
    channels_path = f"{head_path}.in_channels"
    in_channels = _sequence(get(channels_path), channels_path, source, f"[{embed}] * 4")
    if in_channels != [embed] * 4:
        raise CrossEarthError(
            f"{source}: {channels_path} is {short_repr(in_channels)}; it must be [{embed}] * 4 "
            "(the backbone's embed_dim for each of the 4 levels)"
        )
    pd = f"{head_path}.pixel_decoder"
    pd_attn = f"{pd}.encoder.layer_cfg.self_attn_cfg"
    td = f"{head_path}.transformer_decoder.layer_cfg"
    norm_path = f"{pd}.norm_cfg"
    norm_groups = 32
    if get(norm_path, None) is not None:
        _mapping(get(norm_path), norm_path, source, "dict(type='GN', num_groups=32)")
        _expect(get(f"{norm_path}.type"), ("GN",), f"{norm_path}.type", source)
        norm_groups = integer(f"{norm_path}.num_groups", 32)
    levels = integer(f"{head_path}.num_transformer_feat_level", 3, maximum=MAX_LAYERS)
    _expect(
        integer(f"{pd_attn}.num_levels", levels, maximum=MAX_LAYERS),
        (levels,),
        "the encoder's num_levels",
        source,
    )
    decoder_heads = integer(f"{td}.cross_attn_cfg.num_heads")
    _expect(
        integer(f"{td}.self_attn_cfg.num_heads", decoder_heads),
        (decoder_heads,),
        "the decoder's self-attention heads",
        source,
    )
    return HeadConfig(
        feat_channels=integer(f"{head_path}.feat_channels"),
        out_channels=integer(f"{head_path}.out_channels"),
        norm_groups=norm_groups,
        num_levels=levels,
        pixel_decoder_layers=integer(f"{pd}.encoder.num_layers", maximum=MAX_LAYERS),
        pixel_decoder_heads=integer(f"{pd_attn}.num_heads"),
        pixel_decoder_points=integer(f"{pd_attn}.num_points", 4),
        pixel_decoder_ffn=integer(f"{pd}.encoder.layer_cfg.ffn_cfg.feedforward_channels"),
        decoder_layers=integer(f"{head_path}.transformer_decoder.num_layers", maximum=MAX_LAYERS),
        decoder_heads=decoder_heads,
        decoder_ffn=integer(f"{td}.ffn_cfg.feedforward_channels"),
        positional_feats=integer(f"{pd}.positional_encoding.num_feats"),
    )


def _datasets(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Dataset dicts of the test, val and train loaders (ConcatDataset members included)."""
    found: list[dict[str, Any]] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("datasets"), list):
                for member in node["datasets"]:
                    visit(member)
            elif isinstance(node.get("type"), str):
                found.append(node)

    for loader in ("test_dataloader", "val_dataloader", "train_dataloader"):
        visit(lookup(cfg, f"{loader}.dataset", None))
    return found


def card_from_config(
    path: str | Path,
    name: str,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    bands: tuple[str, ...] | None = None,
) -> tuple[ModelCard, list[str]]:
    """The card of a model described by an official config. `num_classes` (from the
    checkpoint) wins over the config's, which the official README asks users to edit per
    benchmark. Returns the card and warnings."""
    source = str(path)
    cfg = read_config(path)
    warnings: list[str] = []
    classes_count = _classes_count(cfg, source, num_classes, warnings)
    config = network_config(cfg, source, classes_count)
    datasets = _datasets(cfg)
    dataset_types = [d["type"] for d in datasets]
    infos, class_source = _class_infos(classes_count, class_names, dataset_types, warnings)
    mean = _numbers(cfg, "model.data_preprocessor.mean", source, "[123.675, 116.28, 103.53]")
    std = _numbers(cfg, "model.data_preprocessor.std", source, "[58.395, 57.12, 57.375]", True)
    network_bands = _network_bands(cfg, datasets, bands)
    tile = _sliding_tile(cfg, source)
    card = make_card(
        name,
        config,
        infos,
        bands=network_bands,
        tile=tile,
        mean=mean,
        std=std,
        description=f"CrossEarth converted with config {Path(path).name}",
        provenance={
            "mmseg_config": Path(path).name,
            "datasets": dataset_types,
            "classes_from": class_source,
        },
    )
    return card, warnings


def _classes_count(
    cfg: dict[str, Any], source: str, num_classes: int | None, warnings: list[str]
) -> int:
    """How many classes the model has: the checkpoint's `num_classes` where known, else the
    config's; a disagreement is added to `warnings`."""
    classes_path = "model.decode_head.num_classes"
    configured = _integer(
        lookup(cfg, classes_path, source=source), classes_path, source, MAX_CLASSES
    )
    if num_classes is not None and not 1 <= num_classes <= MAX_CLASSES:
        raise CrossEarthError(
            f"the checkpoint's decode_head.cls_embed.weight has {num_classes + 1} rows, i.e. "
            f"{num_classes} classes; a CrossEarth model has 1 to {MAX_CLASSES} classes (plus "
            "one 'no object' row): the checkpoint is damaged or not a CrossEarth model"
        )
    classes_count = configured if num_classes is None else num_classes
    if classes_count != configured:
        warnings.append(
            f"the config sets num_classes = {configured} but the checkpoint holds "
            f"{classes_count} classes; using {classes_count}"
        )
    return classes_count


def _class_infos(
    classes_count: int,
    class_names: list[str] | None,
    dataset_types: list[str],
    warnings: list[str],
) -> tuple[tuple[ClassInfo, ...], str]:
    """The card's classes and where they come from: the user's names, else the official
    dataset's with that many classes, else numbered ones (with a warning)."""
    known = [DATASET_CLASSES[t] for t in dataset_types if t in DATASET_CLASSES]
    if class_names is not None:
        if len(class_names) != classes_count:
            raise ConfigError(
                f"the class names name {len(class_names)} classes but the model has "
                f"{classes_count}",
                code=CONFIG_CLASSES_COUNT,
                option="classes",
                given=len(class_names),
                count=classes_count,
            )
        palette = _palette(classes_count)
        infos = tuple(ClassInfo(i, n, palette[i]) for i, n in enumerate(class_names))
        return infos, "given by the user"
    matching = [c for c in known if len(c.names) == classes_count]
    if matching:
        return matching[0].infos(), matching[0].source
    palette = _palette(classes_count)
    warnings.append(
        f"the config's datasets ({', '.join(dataset_types) or 'none'}) do not name "
        f"{classes_count} classes; named 'class 0'..; give the class names, or convert "
        "with a preset"
    )
    infos = tuple(ClassInfo(i, f"class {i}", palette[i]) for i in range(classes_count))
    return infos, "unknown"


def _network_bands(
    cfg: dict[str, Any], datasets: list[dict[str, Any]], bands: tuple[str, ...] | None
) -> tuple[str, ...]:
    """The bands of the network's input channels, in order: `bands` where given, else what the
    datasets' paths suggest (ISPRS IRRG tiles or RGB)."""
    if bands is None:
        roots = " ".join(
            str(d.get("data_root", "")) + str(d.get("data_prefix", "")) for d in datasets
        )
        bands = IRRG if "irrg" in roots.lower() else RGB
    if not lookup(cfg, "model.data_preprocessor.bgr_to_rgb", False):
        # Images load as BGR and stay so: the network's channels are blue, green, red.
        bands = tuple(reversed(bands))
    return bands


def _sliding_tile(cfg: dict[str, Any], source: str) -> tuple[int, int] | None:
    """(tile, stride) of the official sliding-window test; None for a whole-image test or a
    window that is not square."""
    test_cfg = _mapping(
        lookup(cfg, "model.test_cfg", {}, source), "model.test_cfg", source, "dict(mode='whole')"
    )
    tile = None
    if test_cfg.get("mode") == "slide":
        crop, stride = (
            _pair(lookup(cfg, f"model.test_cfg.{key}", None, source), key, source)
            for key in ("crop_size", "stride")
        )
        if crop and stride and crop[0] == crop[1] and stride[0] == stride[1]:
            tile = (crop[0], stride[0])
    return tile


def _numbers(
    cfg: dict[str, Any], path: str, source: str, example: str, positive: bool = False
) -> tuple[float, ...]:
    values = _sequence(lookup(cfg, path, source=source), path, source, example)
    return tuple(_number(v, f"{path}[{i}]", source, positive) for i, v in enumerate(values))


def _pair(value: Any, key: str, source: str) -> tuple[int, int] | None:
    """A (height, width) of the sliding-window test; None when the config leaves it out."""
    if value is None:
        return None
    field = f"model.test_cfg.{key}"
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise CrossEarthError(
            f"{source}: {field} must be a pair of positive integers like (512, 512), "
            f"got {short_repr(value)}"
        )
    return (
        _integer(value[0], f"{field}[0]", source),
        _integer(value[1], f"{field}[1]", source),
    )


def _palette(count: int) -> list[tuple[int, int, int]]:
    """Distinct colours for classes without an official palette (golden-angle hues)."""
    import colorsys

    if not 0 <= count <= MAX_CLASSES:  # refused before the loop, not after minutes of it
        raise CrossEarthError(f"{count} classes: a model has at most {MAX_CLASSES} classes")
    colours = []
    for i in range(count):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours
