"""Named CrossEarth configurations.

Architecture presets give network sizes only: the released ViT-L at 512 and 1024 px, and small
variants for CPU use and tests. Checkpoint presets add what a model card needs for each
released checkpoint (github Cuzyoung/CrossEarth, weights on Hugging Face "Cusyoung/CrossEarth"):
classes and colours as the official dataset definitions give them, input bands, tile and
stride of the official sliding-window test, ground sample distance of the source data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

from engine.crossearth.config import BackboneConfig, CrossEarthConfig, HeadConfig, ReinsConfig
from engine.error_codes import CONFIG_UNKNOWN_PRESET
from engine.errors import ConfigError, CrossEarthError
from engine.models.model_card import ClassInfo, InputSpec, ModelCard

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
# The class raster is uint16 with 65535 as nodata: class numbers 0..65534.
MAX_CLASSES = 65535
RGB = ("red", "green", "blue")
# ISPRS "IRRG" tiles put near-infrared, red and green in the three channels.
IRRG = ("nir", "red", "green")
OFFICIAL_LICENSE = (
    "CrossEarth code MIT (github Cuzyoung/CrossEarth); released weights MIT (the license the "
    "Hugging Face page Cusyoung/CrossEarth declares); DINOv2 backbone Apache-2.0"
)


class _Sections(TypedDict):
    """The sections of an architecture preset: CrossEarthConfig's arguments but the classes."""

    backbone: BackboneConfig
    reins: ReinsConfig
    head: HeadConfig


def _official(img_size: int) -> _Sections:
    return {
        "backbone": BackboneConfig(img_size=img_size),
        "reins": ReinsConfig(),
        "head": HeadConfig(),
    }


@dataclass(frozen=True)
class _Reduced:
    """A reduced variant for CPU use and tests: the sizes that set it apart from the released
    ViT-L. Its pixel decoder and decoder attend with 4 heads, and its head has as many output
    channels as feature channels (`channels`)."""

    embed_dim: int
    depth: int
    num_heads: int
    out_indices: tuple[int, ...]
    img_size: int
    token_length: int
    lora_dim: int
    query_dims: int
    channels: int
    pixel_decoder_layers: int
    pixel_decoder_ffn: int
    decoder_layers: int
    decoder_ffn: int
    positional_feats: int

    def sections(self) -> _Sections:
        """The variant's backbone, Reins and head configs."""
        return {
            "backbone": BackboneConfig(
                embed_dim=self.embed_dim,
                depth=self.depth,
                num_heads=self.num_heads,
                out_indices=self.out_indices,
                img_size=self.img_size,
            ),
            "reins": ReinsConfig(
                token_length=self.token_length, lora_dim=self.lora_dim, query_dims=self.query_dims
            ),
            "head": HeadConfig(
                feat_channels=self.channels,
                out_channels=self.channels,
                pixel_decoder_layers=self.pixel_decoder_layers,
                pixel_decoder_heads=4,
                pixel_decoder_ffn=self.pixel_decoder_ffn,
                decoder_layers=self.decoder_layers,
                decoder_heads=4,
                decoder_ffn=self.decoder_ffn,
                positional_feats=self.positional_feats,
            ),
        }


_REDUCED = {
    "vit-s": _Reduced(
        embed_dim=384,
        depth=12,
        num_heads=6,
        out_indices=(3, 5, 7, 11),
        img_size=512,
        token_length=100,
        lora_dim=16,
        query_dims=128,
        channels=128,
        pixel_decoder_layers=3,
        pixel_decoder_ffn=512,
        decoder_layers=6,
        decoder_ffn=1024,
        positional_feats=64,
    ),
    "vit-ti": _Reduced(
        embed_dim=192,
        depth=12,
        num_heads=3,
        out_indices=(3, 5, 7, 11),
        img_size=512,
        token_length=50,
        lora_dim=8,
        query_dims=64,
        channels=64,
        pixel_decoder_layers=2,
        pixel_decoder_ffn=256,
        decoder_layers=4,
        decoder_ffn=256,
        positional_feats=32,
    ),
    # The sizes of the official reduced reference (tests/fixtures/official/tiny_config.py).
    "tiny": _Reduced(
        embed_dim=192,
        depth=4,
        num_heads=3,
        out_indices=(0, 1, 2, 3),
        img_size=128,
        token_length=10,
        lora_dim=4,
        query_dims=64,
        channels=64,
        pixel_decoder_layers=2,
        pixel_decoder_ffn=128,
        decoder_layers=3,
        decoder_ffn=128,
        positional_feats=32,
    ),
}

ARCHITECTURES: dict[str, Callable[[], _Sections]] = {
    "vit-l-512": lambda: _official(512),
    "vit-l-1024": lambda: _official(1024),
    **{name: variant.sections for name, variant in _REDUCED.items()},
}


