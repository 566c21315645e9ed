"""The card write_package makes carries no machine: paths relative to the recipe (or to the
package without one), a path elsewhere as its file name, no device or thread count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from engine.models.model_card import InputSpec
from training.config import load_yaml
from training.data import load_training_data
from training.network import from_architecture
from training.package import TrainingRun, write_package

from .conftest import AREA, IMAGE, LABELS, recipe

SPEC = InputSpec(
    bands=("blue", "green", "red", "nir", "swir1"),
    value_range=(0.0, 255.0),
    mean=(127.5,) * 5,
    std=(64.0,) * 5,
)


def package_card(config, **options) -> dict:
    data = load_training_data(config, SPEC, None)
    network = from_architecture("tiny", len(data.classes), len(data.bands), config.window)
    package = write_package(
        config,
        network.model,
        data,
        {"mIoU": 0.5},
        None,
        TrainingRun(network.head_note, steps_done=4, best_step=2, **options),
    )
    return json.loads((package.path / "model.json").read_text(encoding="utf-8"))


def test_a_recipe_s_paths_are_recorded_relative_to_the_recipe(tmp_path):
    data = tmp_path / "project" / "data"
    data.mkdir(parents=True)
    for source in (IMAGE, LABELS, AREA):
        shutil.copy(source, data / source.name)
    recipes = tmp_path / "project" / "recipes"
    recipes.mkdir()
    (tmp_path / "project" / "models").mkdir()
    recipe_file = recipes / "land.yaml"
    recipe_file.write_text(
        "\n".join(
            [
                "architecture: tiny",
                "output: ../models/land",
                "images:",
                f"  - image: ../data/{IMAGE.name}",
                f"    labels: ../data/{LABELS.name}",
                f"    mask: ../data/{AREA.name}",
                "label_map: {1: developed, 2: herbaceous, 3: herbaceous, 4: shrubland,",
                "            5: forest, 6: water, 7: ignore}",
                "test:",
                f"  - image: {IMAGE}",  # absolute, outside the project: its file name
                f"    labels: {LABELS}",
                "block_size: 64",
                "window: 128",
                "device: cpu",
                "threads: 2",
            ]
        )
    )
    config = load_yaml(recipe_file)
    command = f"crossearth train --config {recipe_file} --run-dir={tmp_path / 'project' / 'run'}"
    card = package_card(config, seconds=12.345, command=command, recipe=recipe_file)
    provenance = card["provenance"]
    recorded = provenance["recipe"]
    assert recorded["images"] == [
        {
            "image": f"../data/{IMAGE.name}",
            "labels": f"../data/{LABELS.name}",
            "polygons": None,
            "layer": None,
            "class_field": None,
            "mask": f"../data/{AREA.name}",
        }
    ]
    assert recorded["output"] == "../models/land"
    assert recorded["run_dir"] == "../models/land.run"
    assert recorded["test"] == [{"image": IMAGE.name, "labels": LABELS.name}]
    assert "device" not in recorded and "threads" not in recorded
    assert provenance["command"] == "crossearth train --config land.yaml --run-dir=../run"
    assert provenance["seconds"] == 12.3
    assert provenance["data"][0]["image"]["file"] == IMAGE.name


def test_without_a_recipe_paths_are_relative_to_the_package(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(IMAGE, data / "image.tif")
    config = recipe(tmp_path, device="cpu")  # labels and area in the repository: elsewhere
    config.images[0].image = data / "image.tif"
    card = package_card(config, seconds=None, command=None)
    recorded = card["provenance"]["recipe"]
    assert recorded["images"][0]["image"] == "../data/image.tif"
    assert recorded["images"][0]["labels"] == LABELS.name
    assert recorded["images"][0]["mask"] == AREA.name
    assert recorded["output"] == "."
    assert recorded["run_dir"] == "../model.run"
    assert "device" not in recorded and "threads" not in recorded
    assert card["provenance"]["seconds"] is None


def test_a_path_with_no_folder_in_common_is_recorded_as_its_file_name(tmp_path):
    from training.package import portable_path

    root = tmp_path / "recipes"
    assert portable_path(tmp_path / "recipes" / "a.tif", root) == "a.tif"
    assert portable_path(tmp_path / "x" / "b.tif", root) == "../x/b.tif"
    # Nothing in common but the filesystem root: the name alone.
    assert portable_path(Path("/nowhere-else/c.tif"), root) == "c.tif"
    # A common folder far above (e.g. /tmp for a clone and a scratch folder): the name alone.
    deep = tmp_path / "a" / "b" / "c" / "recipes"
    assert portable_path(tmp_path / "a" / "d.tif", deep) == "../../../d.tif"
    assert portable_path(tmp_path / "elsewhere" / "e.tif", deep) == "e.tif"
