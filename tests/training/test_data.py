"""Bad training input is refused before training; the spatial split keeps validation apart."""

import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from engine.crossearth.model import CrossEarth
from engine.crossearth.presets import architecture_config, make_card
from engine.errors import CrossEarthError
from engine.models.model_card import ClassInfo
from engine.models.packages import save_package
from training.config import IGNORE
from training.data import TRAIN, VAL, WindowSampler, load_training_data
from training.run_setup import _input_spec_from_scratch
from training.trainer import train

from .conftest import IMAGE, LABELS, recipe


def load(config):
    return load_training_data(config, _input_spec_from_scratch(config), None)


def write_like(path, data, source, **changes):
    with rasterio.open(source) as src:
        profile = dict(src.profile, **changes)
    profile.update(count=data.shape[0], dtype=data.dtype.name)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def test_label_values_outside_the_class_list(tmp_path, aligned_labels):
    with pytest.raises(CrossEarthError, match=r"value\(s\) 6, 7 outside the class list"):
        load(
            recipe(
                tmp_path,
                images=[{"image": IMAGE, "labels": aligned_labels}],
                label_map={1: "a", 2: "b", 3: "b", 4: "c", 5: "d"},
            )
        )


def test_labels_that_do_not_overlap_the_image(tmp_path, aligned_labels):
    with rasterio.open(aligned_labels) as src:
        codes = src.read()
        far = src.transform * Affine.translation(0, 0)
        far = Affine(far.a, far.b, far.c + 500_000, far.d, far.e, far.f)
    moved = write_like(tmp_path / "moved.tif", codes, aligned_labels, transform=far)
    with pytest.raises(CrossEarthError, match="do not overlap"):
        load(recipe(tmp_path, images=[{"image": IMAGE, "labels": moved}]))


def test_no_labelled_pixels_in_the_training_area(tmp_path):
    area = tmp_path / "elsewhere.geojson"
    area.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32119"}},
                "features": [
                    {
                        "type": "Feature",
                        "properties": {},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]],
                        },
                    }
                ],
            }
        )
    )
    with pytest.raises(CrossEarthError, match="elsewhere.geojson does not overlap the image"):
        load(recipe(tmp_path, images=[{"image": IMAGE, "labels": LABELS, "mask": area}]))
    ignored = dict.fromkeys(range(1, 8), "ignore")
    with pytest.raises(CrossEarthError, match="no labelled pixels in the training area"):
        load(recipe(tmp_path, label_map={**ignored, 0: "ignore"}, classes=["x"]))


def test_base_model_with_incompatible_bands(tmp_path):
    config = architecture_config("tiny", 2)
    card = make_card(
        "rgb-model", config, (ClassInfo(0, "a", (0, 0, 0)), ClassInfo(1, "b", (9, 9, 9)))
    )
    base = save_package(tmp_path / "rgb", card, CrossEarth(config).state_dict())
    with rasterio.open(IMAGE) as src:
        nir = src.read([4])
    single = write_like(tmp_path / "nir.tif", nir, IMAGE)
    settings = {"architecture": None, "base": str(base.path)}
    with pytest.raises(
        CrossEarthError, match=r"has 1 band\(s\) but the model needs 3 \(red, green, blue\)"
    ):
        train(
            recipe(tmp_path, images=[{"image": single, "labels": LABELS}], **settings),
            progress="none",
        )
    assert not (tmp_path / "model.run").exists()


def test_split_keeps_validation_labels_out_of_training(tmp_path):
    data = load(recipe(tmp_path, val_fraction=0.25))
    train_pixels = data.class_pixels(TRAIN).sum()
    val_pixels = data.class_pixels(VAL).sum()
    assert 0.22 < val_pixels / (train_pixels + val_pixels) < 0.32
    image = data.images[0]
    height, width = image.grid.height, image.grid.width
    _, _, visible = data.read_training_window(0, 0, 0, max(height, width))
    everything = image.read_labels(0, 0, max(height, width), max(height, width))
    for block in data.blocks:
        rows = slice(block.row, block.row + block.size)
        cols = slice(block.col, block.col + block.size)
        if block.split == VAL:
            assert (visible[rows, cols] == IGNORE).all()
        else:
            np.testing.assert_array_equal(visible[rows, cols], everything[rows, cols])
    again = load(recipe(tmp_path, val_fraction=0.25))
    assert [b.split for b in again.blocks] == [b.split for b in data.blocks]  # seeded

    path = tmp_path / "split.geojson"
    data.save_split(path)
    features = json.loads(path.read_text())["features"]
    assert len(features) == len(data.blocks)
    assert sum(f["properties"]["split"] == VAL for f in features) == len(data.blocks_of(VAL))


def test_class_balanced_sampling_favours_rare_classes(tmp_path):
    data = load(recipe(tmp_path))
    water = data.classes.index(next(c for c in data.classes if c.name == "water"))

    def water_share(balanced):
        sampler = WindowSampler(data, 16, (1.0, 1.0), balanced)
        rng = np.random.default_rng(0)
        hits = 0
        for _ in range(300):
            image, row, col, size = sampler.sample(rng)
            labels = data.images[image].read_labels(row + size // 2, col + size // 2, 1, 1)
            hits += int(labels[0, 0] == water)
        return hits / 300

    assert water_share(False) < 0.05  # water is 1.6 % of the labels
    assert water_share(True) > 0.12  # one class in five is water
