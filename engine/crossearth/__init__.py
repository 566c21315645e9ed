"""The CrossEarth architecture (DINOv2 + LoRA-Reins + Mask2Former) registered with the engine.

Importing this package is cheap (no torch): the network modules load when a model is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.crossearth.config import CrossEarthConfig
from engine.errors import CrossEarthError
from engine.models.architectures import register_architecture

if TYPE_CHECKING:
    from engine.crossearth.model import CrossEarth
    from engine.models.model_card import ModelCard

ARCHITECTURE = "crossearth"


def build(config: dict[str, Any], card: ModelCard) -> CrossEarth:
    """The CrossEarth network for a card's `config`, after checking that the card's bands and
    sizes fit the backbone."""
    from engine.crossearth.model import CrossEarth

    parsed = CrossEarthConfig.from_dict(config, card.num_classes)
    patch = parsed.backbone.patch_size
    if (card.size_multiple * card.input_scale) % patch:
        raise CrossEarthError(
            f"{card.name}: size_multiple {card.size_multiple} x input_scale {card.input_scale} "
            f"must be a multiple of the patch size {patch}"
        )
    if len(card.input.bands) != parsed.backbone.in_chans:
        raise CrossEarthError(
            f"{card.name}: the card lists {len(card.input.bands)} input bands but the backbone "
            f"takes {parsed.backbone.in_chans}"
        )
    return CrossEarth(parsed)


def check_config(config: dict[str, Any], num_classes: int) -> None:
    """The card's CrossEarth config parses into sizes that build a network."""
    CrossEarthConfig.from_dict(config, num_classes)


register_architecture(ARCHITECTURE, build, check_config=check_config, replace=True)
