"""Knowledge distillation: the teacher's maps are the engine's segmentation of the training
images, they never show validation blocks, the loss measures what it should, and a run with a
teacher trains and records it."""

from __future__ import annotations

import csv
import errno
import json

import numpy as np
import pytest
import rasterio
import torch

from engine.cli import main
from engine.crossearth.model import semantic_scores
from engine.errors import ConfigError, CrossEarthError
from engine.models.packages import open_package
from engine.run.pipeline import SegmentOptions, segment
from training import distill
from training.config import ClassSpec
from training.data import TRAIN, VAL, load_training_data
from training.distill import distillation_loss, read_teacher, teacher_maps

from .conftest import AREA, IMAGE, LABELS, REPO, recipe

TEACHER = REPO / "resources" / "models" / "crossearth-landsat-lc"
# The bundled model's class names, so it can teach a model of these classes.
LABEL_MAP = {
    1: "developed",
    2: "herbaceous / agriculture",
    3: "herbaceous / agriculture",
    4: "shrubland",
    5: "forest",
    6: "water",
    7: "ignore",
}


@pytest.fixture(scope="module")
def teacher():
    return open_package(TEACHER)


@pytest.fixture(scope="module")
def data(teacher, tmp_path_factory):
    config = recipe(tmp_path_factory.mktemp("distill"), label_map=LABEL_MAP)
    classes = [ClassSpec(c.name, c.color) for c in teacher.card.classes]
    return load_training_data(config, teacher.card.input, classes)


@pytest.fixture(scope="module")
def maps(teacher, data, tmp_path_factory):
    return teacher_maps(teacher, data, torch.device("cpu"), tmp_path_factory.mktemp("maps"))


def test_the_teacher_map_is_the_engines_segmentation_of_the_image(teacher, maps, tmp_path):
    (probabilities,) = maps
    with rasterio.open(IMAGE) as image:
        assert probabilities.shape == (5, image.height, image.width)
    assert probabilities.dtype == np.float16
    sums = probabilities.astype(np.float32).sum(0)
    segment(
        IMAGE,
        tmp_path / "classes.tif",
        teacher,
        SegmentOptions(bands=[1, 2, 3, 4, 5], device="cpu", runtime="torch"),
    )
    with rasterio.open(tmp_path / "classes.tif") as classes:
        engine_classes = classes.read(1)
        nodata = engine_classes == classes.nodata
    # Probabilities where the engine decides a class, nothing where it writes nodata.
    assert 0 < nodata.sum() < nodata.size
    assert np.abs(sums[~nodata] - 1.0).max() < 5e-3
    assert not sums[nodata].any()
    valid = ~nodata
    agreement = (probabilities.argmax(0)[valid] == engine_classes[valid]).mean()
    print(f"teacher map vs engine classes: {100 * agreement:.3f} % of pixels agree")
    assert agreement > 0.999  # float16 storage may flip exact ties only


def test_maps_are_reused_while_teacher_and_image_stay_the_same(
    teacher, data, maps, monkeypatch, tmp_path_factory
):
    folder = tmp_path_factory.getbasetemp() / "again"
    first = teacher_maps(teacher, data, torch.device("cpu"), folder)
    written = sorted(folder.iterdir())
    assert [p.suffix for p in written] == [".npy"]  # no temporary left beside it

    def must_not_run(*args, **kwargs):
        raise AssertionError("the teacher ran again")

    monkeypatch.setattr(distill, "_write_map", must_not_run)
    again = teacher_maps(teacher, data, torch.device("cpu"), folder)
    assert np.array_equal(first[0], again[0])
    assert sorted(folder.iterdir()) == written


def test_an_incomplete_map_in_the_cache_is_computed_again(teacher, data, tmp_path_factory):
    folder = tmp_path_factory.getbasetemp() / "incomplete"
    expected = np.array(teacher_maps(teacher, data, torch.device("cpu"), folder)[0])
    (cached,) = folder.iterdir()
    size = cached.stat().st_size
    with open(cached, "r+b") as stored:  # as a crash of the machine might leave it
        stored.truncate(size // 2)
    again = teacher_maps(teacher, data, torch.device("cpu"), folder)
    assert cached.stat().st_size == size
    assert np.array_equal(expected, np.asarray(again[0]))


def test_a_full_disk_is_one_line_and_leaves_no_file(teacher, data, monkeypatch, tmp_path):
    def full(out, probabilities):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(distill, "_append_rows", full)
    with pytest.raises(CrossEarthError) as error:
        teacher_maps(teacher, data, torch.device("cpu"), tmp_path / "maps")
    assert "disk is full" in str(error.value) and "\n" not in str(error.value)
    assert list((tmp_path / "maps").iterdir()) == []


def test_validation_blocks_never_teach(data, maps):
    (probabilities,) = maps
    taught = 0
    for split in (TRAIN, VAL):
        for block in data.blocks_of(split)[:6]:
            window = read_teacher(maps, data, block.image, block.row, block.col, block.size)
            stored = probabilities[:, block.row : block.row + block.size, block.col :]
            stored = stored[:, :, : block.size]
            inside = window[:, : stored.shape[1], : stored.shape[2]]
            if split == TRAIN:  # the teacher's probabilities as stored
                np.testing.assert_array_equal(inside, stored.astype(np.float32))
                taught += int((inside.sum(0) > 0.99).sum())
            else:
                assert stored.any() and not window.any()
    assert taught > 6 * 32 * 32
    # Outside the image nothing teaches either.
    outside = read_teacher(maps, data, 0, -40, -40, 32)
    assert not outside.any()


def _logits(seed: int, queries: int = 6, classes: int = 3, size: int = 8):
    generator = torch.Generator().manual_seed(seed)
    cls_logits = torch.randn(2, queries, classes + 1, generator=generator)
    mask_logits = torch.randn(2, queries, size, size, generator=generator)
    return cls_logits, mask_logits


def test_the_loss_is_zero_for_the_teachers_own_scores_and_grows_with_disagreement():
    cls_logits, mask_logits = _logits(0)
    scores = semantic_scores(cls_logits, mask_logits, (8, 8))
    # The teacher's maps come at a finer grid (the window), pooled to the masks' grid.
    probabilities = scores / scores.sum(1, keepdim=True)
    teacher = probabilities.repeat_interleave(4, -1).repeat_interleave(4, -2)
    assert distillation_loss(cls_logits, mask_logits, teacher).abs() < 1e-5
    other_cls, other_masks = _logits(1)
    assert distillation_loss(other_cls, other_masks, teacher) > 0.05


def test_pixels_without_a_teacher_carry_no_loss_or_gradient():
    cls_logits, mask_logits = _logits(2)
    teacher = torch.zeros(2, 3, 8, 8)
    teacher[:, 0, :4] = 1.0  # the teacher speaks on the top half only: class 0
    mask_logits.requires_grad_(True)
    loss = distillation_loss(cls_logits, mask_logits, teacher)
    loss.backward()
    assert loss > 0
    assert mask_logits.grad[..., :4, :].abs().sum() > 0
    assert mask_logits.grad[..., 4:, :].abs().sum() == 0


def test_a_teacher_with_other_classes_is_refused_in_one_line(teacher, tmp_path):
    other = {**LABEL_MAP, 6: "open water"}
    config = recipe(tmp_path, label_map=other)
    classes = [ClassSpec(c.name, c.color) for c in teacher.card.classes[:5]]
    data = load_training_data(config, teacher.card.input, classes[:4] + [ClassSpec("open water")])
    with pytest.raises(ConfigError) as error:
        teacher_maps(teacher, data, torch.device("cpu"), tmp_path / "maps")
    assert error.value.code == "config.teacher_classes"
    assert "same classes" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "maps").exists() or not any((tmp_path / "maps").iterdir())


def test_fine_tuning_with_a_teacher_logs_the_loss_and_records_the_teacher(tmp_path, capsys):
    label_map = ",".join(f"{value}={name}" for value, name in LABEL_MAP.items())
    code = main(
        [
            "train",
            "--base",
            str(TEACHER),
            "--teacher",
            str(TEACHER),
            "--distill-weight",
            "5",
            "--image",
            str(IMAGE),
            "--labels",
            str(LABELS),
            "--mask",
            str(AREA),
            "--label-map",
            label_map,
            "--output",
            str(tmp_path / "model"),
            *("--input-scale", "2", "--block-size", "64", "--window", "128", "--batch", "2"),
            *("--steps", "2", "--eval-every", "2", "--num-points", "512", "--threads", "2"),
            *("--progress", "none"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    run_dir = tmp_path / "model.run"
    with open(run_dir / "train_log.csv", newline="") as log:
        rows = list(csv.DictReader(log))
    distilled = [float(row["loss_distill"]) for row in rows]
    assert len(distilled) == 2 and all(np.isfinite(distilled)) and min(distilled) > 0
    assert len(list((run_dir / "teacher").glob("teacher-00-*.npy"))) == 1
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert card["provenance"]["teacher"] == {
        "model": "crossearth-landsat-lc",
        "version": "1",
        "distill_weight": 5.0,
    }
    recorded = card["provenance"]["recipe"]
    assert recorded["distill_weight"] == 5.0
    assert recorded["teacher"].endswith("crossearth-landsat-lc")


def test_distill_weight_must_be_a_number_at_least_zero(tmp_path):
    with pytest.raises(Exception, match="distill_weight must be a number >= 0"):
        recipe(tmp_path, distill_weight=-1.0)
