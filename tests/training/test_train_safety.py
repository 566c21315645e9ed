"""`crossearth train` refuses, before any training time is spent, an output or run folder that
would replace or mix with an input or with files it did not write, and a --resume file that is
no training checkpoint; it replaces a package it wrote itself."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from safetensors.torch import save_file

from engine.cli import main
from engine.errors import CrossEarthError
from engine.models.packages import open_package
from training.trainer import train

from ..helpers import checksums
from .conftest import IMAGE, LABEL_MAP, LABELS, REPO, recipe

BUNDLED = REPO / "resources" / "models" / "crossearth-landsat-lc"

MAP = ",".join(f"{value}={name}" for value, name in LABEL_MAP.items())


@pytest.fixture
def data(tmp_path) -> Path:
    """The Raleigh image and labels copied into a folder of the user's."""
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(IMAGE, folder / "image.tif")
    shutil.copy(LABELS, folder / "labels.tif")
    return folder


def train_args(data: Path, output: Path, *extra) -> list[str]:
    return [
        "train",
        "--architecture", "tiny",
        "--image", str(data / "image.tif"),
        "--labels", str(data / "labels.tif"),
        "--label-map", MAP,
        "--output", str(output),
        "--steps", "1", "--batch", "1", "--window", "128", "--block-size", "64",
        "--eval-every", "1", "--num-points", "256", "--threads", "1", "--device", "cpu",
        "--progress", "none",
        *extra,
    ]  # fmt: skip


def refused(capsys, args) -> str:
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith("crossearth: ") and err.count("\n") == 1, err
    return err


def test_outputs_that_are_not_ours_are_refused_before_training(tmp_path, capsys, data):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "model.json").write_text("{}")
    (project / "map.qgz").write_bytes(b"PK\x03\x04 project")
    before = checksums(tmp_path)
    for output, message in [
        (notes, "is a file, not a model package folder"),
        (project, "holds map.qgz, which is not part of a model package"),
        (data, f"contains the input {data / 'image.tif'}"),
        (data / "labels.tif", f"is the input {data / 'labels.tif'}"),
        (notes / "model", f"cannot be made: {notes} is a file, not a folder"),
    ]:
        err = refused(capsys, train_args(data, output, "--overwrite"))
        assert message in err, err
    # No run folder, no checkpoint, no log: nothing was trained.
    assert checksums(tmp_path) == before


def test_a_run_folder_holding_inputs_is_refused(tmp_path, capsys, data):
    (tmp_path / "out.run").mkdir()
    shutil.copy(data / "labels.tif", tmp_path / "out.run" / "labels.tif")
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text("run_dir: .\nsteps: 1\n")
    before = checksums(tmp_path)
    moved = train_args(data, tmp_path / "out")
    moved[moved.index("--labels") + 1] = str(tmp_path / "out.run" / "labels.tif")
    err = refused(capsys, moved)
    assert f"the run folder {tmp_path / 'out.run'} contains the input" in err
    # run_dir: . in a recipe is the recipe's own folder, which holds the recipe and the data
    err = refused(
        capsys, ["train", "--config", str(recipe_file), *train_args(data, tmp_path / "x")[1:]]
    )
    assert f"the run folder {tmp_path} contains the input" in err
    # the output may not be the recipe's folder either
    err = refused(
        capsys,
        ["train", "--config", str(recipe_file), *train_args(data, tmp_path, "--overwrite")[1:]],
    )
    assert f"the output {tmp_path} contains the input" in err
    assert checksums(tmp_path) == before


def test_resume_with_a_file_that_is_no_training_checkpoint(tmp_path, capsys, data):
    files = tmp_path / "files"
    files.mkdir()
    (files / "notes.pt").write_text("step 200 looked good\n")
    save_file({"conv.weight": torch.zeros(2)}, str(files / "weights.safetensors"))
    torch.save({"state_dict": {"backbone.x": torch.zeros(2)}}, files / "model.pth")
    torch.save({"model": {"x": torch.zeros(2)}, "best": {"mIoU": 0.5}}, files / "best.pt")
    before = checksums(tmp_path)
    for name, message in [
        ("notes.pt", "is not a PyTorch file, so not a training checkpoint"),
        ("weights.safetensors", "is a safetensors file (a model package's weights)"),
        ("model.pth", "is a model checkpoint (weights only, no optimizer state)"),
        ("best.pt", "is the best weights of a run (best.pt)"),
        ("missing.pt", "does not exist"),
    ]:
        err = refused(capsys, train_args(data, tmp_path / "out", "--resume", str(files / name)))
        assert message in err and "step_NNNNNNN.pt" in err, err
    err = refused(capsys, train_args(data, tmp_path / "out", "--resume", "auto"))
    assert "no checkpoint to resume from" in err
    assert checksums(tmp_path) == before


def test_the_api_refuses_a_foreign_output_too(tmp_path):
    output = tmp_path / "model"
    output.mkdir()
    (output / "README.md").write_text("mine\n")
    before = checksums(tmp_path)
    with pytest.raises(CrossEarthError, match="holds README.md"):
        train(recipe(tmp_path, steps=1), progress="none")
    assert checksums(tmp_path) == before


def test_overwrite_replaces_a_package_this_tool_trained(tmp_path, capsys, data):
    output = tmp_path / "model"
    code = main(train_args(data, output))
    assert code == 0, capsys.readouterr().err
    first = open_package(output)
    inputs = checksums(data)
    refused(capsys, train_args(data, output))  # already exists, no --overwrite
    # The first run's checkpoints are not the new run's to prune.
    run = checksums(tmp_path / "model.run")
    message = refused(capsys, train_args(data, output, "--overwrite"))
    assert "holds checkpoints of an earlier run (step_0000001.pt)" in message
    assert "--resume auto" in message and "--run-dir" in message
    assert checksums(tmp_path / "model.run") == run
    code = main(
        train_args(
            data, output, "--overwrite", "--name", "again", "--seed", "1",
            "--run-dir", str(tmp_path / "again.run"),
        )
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    again = open_package(output)
    assert (first.card.name, again.card.name) == ("model", "again")
    assert sorted(os.listdir(output)) == ["model.json", "weights.safetensors"]
    assert sorted(os.listdir(tmp_path)) == ["again.run", "data", "model", "model.run"]
    assert checksums(data) == inputs
    # Resuming from a checkpoint in the run folder (where they live) writes the package again.
    checkpoint = tmp_path / "model.run" / "checkpoints" / "step_0000001.pt"
    code = main(train_args(data, output, "--resume", str(checkpoint), "--seed", "1"))
    assert code == 0, capsys.readouterr().err
    assert sorted(os.listdir(output)) == ["model.json", "weights.safetensors"]
    assert checksums(data) == inputs


def test_the_base_package_is_an_input(tmp_path, capsys, data, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(BUNDLED, models / "mine")
    monkeypatch.setenv("CROSSEARTH_MODELS_DIR", str(models))
    before = checksums(tmp_path)

    def args(base, output):
        with_base = train_args(data, output, "--overwrite")
        at = with_base.index("--architecture")
        with_base[at : at + 2] = ["--base", str(base)]
        return with_base

    for base, output, message in [
        (models / "mine", models / "mine", "is the input"),
        ("mine", models / "mine", "is the input"),  # by its folder's name
        ("mine", models / "mine" / "tuned", "lies inside the input"),
        (models / "mine", models, "contains the input"),
    ]:
        err = refused(capsys, args(base, output))
        assert message in err and str(models / "mine") in err, err
    assert checksums(tmp_path) == before


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--lr", "nan"], "lr must be a number >= 0"),
        (["--lr", "-1"], "lr must be a number >= 0"),
        (["--lr", "inf"], "lr must be a number >= 0"),
        (["--window", "100000"], "larger than the largest window"),
    ],
)
def test_a_recipe_value_no_training_can_use_is_one_line(tmp_path, capsys, data, extra, says):
    err = refused(capsys, train_args(data, tmp_path / "pkg", *extra))
    assert says in err
    assert not (tmp_path / "pkg").exists()


def _labels_like(data: Path, values, dtype: str, nodata=None, bands: int = 1) -> Path:

    with rasterio.open(data / "labels.tif") as src:
        profile = src.profile | {"dtype": dtype, "count": bands, "nodata": nodata}
        labels = src.read(1)
    layer = np.asarray(values(labels), dtype)
    path = data / f"labels-{dtype}-{bands}.tif"
    with rasterio.open(path, "w", **profile) as out:
        for band in range(1, bands + 1):
            out.write(layer, band)
    return path


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda d: _labels_like(d, lambda v: v, "uint8", bands=3), "have 3 bands"),
        (
            lambda d: _labels_like(d, lambda v: (v + 0.5).astype("float32"), "float32"),
            "not whole numbers",
        ),
        (
            lambda d: _labels_like(d, lambda v: np.where(v == 1, np.nan, v), "float32"),
            "hold NaN values",
        ),
    ],
)
def test_labels_that_are_not_one_band_of_class_values_are_one_line(
    tmp_path, capsys, data, make, says
):
    labels = make(data)
    args = train_args(data, tmp_path / "pkg")
    args[args.index("--labels") + 1] = str(labels)
    err = refused(capsys, args)
    assert says in err and "Traceback" not in err
    assert not (tmp_path / "pkg").exists()


def test_float_labels_with_nan_as_nodata_train(tmp_path, capsys, data):
    # the label map's classes, and NaN where the original raster has no label (0)
    labels = _labels_like(data, lambda v: np.where(v == 0, np.nan, v), "float32", nodata=np.nan)
    args = train_args(data, tmp_path / "pkg")
    args[args.index("--labels") + 1] = str(labels)
    code = main(args)
    _, err = capsys.readouterr()
    assert code == 0, err
    assert open_package(tmp_path / "pkg").card.num_classes > 0
