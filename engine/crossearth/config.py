"""Sizes of a CrossEarth network: DINOv2 backbone, LoRA-Reins adapter, Mask2Former head.

The defaults are the released configuration (ViT-L/16 at 512 px, 100 Rein tokens, 256-wide head).
A config round-trips through the model card's `architecture.config` as plain JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from engine.errors import ConfigFieldError, CrossEarthError


def _shown(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_section(name: str, section: Any) -> None:
    """Every size is a positive whole number and every factor a finite number; checked before
    any of them divides another (a zero head count must not become a ZeroDivisionError)."""
    for item in fields(section):
        value = getattr(section, item.name)
        where = f"{name}.{item.name}"
        if isinstance(item.default, bool):
            continue
        if isinstance(item.default, int):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigFieldError(
                    where, f"must be a positive whole number, got {_shown(value)}"
                )
        elif isinstance(item.default, float):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigFieldError(where, f"must be a number, got {_shown(value)}")
            if not math.isfinite(value) or (item.name == "mlp_ratio" and value <= 0):
                raise ConfigFieldError(
                    where,
                    f"must be a finite{' positive' if item.name == 'mlp_ratio' else ''} "
                    f"number, got {_shown(value)}",
                )
        elif isinstance(item.default, tuple) and not (
            isinstance(value, (tuple, list))
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        ):
            raise ConfigFieldError(where, f"must be a list of block numbers, got {_shown(value)}")


@dataclass(frozen=True)
class BackboneConfig:
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 16
    # The position-embedding grid is img_size / patch_size on a side.
    img_size: int = 512
    out_indices: tuple[int, ...] = (7, 11, 15, 23)
    layerscale_init: float = 1e-5
    in_chans: int = 3


@dataclass(frozen=True)
class ReinsConfig:
    token_length: int = 100
    lora_dim: int = 16
    # Width of the queries handed to the head; must equal the head's feat_channels.
    query_dims: int = 256
    scale_init: float = 1e-3


@dataclass(frozen=True)
class HeadConfig:
    feat_channels: int = 256
    out_channels: int = 256
    norm_groups: int = 32
    num_levels: int = 3
    pixel_decoder_layers: int = 6
    pixel_decoder_heads: int = 8
    pixel_decoder_points: int = 4
    pixel_decoder_ffn: int = 1024
    decoder_layers: int = 9
    decoder_heads: int = 8
    decoder_ffn: int = 2048
    # Sine positional encoding: features per axis (feat_channels / 2 in every released config).
    positional_feats: int = 128


@dataclass(frozen=True)
class CrossEarthConfig:
    num_classes: int
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    reins: ReinsConfig = field(default_factory=ReinsConfig)
    head: HeadConfig = field(default_factory=HeadConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises a ConfigFieldError naming the field when the sizes cannot build a network."""
        b, r, h = self.backbone, self.reins, self.head
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ConfigFieldError(
                "num_classes", f"must be a positive whole number, got {_shown(self.num_classes)}"
            )
        for name, section in (("backbone", b), ("reins", r), ("head", h)):
            _check_section(name, section)
        problems = []
        if b.embed_dim % b.num_heads:
            problems.append(f"embed_dim {b.embed_dim} is not divisible by num_heads {b.num_heads}")
        if b.img_size % b.patch_size:
            problems.append(f"img_size {b.img_size} is not a multiple of patch_size {b.patch_size}")
        if len(b.out_indices) != 4:
            problems.append(
                f"out_indices must name 4 blocks (strides 4/8/16/32), got {b.out_indices}"
            )
        if any(not 0 <= i < b.depth for i in b.out_indices):
            problems.append(f"out_indices {b.out_indices} must lie in 0..{b.depth - 1}")
        if r.query_dims != h.feat_channels:
            problems.append(
                f"reins.query_dims {r.query_dims} must equal head.feat_channels {h.feat_channels}"
            )
        if r.token_length < 2:
            problems.append("reins.token_length must be at least 2 (token 0 only steers attention)")
        if h.feat_channels % h.norm_groups:
            problems.append(
                f"head.feat_channels {h.feat_channels} is not divisible by norm_groups "
                f"{h.norm_groups}"
            )
        if h.feat_channels % h.decoder_heads or h.feat_channels % h.pixel_decoder_heads:
            problems.append("head.feat_channels must be divisible by the attention head counts")
        if h.positional_feats * 2 != h.feat_channels:
            problems.append(
                f"head.positional_feats {h.positional_feats} must be half of feat_channels "
                f"{h.feat_channels}"
            )
        if h.num_levels != 3:
            problems.append("head.num_levels must be 3 (strides 8, 16, 32)")
        if problems:
            raise CrossEarthError("invalid CrossEarth config: " + "; ".join(problems))

    @property
    def grid_size(self) -> int:
        """Patches per side of the configured image size (the position-embedding grid)."""
        return self.backbone.img_size // self.backbone.patch_size

    def to_dict(self) -> dict[str, Any]:
        """The config as the plain data a card stores (the inverse of `from_dict`)."""
        data = asdict(self)
        data["backbone"]["out_indices"] = list(self.backbone.out_indices)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], num_classes: int | None = None) -> CrossEarthConfig:
        """Builds a config from a card's architecture.config; unknown fields are an error."""
        if not isinstance(data, dict):
            raise CrossEarthError("CrossEarth architecture config must be an object")
        parts: dict[str, Any] = {}
        for name, kind in (
            ("backbone", BackboneConfig),
            ("reins", ReinsConfig),
            ("head", HeadConfig),
        ):
            raw = data.get(name, {})
            if not isinstance(raw, dict):
                raise CrossEarthError(f"CrossEarth config '{name}' must be an object")
            known = {f.name for f in fields(kind)}
            unknown = sorted(set(raw) - known)
            if unknown:
                raise CrossEarthError(
                    f"CrossEarth config '{name}' has unknown field(s) {', '.join(unknown)}; "
                    f"known: {', '.join(sorted(known))}"
                )
            values = dict(raw)
            if isinstance(values.get("out_indices"), list):
                values["out_indices"] = tuple(values["out_indices"])
            parts[name] = kind(**values)
        classes = data.get("num_classes", num_classes)
        if classes is None:
            raise CrossEarthError("CrossEarth config needs num_classes")
        if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
            raise ConfigFieldError(
                "num_classes", f"must be a positive whole number, got {_shown(classes)}"
            )
        if num_classes is not None and classes != num_classes:
            raise CrossEarthError(
                f"CrossEarth config says {classes} classes but the card lists {num_classes}"
            )
        return cls(num_classes=int(classes), **parts)
