"""Full-size presets, built on the meta device, have exactly the official parameter manifests."""

import json

import pytest
import torch

from engine.crossearth.config import CrossEarthConfig
from engine.crossearth.model import CrossEarth
from engine.crossearth.presets import CHECKPOINTS, checkpoint_preset, preset_card

from .conftest import OFFICIAL


def manifest(name):
    path = OFFICIAL / name
    if not path.is_file():
        pytest.fail(f"{path} is missing; restore tests/fixtures/official (see its README)")
    data = json.loads(path.read_text())
    entries = next(v for v in data.values() if isinstance(v, list) and v and "shape" in v[0])
    return {e["name"]: tuple(e["shape"]) for e in entries}, data


def meta_model(preset):
    card = preset_card(checkpoint_preset(preset))
    with torch.device("meta"):
        return CrossEarth(CrossEarthConfig.from_dict(card.config, card.num_classes))


@pytest.mark.parametrize(
    ("preset", "manifest_file"),
    [
        ("potsdam-r-source", "crossearth_vitl512_keys.json"),
        ("loveda-1024", "crossearth_vitl1024_loveda7_keys.json"),
    ],
)
def test_preset_matches_official_manifest(preset, manifest_file):
    expected, data = manifest(manifest_file)
    model = meta_model(preset)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    wrong = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert wrong == {}
    assert len(ours) == data["counts"]["total"]["keys"]
    assert sum(v.numel() for v in model.state_dict().values()) == data["counts"]["total"]["numel"]
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())


def test_every_checkpoint_preset_builds_with_its_class_count():
    for name, preset in CHECKPOINTS.items():
        model = meta_model(name)
        classes = model.decode_head.cls_embed.weight.shape[0] - 1
        assert classes == len(preset.classes.names), name
        grid = model.backbone.pos_embed.shape[1] - 1
        assert grid == (preset.tile[0] // 16) ** 2, name


def test_full_size_forward_shapes_on_meta():
    model = meta_model("potsdam-r-source").eval()
    with torch.no_grad():
        feats, queries = model.backbone(torch.empty(2, 3, 512, 512, device="meta"))
        assert [tuple(f.shape) for f in feats] == [
            (2, 1024, 128, 128),
            (2, 1024, 64, 64),
            (2, 1024, 32, 32),
            (2, 1024, 16, 16),
        ]
        assert tuple(queries.shape) == (100, 256)
        cls, masks = model.decode_head(feats, queries)
    assert len(cls) == len(masks) == 10  # before layer 0, then after each of 9 layers
    assert tuple(cls[-1].shape) == (2, 100, 7)
    assert tuple(masks[-1].shape) == (2, 100, 128, 128)
