"""Maps an official CrossEarth mmseg config onto our CrossEarthConfig and model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CrossEarthError
from ..model_card import ClassInfo, ModelCard
from .config import BackboneConfig, CrossEarthConfig, HeadConfig, ReinsConfig
from .mmseg_config import lookup, read_config
from .presets import DATASET_CLASSES, IRRG, RGB, make_card

DEFAULT_OUT_INDICES = (7, 11, 15, 23)  # ReinsDinoVisionTransformer's default


def _expect(value: Any, allowed: tuple[Any, ...], what: str, source: str) -> None:
    if value not in allowed:
        raise CrossEarthError(
            f"{source}: {what} is {value!r}; the CrossEarth architecture needs "
            + " or ".join(repr(a) for a in allowed)
        )


def network_config(cfg: dict[str, Any], source: str, num_classes: int) -> CrossEarthConfig:
    def get(path: str, default: Any = ...) -> Any:
        return lookup(cfg, path, default, source)

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

    embed = int(get("model.backbone.embed_dim"))
    depth = int(get("model.backbone.depth"))
    patch = int(get("model.backbone.patch_size"))
    backbone = BackboneConfig(
        embed_dim=embed,
        depth=depth,
        num_heads=int(get("model.backbone.num_heads")),
        mlp_ratio=float(get("model.backbone.mlp_ratio", 4.0)),
        patch_size=patch,
        img_size=int(get("model.backbone.img_size")),
        out_indices=tuple(int(i) for i in get("model.backbone.out_indices", DEFAULT_OUT_INDICES)),
        layerscale_init=float(get("model.backbone.init_values", 1e-5)),
        in_chans=int(get("model.backbone.in_chans", 3)),
    )
    reins_path = "model.backbone.reins_config"
    for key, expected in (("embed_dims", embed), ("num_layers", depth), ("patch_size", patch)):
        value = get(f"{reins_path}.{key}", expected)
        if value != expected:
            raise CrossEarthError(f"{source}: reins_config.{key} is {value}, expected {expected}")
    reins = ReinsConfig(
        token_length=int(get(f"{reins_path}.token_length", 100)),
        lora_dim=int(get(f"{reins_path}.lora_dim", 16)),
        query_dims=int(get(f"{reins_path}.query_dims", 256)),
        scale_init=float(get(f"{reins_path}.scale_init", 1e-3)),
    )
    head_path = "model.decode_head"
    in_channels = get(f"{head_path}.in_channels")
    if list(in_channels) != [embed] * 4:
        raise CrossEarthError(
            f"{source}: decode_head.in_channels {in_channels} must be 4 x {embed}"
        )
    pd = f"{head_path}.pixel_decoder"
    pd_attn = f"{pd}.encoder.layer_cfg.self_attn_cfg"
    td = f"{head_path}.transformer_decoder.layer_cfg"
    norm = get(f"{pd}.norm_cfg", {"type": "GN", "num_groups": 32})
    _expect(norm.get("type"), ("GN",), "pixel_decoder.norm_cfg.type", source)
    levels = int(get(f"{head_path}.num_transformer_feat_level", 3))
    _expect(
        int(get(f"{pd_attn}.num_levels", levels)), (levels,), "the encoder's num_levels", source
    )
    decoder_heads = int(get(f"{td}.cross_attn_cfg.num_heads"))
    _expect(
        int(get(f"{td}.self_attn_cfg.num_heads", decoder_heads)),
        (decoder_heads,),
        "the decoder's self-attention heads",
        source,
    )
    head = HeadConfig(
        feat_channels=int(get(f"{head_path}.feat_channels")),
        out_channels=int(get(f"{head_path}.out_channels")),
        norm_groups=int(norm.get("num_groups", 32)),
        num_levels=levels,
        pixel_decoder_layers=int(get(f"{pd}.encoder.num_layers")),
        pixel_decoder_heads=int(get(f"{pd_attn}.num_heads")),
        pixel_decoder_points=int(get(f"{pd_attn}.num_points", 4)),
        pixel_decoder_ffn=int(get(f"{pd}.encoder.layer_cfg.ffn_cfg.feedforward_channels")),
        decoder_layers=int(get(f"{head_path}.transformer_decoder.num_layers")),
        decoder_heads=decoder_heads,
        decoder_ffn=int(get(f"{td}.ffn_cfg.feedforward_channels")),
        positional_feats=int(get(f"{pd}.positional_encoding.num_feats")),
    )
    return CrossEarthConfig(num_classes=num_classes, backbone=backbone, reins=reins, head=head)


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
    configured = int(lookup(cfg, "model.decode_head.num_classes", source=source))
    classes_count = num_classes or configured
    if classes_count != configured:
        warnings.append(
            f"the config sets num_classes = {configured} but the checkpoint holds "
            f"{classes_count} classes; using {classes_count}"
        )
    config = network_config(cfg, source, classes_count)

    datasets = _datasets(cfg)
    dataset_types = [d["type"] for d in datasets]
    known = [DATASET_CLASSES[t] for t in dataset_types if t in DATASET_CLASSES]
    if class_names is not None:
        if len(class_names) != classes_count:
            raise CrossEarthError(
                f"--classes names {len(class_names)} classes but the model has {classes_count}"
            )
        palette = _palette(classes_count)
        infos = tuple(ClassInfo(i, n, palette[i]) for i, n in enumerate(class_names))
        class_source = "given by the user"
    else:
        matching = [c for c in known if len(c.names) == classes_count]
        if matching:
            infos, class_source = matching[0].infos(), matching[0].source
        else:
            palette = _palette(classes_count)
            infos = tuple(ClassInfo(i, f"class {i}", palette[i]) for i in range(classes_count))
            class_source = "unknown"
            warnings.append(
                f"the config's datasets ({', '.join(dataset_types) or 'none'}) do not name "
                f"{classes_count} classes; named 'class 0'..; pass --classes NAME,NAME,.. or "
                "use --preset"
            )

    if bands is None:
        roots = " ".join(
            str(d.get("data_root", "")) + str(d.get("data_prefix", "")) for d in datasets
        )
        bands = IRRG if "irrg" in roots.lower() else RGB
    mean = tuple(float(v) for v in lookup(cfg, "model.data_preprocessor.mean", source=source))
    std = tuple(float(v) for v in lookup(cfg, "model.data_preprocessor.std", source=source))
    if not lookup(cfg, "model.data_preprocessor.bgr_to_rgb", False):
        # Images load as BGR and stay so: the network's channels are blue, green, red.
        bands = tuple(reversed(bands))
    test_cfg = lookup(cfg, "model.test_cfg", {}, source)
    tile = None
    if test_cfg.get("mode") == "slide":
        crop, stride = test_cfg.get("crop_size"), test_cfg.get("stride")
        if crop and stride and crop[0] == crop[1] and stride[0] == stride[1]:
            tile = (int(crop[0]), int(stride[0]))
    card = make_card(
        name,
        config,
        infos,
        bands=bands,
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


def _palette(count: int) -> list[tuple[int, int, int]]:
    """Distinct colours for classes without an official palette (golden-angle hues)."""
    import colorsys

    colours = []
    for i in range(count):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours
