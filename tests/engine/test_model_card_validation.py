"""model.json is checked against its schema: every bad field is one line naming the file and the
field path, and nothing non-finite, mistyped or out of range reaches the engine."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.crossearth.config import CrossEarthConfig
from engine.errors import CrossEarthError
from engine.models.model_card import card_from_dict, read_card

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "resources" / "models" / "crossearth-landsat-lc"


@pytest.fixture(scope="module")
def good() -> dict:
    return json.loads((BUNDLED / "model.json").read_text(encoding="utf-8"))


def write(folder: Path, data: dict) -> Path:
    """model.json as json.dumps writes it: NaN and Infinity as bare words, as json allows."""
    path = folder / "model.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def refusal(path: Path) -> str:
    with pytest.raises(CrossEarthError) as error:
        read_card(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")  # names the file first
    return message[len(f"{path}: ") :]


REMOVE = object()
NAN, INF = float("nan"), float("inf")
CONFIG = "architecture.config"


def changed(data: dict, field: str, value) -> dict:
    """A copy of `data` with the field at `field` ("input.mean[1]") set to `value` (a function
    of the old value, or REMOVE)."""
    data = copy.deepcopy(data)
    keys: list = []
    for part in field.replace("]", "").split("."):
        name, *indices = part.split("[")
        keys += [name, *map(int, indices)]
    parent = data
    for key in keys[:-1]:
        parent = parent[key]
    if value is REMOVE:
        del parent[keys[-1]]
    else:
        parent[keys[-1]] = value(parent[keys[-1]]) if callable(value) else value
    return data


def many(count: int) -> list:
    return [{"index": i, "name": f"c{i}", "color": [0, 0, 0]} for i in range(count)]


CASES = [
    # non-finite numbers (json.loads reads NaN, Infinity and -Infinity)
    ("input.mean[1]", NAN, "input.mean[1]: must be a finite number, got NaN"),
    ("input.std[4]", INF, "input.std[4]: must be a finite number, got Infinity"),
    ("input.value_range[0]", -INF, "input.value_range[0]: must be a finite number, got -Infinity"),
    ("gsd_m", NAN, "gsd_m: must be a finite number, got NaN"),
    # text where a number belongs, and the reverse
    ("input.mean[0]", "80.3", 'input.mean[0]: must be a number, got "80.3"'),
    ("tile.size", "64", 'tile.size: must be a whole number, got "64"'),
    ("input_scale", True, "input_scale: must be a whole number, got true"),
    ("classes[2].name", 7, "classes[2].name: must be text, got 7"),
    ("input.bands[0]", None, "input.bands[0]: must be text, got null"),
    # objects that are not objects
    ("provenance", "trained by me", 'provenance: must be an object, got "trained by me"'),
    ("metrics", [0.5], "metrics: must be an object, got a list"),
    (CONFIG, 5, "architecture.config: must be an object, got 5"),
    # ranges, orders and counts
    ("input.std[0]", 0, "input.std[0]: must be positive, got 0"),
    ("gsd_m", -30, "gsd_m: must be positive, got -30"),
    ("input.value_range", [255, 0], "input.value_range: the low end must lie below the high"),
    ("classes", lambda c: c[::-1], "classes[0].index: 4 is out of order (expected 0)"),
    ("classes[1].color[1]", 256, "classes[1].color[1]: colour values must lie in 0..255, got 256"),
    ("classes[1].color[0]", -1, "classes[1].color[0]: colour values must lie in 0..255, got -1"),
    ("classes[1].color[0]", 1.5, "classes[1].color[0]: must be a whole number, got 1.5"),
    ("classes[1].color", [1, 2], "classes[1].color: must have at least 3 item(s), got 2"),
    ("classes", many(65536), "classes: must have at most 65535 item(s), got 65536"),
    ("input.mean", [80.0], "input.mean: must have 5 values (one per input band), got 1"),
    ("tile.stride", 0, "tile.stride: must be in 1..tile.size (64), got 0"),
    ("size_multiple", 0, "size_multiple: must be a positive whole number, got 0"),
    # the CrossEarth network's own sizes
    (f"{CONFIG}.backbone.num_heads", 0, f"{CONFIG}.backbone.num_heads: must be a positive whole"),
    (f"{CONFIG}.backbone.patch_size", -16, f"{CONFIG}.backbone.patch_size: must be a positive"),
    (f"{CONFIG}.head.decoder_heads", "8", f"{CONFIG}.head.decoder_heads: must be a positive"),
    (f"{CONFIG}.backbone.mlp_ratio", NAN, f"{CONFIG}.backbone.mlp_ratio: must be a finite"),
    # a missing field, and text no character can be written from
    ("input.std", REMOVE, "missing field 'input.std'"),
    ("classes[0].name", "dev\udce9", "classes[0].name: holds an escaped lone surrogate"),
]


@pytest.mark.parametrize(("field", "value", "message"), CASES)
def test_a_bad_field_is_named_with_its_path(tmp_path, good, field, value, message):
    path = write(tmp_path, changed(good, field, value))
    assert refusal(path).startswith(message)


def test_the_bundled_card_reads_and_round_trips(tmp_path, good):
    card = read_card(BUNDLED / "model.json")
    again = card_from_dict(json.loads(json.dumps(card.to_json_dict())))
    assert again == card
    assert card.gsd_m == 28.5 and card.input.bands[-1] == "swir1"


def test_non_utf8_bytes_and_bad_json_are_one_line(tmp_path, good):
    path = write(tmp_path, good)
    path.write_bytes(path.read_bytes().replace(b'"developed"', b'"d\xe9velopp\xe9"'))
    assert refusal(path).startswith("not UTF-8 text (byte 0xe9 at offset")
    path.write_text("[" * 100_000, encoding="utf-8")
    with pytest.raises(CrossEarthError, match="nested too deeply|not valid JSON"):
        read_card(path)


def test_metrics_may_hold_nan(tmp_path, good):
    # A class absent from the validation blocks has no IoU: training records NaN there.
    path = write(tmp_path, changed(good, "metrics", {"iou": {"water": NAN}}))
    card = read_card(path)
    assert card.metrics["iou"]["water"] != card.metrics["iou"]["water"]


def test_a_bad_config_never_divides_by_zero():
    for section, field in [
        ("backbone", "num_heads"),
        ("backbone", "patch_size"),
        ("head", "norm_groups"),
    ]:
        with pytest.raises(CrossEarthError, match=f"{section}.{field}: must be a positive whole"):
            CrossEarthConfig.from_dict({section: {field: 0}}, 3)


def test_info_on_a_broken_card_exits_2_with_one_line(tmp_path, capsys, good):
    package = tmp_path / "pkg"
    package.mkdir()
    write(package, changed(good, "input.mean[1]", NAN))
    (package / "weights.safetensors").write_bytes((BUNDLED / "weights.safetensors").read_bytes())
    before = sorted(p.name for p in package.iterdir())
    code = main(["info", str(package)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    card = package / "model.json"
    assert err == f"crossearth: {card}: input.mean[1]: must be a finite number, got NaN\n"
    assert sorted(p.name for p in package.iterdir()) == before