def architecture_config(name: str, num_classes: int) -> CrossEarthConfig:
    """The config of the architecture preset `name` for `num_classes` classes; an unknown name is
    a CrossEarthError listing the presets."""
    try:
        parts = ARCHITECTURES[name]()
    except KeyError:
        raise CrossEarthError(
            f"unknown CrossEarth architecture preset '{name}'; known: {', '.join(ARCHITECTURES)}"
        ) from None
    return CrossEarthConfig(num_classes=num_classes, **parts)


@dataclass(frozen=True)
class ClassList:
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    source: str

    def infos(self) -> tuple[ClassInfo, ...]:
        """The classes as the card's ClassInfo entries, indexed in order."""
        return tuple(
            ClassInfo(i, n, c) for i, (n, c) in enumerate(zip(self.names, self.colors, strict=True))
        )


ISPRS = ClassList(
    ("impervious surface", "building", "low vegetation", "tree", "car", "clutter"),
    ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)),
    "ISPRS Potsdam/Vaihingen (PotsdamReduceDataset / ISPRSReduceDataset)",
)
RESCUENET = ClassList(
    ("impervious surface", "building", "vegetation", "car", "clutter"),
    ((255, 255, 255), (0, 0, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)),
    "Potsdam -> RescueNet (RescueDataset)",
)
CASID = ClassList(
    ("background", "building", "forest", "road", "water"),
    ((0, 0, 0), (255, 255, 0), (85, 255, 0), (255, 0, 0), (0, 112, 255)),
    "CASID (CasidDataset)",
)
LOVEDA = ClassList(
    ("background", "building", "road", "water", "barren", "forest", "agricultural"),
    (
        (255, 255, 255),
        (255, 0, 0),
        (255, 255, 0),
        (0, 0, 255),
        (159, 129, 183),
        (0, 255, 0),
        (255, 195, 128),
    ),
    "LoveDA (loveDADataset)",
)
# The official binary datasets name their classes [foreground, background] but draw index 1
# white, the foreground colour of their masks; the order used here (background first) follows
# the CrossEarth paper and code and the masks' 0/1 convention.
BUILDING = ClassList(
    ("background", "building"),
    ((0, 0, 0), (255, 255, 255)),
    "WHU Building (WhuBuildingDataset)",
)
ROAD = ClassList(
    ("background", "road"),
    ((0, 0, 0), (255, 255, 255)),
    "DeepGlobe / Massachusetts roads (DeepglobeDataset / MassRoadDataset)",
)

# Official dataset class -> class list, for cards converted from an mmseg config.
DATASET_CLASSES = {
    "PotsdamReduceDataset": ISPRS,
    "ISPRSReduceDataset": ISPRS,
    "PotsdamDataset": ISPRS,
    "ISPRSDataset": ISPRS,
    "PotsdamRescueDataset": RESCUENET,
    "RescueDataset": RESCUENET,
    "CasidDataset": CASID,
    "loveDADataset": LOVEDA,
    "LoveDADataset": LOVEDA,
    "WhuBuildingDataset": BUILDING,
    "SpaceBuildingDataset": BUILDING,
    "DeepglobeDataset": ROAD,
    "MassRoadDataset": ROAD,
    "SpaceRoadDataset": ROAD,
}


@dataclass(frozen=True)
class CheckpointPreset:
    name: str
    checkpoint: str  # file name on the Hugging Face page
    architecture: str
    classes: ClassList
    bands: tuple[str, ...]
    gsd_m: float | None
    description: str

    @property
    def tile(self) -> tuple[int, int]:
        """The tile (size, stride) the official checkpoint was run with."""
        # The configured image size with the official 2/3 stride: 512/341, 1024/683.
        size = ARCHITECTURES[self.architecture]()["backbone"].img_size
        return (size, round(size * 2 / 3))


def _preset(
    name: str,
    checkpoint: str,
    arch: str,
    classes: ClassList,
    bands: tuple[str, ...],
    gsd: float | None,
    description: str,
) -> CheckpointPreset:
    return CheckpointPreset(name, checkpoint, arch, classes, bands, gsd, description)


