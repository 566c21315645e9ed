"""Class colours in a recipe: three 0..255 integers, or one clear line before any data is read."""

from __future__ import annotations

import pytest

from engine.errors import CrossEarthError

from .conftest import recipe


def test_class_colours_are_read_as_rgb_tuples(tmp_path) -> None:
    config = recipe(
        tmp_path, classes=["water", {"name": "forest", "color": ["0", 128.0, 0]}, "urban"]
    )
    assert [(c.name, c.color) for c in config.classes] == [
        ("water", None),
        ("forest", (0, 128, 0)),
        ("urban", None),
    ]


@pytest.mark.parametrize("color", [[255, 0], [1, 2, 3, 4], [0, 300, 0], "red", [0, "x", 0]])
def test_a_bad_class_colour_is_refused_with_the_class_and_the_fix(tmp_path, color) -> None:
    with pytest.raises(CrossEarthError, match=r"class 'forest': color .* must be three integers"):
        recipe(tmp_path, classes=[{"name": "forest", "color": color}])


def test_a_fine_tuned_model_keeps_the_colours_of_its_base_classes(tmp_path) -> None:
    """Classes named by the label map (no colours in the recipe) take the base's colour of the
    same name; a new class gets one of the default palette."""
    from training.config import ClassSpec
    from training.data import _default_colors, _resolve_classes

    base = [ClassSpec("forest", (30, 115, 50)), ClassSpec("water", (40, 105, 215))]
    config = recipe(tmp_path, label_map={1: "water", 2: "forest", 3: "urban", 9: "ignore"})
    config.classes = None
    classes, table = _resolve_classes(config, [1, 2, 3, 9], base)
    assert [(c.name, c.color) for c in classes] == [
        ("water", (40, 105, 215)),
        ("forest", (30, 115, 50)),
        ("urban", _default_colors(3)[2]),
    ]
    assert table[1] == 0 and table[2] == 1 and table[3] == 2
