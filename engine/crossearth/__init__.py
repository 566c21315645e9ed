"""The CrossEarth architecture (DINOv2 + LoRA-Reins + Mask2Former) registered with the engine.

Importing this package is cheap (no torch): the network modules load when a model is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..architectures import register_architecture
from ..errors import CrossEarthError
from .config import CrossEarthConfig

if TYPE_CHECKING:
    from ..model_card import ModelCard
    from .model import CrossEarth

ARCHITECTURE = "crossearth"


def build(config: dict[str, Any], card: ModelCard) -> CrossEarth:
    """The CrossEarth network for a card's `config`, after checking that the card's bands and
    sizes fit the backbone."""
    from .model import CrossEarth

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


register_architecture(ARCHITECTURE, build, replace=True)
