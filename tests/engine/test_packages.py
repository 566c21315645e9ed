"""Model packages: save, find, load through the architecture registry, and broken packages."""

import json
import tracemalloc

import numpy as np
import pytest
import rasterio
import torch

from engine.errors import CrossEarthError
from engine.models.architectures import register_architecture
from engine.models.loading import load_model
from engine.models.packages import find_package, list_packages, open_package, save_package
from engine.run.pipeline import SegmentOptions, segment

from .conftest import LANDSAT, PixelLinear, make_card, seeded


@pytest.fixture
def package(tmp_path, pixel_architecture):
    card = make_card(num_classes=4, bands=("blue", "green", "red"))
    module = seeded(PixelLinear(3, 4))
    return save_package(tmp_path / "pkg", card, module.state_dict()), module


def test_saved_package_loads_with_same_weights(package):
    pkg, module = package
    loaded = load_model(pkg.path)
    assert not loaded.training
    for name, tensor in module.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    assert all(not p.requires_grad for p in loaded.parameters())


def test_float16_weights_are_loaded_as_float32(tmp_path, pixel_architecture):
    card = make_card(num_classes=4, bands=("blue", "green", "red"))
    module = seeded(PixelLinear(3, 4))
    half = {k: v.half() for k, v in module.state_dict().items()}
    pkg = save_package(tmp_path / "half", card, half)
    loaded = load_model(pkg.path)
    assert loaded.conv.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.conv.weight, module.conv.weight, atol=2e-3, rtol=2e-3)


def test_loading_builds_on_meta_so_weights_exist_once(tmp_path, pixel_architecture):
    # a big 1x1 conv (64 MiB of weights): a second copy would show in the peak
    big_in, big_out = 4096, 4096
    card = make_card(num_classes=big_out, bands=tuple(f"b{i}" for i in range(big_in)))
    register_architecture(
        "test-pixel-linear",
        lambda config, c: PixelLinear(len(c.input.bands), c.num_classes),
        replace=True,
    )
    module = PixelLinear(big_in, big_out)
    pkg = save_package(tmp_path / "big", card, module.state_dict())
    del module
    size = big_in * big_out * 4
    tracemalloc.start()
    try:
        load_model(pkg.path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # torch's allocator is not traced by tracemalloc: measure process memory instead
    assert peak < size  # nothing numpy/python-side holds a copy
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model = load_model(pkg.path)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert model.conv.weight.shape == (big_out, big_in, 1, 1)
    assert after - before < 1.6 * size, (after - before) / size


def test_segment_from_package_path(tmp_path, package):
    pkg, module = package
    out = tmp_path / "out.tif"
    segment(LANDSAT, out, str(pkg.path), SegmentOptions(bands=[1, 2, 3]))
    with rasterio.open(out) as dst:
        assert dst.read(1).max() < 4


def test_find_by_name_in_user_folder(tmp_path, package, monkeypatch):
    pkg, _ = package
    monkeypatch.setenv("CROSSEARTH_MODELS_DIR", str(tmp_path))
    assert find_package("pkg").path == pkg.path
    assert find_package("test-model").path == pkg.path
    packages, problems = list_packages()
    assert [p.card.name for p in packages if p.source == "user"] == ["test-model"]
    assert problems == []
    with pytest.raises(CrossEarthError, match="'nope' not found"):
        find_package("nope")


def test_broken_packages_give_clear_errors(tmp_path, package):
    pkg, _ = package
    # corrupt weights
    weights = pkg.path / "weights.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(CrossEarthError, match="not a readable safetensors file"):
        load_model(pkg.path)
    weights.write_bytes(good)
    # missing weights
    weights.rename(tmp_path / "aside")
    with pytest.raises(CrossEarthError, match="has no weights.safetensors"):
        open_package(pkg.path)
    (tmp_path / "aside").rename(weights)
    # card that does not validate
    card_path = pkg.path / "model.json"
    data = json.loads(card_path.read_text())
    for mutate, message in [
        (lambda d: d.pop("classes"), "missing field 'classes'"),
        (lambda d: d["tile"].update(stride=0), "tile.stride"),
        (lambda d: d["classes"][0].update(color=[300, 0, 0]), "0..255"),
        (lambda d: d["input"].update(mean=[1.0]), "input.mean: must have 3 values"),
        (lambda d: d["architecture"].update(name="unknown-net"), "does not know"),
    ]:
        broken = json.loads(json.dumps(data))
        mutate(broken)
        card_path.write_text(json.dumps(broken))
        with pytest.raises(CrossEarthError, match=message):
            load_model(pkg.path)
    card_path.write_text("{not json")
    with pytest.raises(CrossEarthError, match="not valid JSON"):
        open_package(pkg.path)


def test_weights_not_matching_card_name_the_keys(tmp_path, pixel_architecture):
    card = make_card(num_classes=5, bands=("blue", "green", "red"))
    state = seeded(PixelLinear(3, 4)).state_dict()
    state["extra.weight"] = torch.zeros(2)
    pkg = save_package(tmp_path / "bad", card, state)
    with pytest.raises(CrossEarthError) as info:
        load_model(pkg.path)
    text = str(info.value)
    assert "unexpected keys: extra.weight" in text
    assert "conv.weight (file (4, 3, 1, 1), model (5, 3, 1, 1))" in text


def test_save_package_is_atomic_and_refuses_overwrite(tmp_path, package):
    pkg, module = package
    with pytest.raises(CrossEarthError, match="already exists"):
        save_package(pkg.path, pkg.card, module.state_dict())
    bad_state = {"conv.weight": np.zeros(3)}  # not a tensor: fails while writing
    with pytest.raises(AttributeError):
        save_package(tmp_path / "new", pkg.card, bad_state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]