CHECKPOINTS = {
    p.name: p
    for p in [
        _preset(
            "potsdam-i-source",
            "Potsdam(i)-source.pth",
            "vit-l-512",
            ISPRS,
            IRRG,
            0.05,
            "trained on ISPRS Potsdam IRRG tiles; published for P(i)->Vaihingen and P(i)->P(r)",
        ),
        _preset(
            "potsdam-r-source",
            "Potsdam(r)-source.pth",
            "vit-l-512",
            ISPRS,
            RGB,
            0.05,
            "trained on ISPRS Potsdam RGB tiles; published for P(r)->P(i) and P(r)->Vaihingen",
        ),
        _preset(
            "vaihingen-source",
            "Vaihingen-source.pth",
            "vit-l-512",
            ISPRS,
            IRRG,
            0.09,
            "trained on ISPRS Vaihingen IRRG tiles; published for V->P(i) and V->P(r)",
        ),
        _preset(
            "potsdam-r-to-rescuenet",
            "Potsdam(r)2RescueNet.pth",
            "vit-l-512",
            RESCUENET,
            RGB,
            None,
            "Potsdam RGB -> RescueNet (post-hurricane UAV imagery)",
        ),
        _preset(
            "potsdam-i-to-rescuenet",
            "Potsdam(i)2RescueNet.pth",
            "vit-l-512",
            RESCUENET,
            IRRG,
            None,
            "Potsdam IRRG -> RescueNet (post-hurricane UAV imagery)",
        ),
        _preset(
            "whu-building-a2s",
            "WHU-Building-A2S.pth",
            "vit-l-512",
            BUILDING,
            RGB,
            0.3,
            "WHU Building, aerial -> satellite",
        ),
        _preset(
            "whu-building-s2a",
            "WHU-Building-S2A.pth",
            "vit-l-512",
            BUILDING,
            RGB,
            None,
            "WHU Building, satellite -> aerial",
        ),
        _preset(
            "d2m-rein",
            "D2M-Rein.pth",
            "vit-l-1024",
            ROAD,
            RGB,
            0.5,
            "DeepGlobe roads -> Massachusetts roads",
        ),
        _preset(
            "casid-sub-source",
            "casid-sub-source.pth",
            "vit-l-1024",
            CASID,
            RGB,
            None,
            "CASID, subtropical monsoon source",
        ),
        _preset(
            "casid-tem-source",
            "casid-tem-source.pth",
            "vit-l-1024",
            CASID,
            RGB,
            None,
            "CASID, temperate monsoon source",
        ),
        _preset(
            "casid-tms-source",
            "casid-tms-source.pth",
            "vit-l-1024",
            CASID,
            RGB,
            None,
            "CASID, tropical monsoon source",
        ),
        _preset(
            "casid-trf-source",
            "casid-trf-source.pth",
            "vit-l-1024",
            CASID,
            RGB,
            None,
            "CASID, tropical rainforest source",
        ),
        _preset(
            "loveda-1024",
            "(announced LoveDA weights)",
            "vit-l-1024",
            LOVEDA,
            RGB,
            0.3,
            "LoveDA urban/rural, 7 classes (the 1024 config's dataset)",
        ),
    ]
}


def checkpoint_preset(name: str) -> CheckpointPreset:
    """The official checkpoint preset `name`; an unknown name is a CrossEarthError listing them."""
    try:
        return CHECKPOINTS[name]
    except KeyError:
        known = ", ".join(sorted(CHECKPOINTS))
        raise ConfigError(
            f"unknown preset '{name}'; known: {known}",
            code=CONFIG_UNKNOWN_PRESET,
            name=name,
            known=known,
        ) from None


def make_card(
    name: str,
    config: CrossEarthConfig,
    classes: tuple[ClassInfo, ...],
    *,
    bands: tuple[str, ...] = RGB,
    tile: tuple[int, int] | None = None,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    value_range: tuple[float, float] = (0.0, 255.0),
    gsd_m: float | None = None,
    description: str = "",
    license: str = "unknown",
    version: str = "1",
    provenance: dict[str, object] | None = None,
    metrics: dict[str, object] | None = None,
    input_scale: int = 1,
) -> ModelCard:
    """A model card for a CrossEarth network; tile (in source pixels) defaults to the
    configured image size with the official 2/3 stride."""
    if config.num_classes > MAX_CLASSES:
        raise CrossEarthError(
            f"a {config.num_classes}-class network is refused: the class raster holds at most "
            f"{MAX_CLASSES} classes"
        )
    if len(classes) != config.num_classes:
        raise CrossEarthError(
            f"{len(classes)} class names given for a {config.num_classes}-class network"
        )
    patch = config.backbone.patch_size
    if input_scale < 1 or patch % input_scale:
        raise CrossEarthError(f"input_scale {input_scale} must divide the patch size {patch}")
    size = config.backbone.img_size // input_scale
    tile_size, stride = tile or (size, round(size * 2 / 3))
    return ModelCard(
        name=name,
        version=version,
        architecture="crossearth",
        config=config.to_dict(),
        classes=classes,
        input=InputSpec(bands=bands, value_range=value_range, mean=mean, std=std),
        tile_size=tile_size,
        tile_stride=stride,
        size_multiple=patch // input_scale,
        input_scale=input_scale,
        gsd_m=gsd_m,
        description=description,
        license=license,
        provenance=dict(provenance or {}),
        metrics=dict(metrics or {}),
    )


def preset_card(preset: CheckpointPreset, name: str | None = None) -> ModelCard:
    """The card of an official checkpoint (classes, bands, tile, GSD, license); `name` overrides
    the package name."""
    config = architecture_config(preset.architecture, len(preset.classes.names))
    return make_card(
        name or f"crossearth-{preset.name}",
        config,
        preset.classes.infos(),
        bands=preset.bands,
        tile=preset.tile,
        gsd_m=preset.gsd_m,
        description=f"CrossEarth ViT-L ({preset.checkpoint}): {preset.description}",
        license=OFFICIAL_LICENSE,
    )
