"""Official CrossEarth checkpoints (.pth, mmseg key layout) -> model packages.

Released checkpoints come in two forms: full ones (`backbone.*` incl. the frozen DINOv2
weights, `decode_head.*`), and rein+head ones whose frozen backbone lives in a separate DINOv2
file (`dinov2_converted.pth`, or the original patch-14 DINOv2 weights, converted here the way
the official script does). Pickles are read with `weights_only=True` and memory-mapped, so a
4 GB checkpoint is not copied into memory before it is written out (files in PyTorch's legacy
pre-1.6 format cannot be mapped and are read whole).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engine.crossearth.config import CrossEarthConfig
from engine.crossearth.from_mmseg import card_from_config
from engine.crossearth.model import CrossEarth
from engine.crossearth.presets import MAX_CLASSES, CheckpointPreset, checkpoint_preset, preset_card
from engine.error_codes import (
    CONFIG_CLASSES_WITH_PRESET,
    CONFIG_SOURCE,
    INPUT_NOT_CROSSEARTH,
    MODEL_BACKBONE_MISSING,
)
from engine.errors import ConfigError, CrossEarthError, InputError, ModelError
from engine.files import describe_path, file_sha256
from engine.models.loading import check_state_dict_keys
from engine.models.model_card import ModelCard, printable_text
from engine.models.packages import ModelPackage, check_package_output, save_package
from engine.option_values import WEIGHTS_DTYPES

BACKBONE = "backbone."
HEAD = "decode_head."
REINS = "backbone.reins."
_CHUNKED_BLOCK = re.compile(r"^backbone\.blocks\.\d+\.(\d+)\.")


@dataclass
class ConversionReport:
    package: ModelPackage
    ignored_keys: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_2 = 0x80  # torch.save's legacy format starts with a protocol-2 pickle


def torch_file_kind(path: Path) -> str:
    """What a file looks like from its first bytes: "zip" (torch.save's format since 1.6),
    "pickle" (its legacy format), "safetensors", "empty" or "other"."""
    with open(path, "rb") as handle:
        head = handle.read(16)
        size = os.fstat(handle.fileno()).st_size
    if not head:
        return "empty"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head[0] == PICKLE_PROTOCOL_2:
        return "pickle"
    # safetensors: an 8-byte little-endian header length, then the JSON header.
    if len(head) > 8 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return "safetensors"
    return "other"


def _load_error(exc: BaseException) -> str:
    """The useful sentence of a torch.load failure (its weights-only message is a page long)."""
    text = str(exc)
    marker = "WeightsUnpickler error: "
    if marker in text:
        text = text[text.index(marker) + len(marker) :]
        text = text.split(" Please use", 1)[0].split(". Check", 1)[0]
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:200]


def read_checkpoint(path: Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensors of a .pth file: its `state_dict` (or `model`/`module`) entry or the file's
    top-level mapping, with a leading 'module.' (DataParallel) removed."""
    path = Path(path)
    shown = describe_path(path)
    if not path.is_file():
        raise CrossEarthError(f"{what} {shown} does not exist")
    try:
        kind = torch_file_kind(path)
    except OSError as exc:
        raise CrossEarthError(f"cannot read {what} {shown}: {exc.strerror or exc}") from None
    if kind == "safetensors":
        raise CrossEarthError(
            f"{what} {shown} is a safetensors file (a model package's weights?), not a PyTorch "
            "checkpoint (.pth); a package needs no conversion: use its folder as the model"
        )
    if kind in ("empty", "other"):
        found = "an empty file" if kind == "empty" else "neither a zip archive nor a pickle"
        raise CrossEarthError(
            f"{what} {shown} is not a PyTorch checkpoint ({found}); pass the .pth file as "
            "downloaded"
        )
    try:
        # Only the zip format can be memory-mapped; the legacy one is read whole.
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "zip")
    except MemoryError:
        raise CrossEarthError(
            f"not enough memory to read {what} {shown} (PyTorch's legacy format is read whole); "
            "free memory, or re-save it with a current PyTorch"
        ) from None
    except Exception as exc:
        detail = _load_error(exc)
        # The weights-only unpickler refuses code and classes ("Unsupported global: ..."); any
        # other failure is a damaged file.
        if "Unsupported" in detail:
            raise CrossEarthError(
                f"{what} {shown} holds objects other than tensors and is refused for safety "
                f"({detail})"
            ) from None
        raise CrossEarthError(
            f"{what} {shown} cannot be read as a PyTorch checkpoint: it is truncated, corrupt or "
            f"not a checkpoint ({detail}); download it again"
        ) from None
    if isinstance(data, dict):
        for key in ("state_dict", "model", "module"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not data:
        raise CrossEarthError(f"{what} {path} holds no state dict of tensors")
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CrossEarthError(f"{what} {path} holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return {_CHUNKED_BLOCK.sub(r"backbone.blocks.\1.", k): v for k, v in tensors.items()}


def convert_dinov2_backbone(
    weights: dict[str, torch.Tensor], config: CrossEarthConfig
) -> dict[str, torch.Tensor]:
    """A DINOv2 backbone file as `backbone.*` keys, resized to our patch size and grid: the patch
    kernel and position grid are resized bicubically as the official conversion script does."""
    weights = {k.removeprefix(BACKBONE): v for k, v in weights.items()}
    patch = config.backbone.patch_size
    grid = config.grid_size
    kernel = weights.get("patch_embed.proj.weight")
    if kernel is not None and kernel.shape[-1] != patch:
        weights["patch_embed.proj.weight"] = F.interpolate(
            kernel.float(), size=(patch, patch), mode="bicubic", align_corners=False
        )
    pos = weights.get("pos_embed")
    if pos is not None and pos.shape[1] - 1 != grid * grid:
        old = math.isqrt(pos.shape[1] - 1)
        if old * old != pos.shape[1] - 1:
            raise CrossEarthError(f"backbone pos_embed {tuple(pos.shape)} is not a square grid")
        resized = F.interpolate(
            pos[:, 1:].float().reshape(1, old, old, -1).permute(0, 3, 1, 2),
            size=(grid, grid),
            mode="bicubic",
            align_corners=False,
        )
        weights["pos_embed"] = torch.cat(
            (pos[:, :1].float(), resized.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)), dim=1
        )
    return {BACKBONE + k: v for k, v in weights.items()}


def _check_is_crossearth(tensors: dict[str, torch.Tensor], path: Path) -> None:
    has_reins = any(k.startswith(REINS) for k in tensors)
    has_head = any(k.startswith(HEAD) for k in tensors)
    if has_reins and has_head:
        return
    sample = ", ".join(sorted(tensors)[:4])
    if any("rel_pos" in k or "relative_position" in k for k in tensors):
        kind = "a ViT-RVSA (MTP) model"
    elif any(k.startswith(BACKBONE) for k in tensors):
        kind = "a segmentation model without Rein tokens"
    elif "pos_embed" in tensors and "blocks.0.attn.qkv.weight" in tensors:
        kind = "a bare ViT/DINOv2 backbone"
    else:
        kind = "another architecture"
    # A bare backbone is an input of conversion, only given as the backbone.
    hint = " (give it as the backbone)" if kind == "a bare ViT/DINOv2 backbone" else ""
    raise InputError(
        f"{path} is not a CrossEarth checkpoint: no backbone.reins.* and decode_head.* weights; "
        f"it looks like {kind}{hint} (keys such as {sample})",
        code=INPUT_NOT_CROSSEARTH,
        path=str(path),
        kind=kind,
        keys=sample,
        option="backbone" if hint else None,
    )


def expected_shapes(card: ModelCard) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of the card's network, without allocating it, to check a checkpoint."""
    config = CrossEarthConfig.from_dict(card.config, card.num_classes)
    with torch.device("meta"):
        model = CrossEarth(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _checkpoint_classes(tensors: dict[str, torch.Tensor], path: Path) -> int | None:
    """The class count the checkpoint's head predicts (its cls_embed rows less "no object")."""
    weight = tensors.get("decode_head.cls_embed.weight")
    if weight is None:
        return None
    count = int(weight.shape[0]) - 1
    if not 1 <= count <= MAX_CLASSES:
        raise CrossEarthError(
            f"{path}: decode_head.cls_embed.weight describes {count} classes; a CrossEarth head "
            f"predicts 1..{MAX_CLASSES}: the file is damaged or not a segmentation checkpoint"
        )
    return count


def convert(
    checkpoint: Path,
    output: Path,
    *,
    preset: str | CheckpointPreset | None = None,
    mmseg_config: Path | None = None,
    backbone: Path | None = None,
    name: str | None = None,
    class_names: list[str] | None = None,
    bands: tuple[str, ...] | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    progress: Callable[[float, str], None] | None = None,
    provenance: dict[str, Any] | None = None,
) -> ConversionReport:
    """Converts a checkpoint into a package at `output` (written atomically). `preset` is a
    preset's name or the preset itself (a catalog entry's); `provenance` adds entries to the
    card's provenance (e.g. where the checkpoint was downloaded from)."""
    report = progress or (lambda fraction, message: None)
    if (preset is None) == (mmseg_config is None):
        raise ConfigError(
            "give exactly one of a preset or an mmseg config",
            code=CONFIG_SOURCE,
            options=["preset", "mmseg_config"],
        )
    if dtype not in WEIGHTS_DTYPES:
        raise CrossEarthError(f"dtype '{dtype}' is not valid; use {', '.join(WEIGHTS_DTYPES)}")
    inputs = [checkpoint, backbone, mmseg_config]
    # Before the (possibly 4 GB) checkpoint is read: the output is new or a package of ours,
    # and none of the inputs.
    output = check_package_output(output, overwrite=overwrite, inputs=inputs)
    if not output.parent.is_dir():
        raise CrossEarthError(f"output folder {output.parent} does not exist; create it first")
    checkpoint = Path(checkpoint)
    report(0.0, f"reading {checkpoint.name}")
    tensors = read_checkpoint(checkpoint)
    _check_is_crossearth(tensors, checkpoint)
    warnings: list[str] = []
    card = _conversion_card(
        tensors,
        checkpoint,
        printable_text(name or output.name),
        preset,
        mmseg_config,
        class_names,
        bands,
        warnings,
    )
    config = CrossEarthConfig.from_dict(card.config, card.num_classes)
    if backbone is not None:
        report(0.2, f"reading backbone {Path(backbone).name}")
    tensors = _with_backbone(tensors, checkpoint, backbone, config, warnings)
    expected = expected_shapes(card)
    unexpected = _check_shapes(tensors, expected, checkpoint, card, preset is not None, warnings)

    report(0.5, "writing the package")
    target = getattr(torch, dtype)
    state = {k: tensors[k].to(target) for k in expected}
    record: dict[str, Any] = dict(card.provenance)
    record.update(
        {
            "converted_from": checkpoint.name,
            "checkpoint_sha256": file_sha256(checkpoint),
            "preset": preset.name if isinstance(preset, CheckpointPreset) else preset,
            "backbone_file": Path(backbone).name if backbone else None,
            "weights_dtype": dtype,
            "converter": "crossearth convert",
        }
    )
    record.update(provenance or {})
    card = replace(card, provenance=record)
    package = save_package(output, card, state, overwrite=overwrite, inputs=inputs)
    report(1.0, f"wrote {output}")
    return ConversionReport(package, unexpected, warnings)


def _conversion_card(
    tensors: dict[str, torch.Tensor],
    checkpoint: Path,
    package_name: str,
    preset: str | CheckpointPreset | None,
    mmseg_config: Path | None,
    class_names: list[str] | None,
    bands: tuple[str, ...] | None,
    warnings: list[str],
) -> ModelCard:
    """The package's card: the preset's, or one read from the mmseg config (whose class count
    the checkpoint's head gives)."""
    if preset is not None:
        chosen = preset if isinstance(preset, CheckpointPreset) else checkpoint_preset(preset)
        card = preset_card(chosen, package_name)
        if class_names is not None:
            raise ConfigError(
                "class names only apply with an mmseg config; presets name their classes",
                code=CONFIG_CLASSES_WITH_PRESET,
                option="classes",
            )
        if bands is not None:
            card = replace(card, input=replace(card.input, bands=tuple(bands)))
        return card
    assert mmseg_config is not None  # convert() asks for exactly one of the two
    card, config_warnings = card_from_config(
        mmseg_config,
        package_name,
        _checkpoint_classes(tensors, checkpoint),
        class_names,
        bands,
    )
    warnings += config_warnings
    return card


def _with_backbone(
    tensors: dict[str, torch.Tensor],
    checkpoint: Path,
    backbone: Path | None,
    config: CrossEarthConfig,
    warnings: list[str],
) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors with the frozen DINOv2 backbone: the separate backbone file's
    (which wins over any in the checkpoint), or the checkpoint's own."""
    frozen = [k for k in tensors if k.startswith(BACKBONE) and not k.startswith(REINS)]
    if backbone is None:
        if not frozen:
            problem = (
                f"{checkpoint.name} holds only the Rein tokens and the head (a training checkpoint)"
            )
            raise ModelError(
                f"{problem}; give the frozen DINOv2 weights (dinov2_converted.pth) as the backbone",
                code=MODEL_BACKBONE_MISSING,
                problem=problem,
                option="backbone",
                suggestion="dinov2_converted.pth",
            )
        return tensors
    base = convert_dinov2_backbone(read_checkpoint(Path(backbone), "backbone file"), config)
    if frozen:
        warnings.append(
            f"{checkpoint.name} already holds backbone weights; those of {Path(backbone).name} "
            "replace them"
        )
    return {**{k: v for k, v in tensors.items() if k not in base}, **base}


def _check_shapes(
    tensors: dict[str, torch.Tensor],
    expected: dict[str, tuple[int, ...]],
    checkpoint: Path,
    card: ModelCard,
    from_preset: bool,
    warnings: list[str],
) -> list[str]:
    """Checks the tensors against the architecture's shapes (the class count first, the most
    likely mismatch); returns the keys the architecture does not use."""
    unexpected = sorted(set(tensors) - set(expected))
    found = {k: tuple(v.shape) for k, v in tensors.items() if k in expected}
    cls_shape = found.get("decode_head.cls_embed.weight")
    if cls_shape and cls_shape != expected["decode_head.cls_embed.weight"]:
        raise CrossEarthError(
            f"{checkpoint.name} predicts {cls_shape[0] - 1} classes but the "
            f"{'preset' if from_preset else 'config'} describes {card.num_classes} "
            f"({', '.join(card.class_names)}); choose the matching preset or config"
        )
    check_state_dict_keys(expected, found, checkpoint.name)
    if unexpected:
        warnings.append(
            f"ignored {len(unexpected)} key(s) the architecture does not use: "
            + ", ".join(unexpected[:8])
            + (" ..." if len(unexpected) > 8 else "")
        )
    return unexpected
