"""What the analyst set for one layer with one model (bands, processing resolution, runtime),
kept while the dock switches between layers and models: a new pair starts from the defaults,
a pair seen before gets back what was typed for it."""

from __future__ import annotations

from dataclasses import dataclass

ChoiceKey = tuple[str, str]  # (layer id, model package path)


@dataclass(frozen=True)
class LayerChoices:
    bands: str = ""  # empty: matched by band names
    gsd: str = "auto"  # widgets.py GSD_AUTO, GSD_NATIVE or GSD_METRES
    gsd_m: float = 1.0  # with GSD_METRES
    runtime: str = "auto"


class ChoiceMemory:
    """The choices of each (layer, model) pair the dock has shown, this session."""

    def __init__(self) -> None:
        self._kept: dict[ChoiceKey, LayerChoices] = {}

    def swap(
        self, leaving: ChoiceKey | None, current: LayerChoices, entering: ChoiceKey
    ) -> LayerChoices:
        """Keeps `current` for the pair being left; returns the entering pair's choices."""
        if leaving is not None:
            self._kept[leaving] = current
        return self._kept.get(entering, LayerChoices())
