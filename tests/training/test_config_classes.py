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
