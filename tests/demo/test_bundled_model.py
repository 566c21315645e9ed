"""The bundled models: valid packages with honest cards and the quality they state. The
default, crossearth-landsat-lc-fast, is crossearth-landsat-lc fine-tuned for a geometry 7x
cheaper per output pixel; it ships with its ONNX graph for the light engine."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from safetensors import safe_open

from engine.models.packages import bundled_models_dir, default_model_name, find_package
from engine.run.pipeline import SegmentOptions, segment
from training.metrics import metrics, update_confusion

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"
LABELS = REPO / "resources" / "samples" / "raleigh_landcover_sample.tif"
CLASSES = ["developed", "herbaceous / agriculture", "shrubland", "forest", "water"]


FAST = "crossearth-landsat-lc-fast"
FIRST = "crossearth-landsat-lc"
# name -> (input scale, tile, stride)
GEOMETRY = {FAST: (2, 128, 112), FIRST: (4, 64, 43)}


@pytest.fixture(scope="module", params=[FAST, FIRST])
def package(request):
    assert default_model_name() == FAST
    return find_package(None) if request.param == FAST else find_package(FIRST)


def test_card_states_classes_bands_gsd_license_provenance_and_metrics(package):
    card = package.card
    assert package.path == bundled_models_dir() / card.name
    assert card.architecture == "crossearth" and card.class_names == CLASSES
    assert len({c.color for c in card.classes}) == 5
    assert card.input.bands == ("blue", "green", "red", "nir", "swir1")
    assert (card.input_scale, card.tile_size, card.tile_stride) == GEOMETRY[card.name]
    assert card.gsd_m == 28.5
    assert "CC-BY-SA-3.0" in card.license
    provenance = card.provenance
    assert provenance["command"].startswith("crossearth train --config training/recipes/")
    assert provenance["data"][0]["image"]["file"] == "landsat7_2000.tif"
    assert len(provenance["data"][0]["image"]["sha256"]) == 64
    assert provenance["split"]["val_blocks"] == 9  # the same split for both models
    validation = card.metrics["validation"]
    assert set(validation["iou"]) == set(CLASSES)
    assert 0.3 < validation["mIoU"] <= 1.0
    assert card.metrics["test"]["raleigh_landsat7_sample.tif"]["pixels"] == 27521
    # Recorded as the recipe file wrote them, without the training machine's device or threads.
    recipe = provenance["recipe"]
    assert recipe["images"][0]["image"] == "../../resources/data/raleigh/landsat7_2000.tif"
    assert recipe["output"] == f"../../resources/models/{card.name}"
    assert "device" not in recipe and "threads" not in recipe
    if card.name == FIRST:
        # The run predates timed checkpoints: the time is the measured rate times the steps.
        assert provenance["seconds"] == 5440 and "3.4 s per step" in provenance["seconds_source"]
    else:
        assert provenance["base"]["model"] == FIRST and provenance["seconds"] > 0
        # The map is drawn in the colours of the model it was fine-tuned from.
        assert card.classes == find_package(FIRST).card.classes
        assert card.onnx is not None and card.onnx["max_abs_diff"] <= 1e-4


# A path as a word of its own: /folder/..., C:\..., C:/..., ~/...
_ABSOLUTE = re.compile(r"(?:^|[\s=\"'(])(?:/[^\s/]+|[A-Za-z]:[\\/]|~/)")


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_no_model_card_in_the_repository_names_a_folder_of_a_machine():
    cards = [
        path
        for folder in ("resources", "tests/fixtures")
        for path in sorted((REPO / folder).rglob("model.json"))
    ]
    assert REPO / f"resources/models/{FAST}/model.json" in cards
    for card in cards:
        card_data = json.loads(card.read_text(encoding="utf-8"))
        absolute = [text for text in _strings(card_data) if _ABSOLUTE.search(text)]
        assert not absolute, f"{card.relative_to(REPO)} holds absolute paths: {absolute}"
    assert _ABSOLUTE.search("/work/main/x.tif") and _ABSOLUTE.search("--image=C:\\data\\x.tif")
    assert not _ABSOLUTE.search("herbaceous / agriculture, ViT-Ti/16, ../../resources/x.tif")


def test_weights_are_float16_and_under_50_mb(package):
    assert package.weights_path.stat().st_size < 50 * 2**20
    with safe_open(str(package.weights_path), framework="pt") as handle:
        dtypes = {handle.get_slice(key).get_dtype() for key in handle.keys()}  # noqa: SIM118
    assert dtypes == {"F16"}


def test_sample_miou_is_what_the_card_says(package, tmp_path):
    out = tmp_path / "classes.tif"
    segment(SAMPLE, out, package, SegmentOptions(device="cpu"))
    with rasterio.open(out) as predicted_file, rasterio.open(LABELS) as labels_file:
        predicted = predicted_file.read(1, masked=True)
        reference = labels_file.read(1)
    reference = np.where(np.ma.getmaskarray(predicted), 255, reference)
    confusion = np.zeros((5, 5), np.int64)
    update_confusion(confusion, reference, np.ma.getdata(predicted), 255)
    measured = metrics(confusion, CLASSES)
    stated = package.card.metrics["test"]["raleigh_landsat7_sample.tif"]
    print(f"sample mIoU {measured['mIoU']:.4f} (card: {stated['mIoU']:.4f})")
    assert measured["pixels"] == 27521
    assert measured["mIoU"] >= stated["mIoU"] - 0.02
    assert measured["mIoU"] > 0.3
