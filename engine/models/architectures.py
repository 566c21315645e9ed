"""Registry of model architectures: a model card names one, the registry builds it.

A builder takes the card's architecture config and the card itself and returns an nn.Module whose
forward maps normalized images [B, C, H, W] to non-negative class scores [B, K, H, W].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from engine.errors import CrossEarthError

if TYPE_CHECKING:
    from torch import nn


class Card(Protocol):
    """What the registry reads of a model card (engine.models.model_card.ModelCard); the
    registry is below the card, which checks its config through it."""

    @property
    def name(self) -> str:
        """The card's model name."""
        ...

    @property
    def architecture(self) -> str:
        """The card's architecture, a name of this registry."""
        ...

    @property
    def config(self) -> dict[str, Any]:
        """The card's architecture config, as the builder reads it."""
        ...


# A builder takes the card's config and the card (a ModelCard) and returns the network.
Builder = Callable[[dict[str, Any], Any], "nn.Module"]
# Checks a card's architecture config (and its number of classes) without building anything;
# raises ConfigFieldError naming the field, so a broken card shows in `crossearth models`.
ConfigCheck = Callable[[dict[str, Any], int], None]

_BUILDERS: dict[str, Builder] = {}
_CHECKS: dict[str, ConfigCheck] = {}
# Modules that register built-in architectures when imported; imported lazily so that the
# registry itself stays cheap to import.
_BUILTIN_MODULES: tuple[str, ...] = ("engine.crossearth",)


def register_architecture(
    name: str,
    builder: Builder,
    *,
    check_config: ConfigCheck | None = None,
    replace: bool = False,
) -> None:
    """Makes `name` buildable from cards, its config checked with the card by `check_config`;
    a second registration of a name needs `replace`."""
    if name in _BUILDERS and not replace:
        raise ValueError(f"architecture {name!r} is already registered")
    _BUILDERS[name] = builder
    _CHECKS.pop(name, None)
    if check_config is not None:
        _CHECKS[name] = check_config


def unregister_architecture(name: str) -> None:
    """Forgets `name` (a no-op for an unknown one), so tests and plugins can clean up."""
    _BUILDERS.pop(name, None)
    _CHECKS.pop(name, None)


def _load_builtins() -> None:
    import importlib

    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def build_model(card: Card) -> nn.Module:
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


def check_config(name: str, config: dict[str, Any], num_classes: int) -> None:
    """Runs the architecture's own check of a card's config; an architecture without one, or
    one this engine does not know (building it says so), passes."""
    _load_builtins()
    check = _CHECKS.get(name)
    if check is not None:
        check(config, num_classes)
