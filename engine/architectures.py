"""Registry of model architectures: a model card names one, the registry builds it.

A builder takes the card's architecture config and the card itself and returns an nn.Module whose
forward maps normalized images [B, C, H, W] to non-negative class scores [B, K, H, W].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import CrossEarthError

if TYPE_CHECKING:
    from torch import nn

    from .model_card import ModelCard

Builder = Callable[[dict[str, Any], "ModelCard"], "nn.Module"]

_BUILDERS: dict[str, Builder] = {}
# Modules that register built-in architectures when imported; imported lazily so that the
# registry itself stays cheap to import.
_BUILTIN_MODULES: tuple[str, ...] = ("engine.crossearth",)


def register_architecture(name: str, builder: Builder, *, replace: bool = False) -> None:
    """Makes `name` buildable from cards; a second registration of a name needs `replace`."""
    if name in _BUILDERS and not replace:
        raise ValueError(f"architecture {name!r} is already registered")
    _BUILDERS[name] = builder


def unregister_architecture(name: str) -> None:
    """Forgets `name` (a no-op for an unknown one), so tests and plugins can clean up."""
    _BUILDERS.pop(name, None)


def _load_builtins() -> None:
    import importlib

    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def build_model(card: ModelCard) -> nn.Module:
    """The card's network, built by its architecture's builder (weights not loaded); an unknown
    architecture is a CrossEarthError that names the known ones."""
    _load_builtins()
    try:
        builder = _BUILDERS[card.architecture]
    except KeyError:
        known = ", ".join(sorted(_BUILDERS)) or "none"
        raise CrossEarthError(
            f"model '{card.name}' uses architecture '{card.architecture}', which this engine "
            f"does not know (known: {known}); update crossearth-qgis"
        ) from None
    return builder(card.config, card)
