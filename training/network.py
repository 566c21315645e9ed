"""The network being trained: a CrossEarth model from a base package or an architecture preset,
its class head fitted to the training classes, and the parameters that train."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch
from torch import nn

from engine.crossearth.config import CrossEarthConfig
from engine.crossearth.model import CrossEarth
from engine.crossearth.presets import architecture_config
from engine.errors import CrossEarthError
from engine.models.loading import build_package_model
from engine.models.packages import ModelPackage
from training.config import ClassSpec
from training.mtp import ReconstructionHeads

log = logging.getLogger(__name__)

# Parameters without weight decay, as the official optimizer configuration lists them.
NO_DECAY_KEYS = (
    "norm",
    "level_embed",
    "learnable_tokens",
    "reins.scale",
    "pos_embed",
    "cls_token",
    "mask_token",
)


@dataclass
class NetworkSetup:
    model: CrossEarth
    head_note: str  # how the class head was made, for the card's provenance
    warnings: list[str]


def _copy_class_rows(target: nn.Linear, source: nn.Linear, rows: dict[int, int]) -> None:
    with torch.no_grad():
        for new, old in rows.items():
            target.weight[new] = source.weight[old]
            target.bias[new] = source.bias[old]
        target.weight[-1] = source.weight[-1]  # "no object"
        target.bias[-1] = source.bias[-1]


def from_package(
    package: ModelPackage,
    classes: list[ClassSpec],
    class_map: dict[str, str] | None,
    new_head: bool,
) -> NetworkSetup:
    """The base model with its head adapted: kept when the classes are the base's; otherwise a
    class layer whose rows are copied for classes the base knows (by name or `class_map`) and
    newly initialised for the others; `new_head` re-initialises the whole decode head."""
    base = build_package_model(package, "cpu")
    if not isinstance(base, CrossEarth):
        raise CrossEarthError(
            f"{package.card.name}: architecture '{package.card.architecture}' cannot be "
            "fine-tuned; training needs a CrossEarth model"
        )
    base_names = package.card.class_names
    names = [c.name for c in classes]
    warnings: list[str] = []
    if names == base_names and not new_head:
        return NetworkSetup(base, f"kept the head of {package.card.name}", warnings)
    config = CrossEarthConfig.from_dict(package.card.config, len(base_names))
    model = CrossEarth(dataclasses.replace(config, num_classes=len(classes)))
    state = base.state_dict()
    skip = ("decode_head.",) if new_head else ("decode_head.cls_embed.",)
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(skip)}, strict=False)
    if new_head:
        return NetworkSetup(
            model, f"new decode head on the backbone of {package.card.name}", warnings
        )
    mapping = dict(class_map or {})
    rows = {}
    for index, name in enumerate(names):
        source = mapping.get(name, name)
        if source in base_names:
            rows[index] = base_names.index(source)
        elif name in mapping:
            raise CrossEarthError(
                f"class_map sends '{name}' to '{source}', which {package.card.name} does not have"
            )
    _copy_class_rows(model.decode_head.cls_embed, base.decode_head.cls_embed, rows)
    mapped = ", ".join(f"{names[n]}<-{base_names[o]}" for n, o in rows.items()) or "none"
    fresh = [names[i] for i in range(len(names)) if i not in rows]
    note = f"class layer of {package.card.name} mapped ({mapped})" + (
        f"; new rows for {', '.join(fresh)}" if fresh else ""
    )
    return NetworkSetup(model, note, warnings)


def from_architecture(
    name: str, num_classes: int, in_chans: int, img_size: int, patch_size: int | None = None
) -> NetworkSetup:
    """A new network; its position grid is made for the training window, so training and
    inference at that tile size see the same positions."""
    config = architecture_config(name, num_classes)
    backbone = dataclasses.replace(
        config.backbone,
        in_chans=in_chans,
        img_size=img_size,
        patch_size=patch_size or config.backbone.patch_size,
    )
    config = dataclasses.replace(config, backbone=backbone)
    return NetworkSetup(CrossEarth(config), f"architecture '{name}' initialised at random", [])


def set_trainable(model: CrossEarth, mode: str, mtp: bool) -> list[str]:
    """reins: Reins + head train, the backbone is frozen (the paper's setting); full: all.
    The final backbone norm is never used by the network and stays frozen; the mask token
    trains only with masked-image reconstruction."""
    trainable = []
    for name, parameter in model.named_parameters():
        if name.startswith("backbone.norm.") or (name == "backbone.mask_token" and not mtp):
            flag = False
        elif mode == "reins":
            flag = name.startswith(("backbone.reins.", "decode_head.")) or (
                mtp and name == "backbone.mask_token"
            )
        else:
            flag = True
        parameter.requires_grad_(flag)
        if flag:
            trainable.append(name)
    return trainable


def parameter_groups(modules: dict[str, nn.Module], weight_decay: float) -> list[dict[str, object]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for prefix, module in modules.items():
        for name, parameter in module.named_parameters():
            if not parameter.requires_grad:
                continue
            full = f"{prefix}{name}"
            (no_decay if any(key in full for key in NO_DECAY_KEYS) else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class TrainingNetwork(nn.Module):
    """Model + optional reconstruction heads in one module (so DDP sees one forward)."""

    def __init__(self, model: CrossEarth, reconstruction: ReconstructionHeads | None) -> None:
        super().__init__()
        self.model = model
        self.reconstruction = reconstruction

    def forward(
        self, x: torch.Tensor, masks: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor] | None]:
        feats, queries = self.model.backbone(x, masks)
        all_cls, all_masks = self.model.decode_head(feats, queries)
        rebuilt = None
        if self.reconstruction is not None:
            rebuilt = self.reconstruction(feats, tuple(x.shape[-2:]))
        return all_cls, all_masks, rebuilt
