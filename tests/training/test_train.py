"""Training end to end on the real Raleigh data: it learns, resumes exactly, survives
interruption, fine-tunes packages, runs multi-task and multi-process, and is scriptable."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from engine.cli import main
from engine.models.packages import open_package
from training.trainer import TrainingCancelled, train

from .conftest import REPO, recipe

SAMPLE = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"
SAMPLE_LABELS = REPO / "resources" / "samples" / "raleigh_landcover_sample.tif"
LEARN = {
    "steps": 300,
    "batch": 4,
    "lr": 1e-3,
    "warmup": 30,
    "eval_every": 50,
    "checkpoint_every": 100,
    "num_points": 2048,
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("training")


@pytest.fixture(scope="module")
def untrained(folder):
    # lr 0: one step changes nothing, so the package holds the initial weights.
    return train(recipe(folder / "untrained", **{**LEARN, "steps": 1, "lr": 0.0}), progress="none")


@pytest.fixture(scope="module")
def trained(folder):
    return train(recipe(folder / "trained", **LEARN), progress="none")


def test_training_beats_the_untrained_model_clearly(untrained, trained):
    before = untrained.metrics["mIoU"]
    after = trained.metrics["mIoU"]
    print(f"validation mIoU: untrained {before:.3f}, after 300 steps {after:.3f}")
    assert after > 0.17
    assert after > before + 0.07
    card = trained.package.card
    assert card.metrics["validation"]["mIoU"] == after
    assert card.class_names == ["developed", "herbaceous", "shrubland", "forest", "water"]
    assert card.input.bands == ("blue", "green", "red", "nir", "swir1")
    assert card.gsd_m == 28.5
    assert card.provenance["split"]["val_blocks"] > 0
    rows = read_csv(trained.run_dir / "val_log.csv")
    assert [int(r["step"]) for r in rows] == [50, 100, 150, 200, 250, 300]
    assert (trained.run_dir / "split.geojson").is_file()
    assert list((trained.run_dir / "tensorboard").iterdir())


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def weights(package):
    return load_file(str(package.weights_path))


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    settings = {"steps": 6, "checkpoint_every": 3, "eval_every": 3, "threads": 1}
    straight = train(recipe(tmp_path / "a", **settings), progress="none")
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] == 3

    config = recipe(tmp_path / "b", **settings)
    with pytest.raises(TrainingCancelled) as stop:
        train(config, progress="none", cancel=cancel)
    assert stop.value.step == 3 and stop.value.checkpoint.name == "step_0000003.pt"
    resumed = train(config, progress="none", resume="auto")
    a, b = weights(straight.package), weights(resumed.package)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics == straight.metrics
    log_a = (straight.run_dir / "train_log.csv").read_text()
    assert log_a.count("\n") == 7  # header + one row per step
    assert (resumed.run_dir / "train_log.csv").read_text() == log_a


def test_a_finished_run_resumes_into_writing_its_package_again(tmp_path):
    # The output's folder does not exist yet: training makes it before the first step.
    output = tmp_path / "not" / "yet" / "model"
    settings = {"steps": 2, "threads": 1, "output": output, "run_dir": tmp_path / "run"}
    first = train(recipe(tmp_path, **settings), progress="none")
    assert first.package.path == output
    seconds = first.package.card.provenance["seconds"]
    assert seconds > 0
    shutil.rmtree(output)
    again = train(recipe(tmp_path, **settings), progress="none", resume="auto")
    assert again.steps == 2 and again.metrics == first.metrics
    a, b = weights(first.package), weights(again.package)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [int(r["step"]) for r in read_csv(tmp_path / "run" / "train_log.csv")] == [1, 2]
    # The card counts the training time of the first run, which the checkpoint carried.
    checkpoint = torch.load(
        tmp_path / "run" / "checkpoints" / "step_0000002.pt", weights_only=False
    )
    assert 0 < checkpoint["seconds"] <= seconds
    assert again.package.card.provenance["seconds"] > checkpoint["seconds"]


def test_a_resumed_log_drops_the_rows_logged_after_its_checkpoint(tmp_path):
    from training.logs import TrainingLog

    (tmp_path / "train_log.csv").write_text("step,loss\n1,0.5\n2,0.4\n3,0.3\n4,0.2\n")
    (tmp_path / "val_log.csv").write_text("step,mIoU\n2,0.1\n4,0.2\n")
    log = TrainingLog(tmp_path, "none", total_steps=6, first_step=2)
    log.step(3, {"loss": 0.25})
    log.close()
    assert (tmp_path / "train_log.csv").read_text().split() == [
        "step,loss", "1,0.5", "2,0.4", "3,0.25"
    ]  # fmt: skip
    assert (tmp_path / "val_log.csv").read_text().split() == ["step,mIoU", "2,0.1"]


def test_ctrl_c_leaves_a_checkpoint_to_resume_from(tmp_path):
    calls = {"n": 0}

    def interrupt():
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return False

    config = recipe(tmp_path, steps=4, checkpoint_every=100, eval_every=100)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress="none", cancel=interrupt)
    assert sorted(p.name for p in (config.run_dir / "checkpoints").iterdir()) == ["step_0000002.pt"]
    assert not config.output.exists()
    result = train(config, progress="none", resume="auto")
    assert result.steps == 4 and result.package.path.is_dir()


def test_fine_tuning_a_package_maps_classes_and_freezes_the_backbone(tmp_path, trained):
    base = trained.package
    config = recipe(
        tmp_path,
        architecture=None,
        base=str(base.path),
        label_map={
            1: "built-up",
            2: "ignore",
            3: "ignore",
            4: "ignore",
            5: "forest",
            6: "water",
            7: "ignore",
        },
        class_map={"built-up": "developed"},
        mode="reins",
        steps=3,
        eval_every=3,
        checkpoint_every=3,
    )
    result = train(config, progress="none")
    before, after = weights(base), weights(result.package)
    frozen = [
        k for k in before if k.startswith("backbone.") and not k.startswith("backbone.reins.")
    ]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(
        before["backbone.reins.learnable_tokens_a"], after["backbone.reins.learnable_tokens_a"]
    )
    assert after["decode_head.cls_embed.weight"].shape == (4, 64)  # 3 classes + no object
    card = result.package.card
    assert card.class_names == ["built-up", "forest", "water"]
    assert "built-up<-developed" in card.provenance["head"]
    assert card.input == base.card.input  # the base's normalization is kept


def test_multi_task_training_logs_reconstruction(tmp_path):
    result = train(
        recipe(tmp_path, mtp=True, steps=3, eval_every=3, checkpoint_every=3), progress="none"
    )
    rows = read_csv(result.run_dir / "train_log.csv")
    assert len(rows) == 3
    assert all(0 < float(r["loss_reconstruction"]) < 100 for r in rows)
    # The reconstruction heads are for training only: the package loads as a plain model.
    assert not any(k.startswith("reconstruction") for k in weights(result.package))


def test_command_line_with_yaml_recipe_then_evaluate(tmp_path, capsys):
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(
        "\n".join(
            [
                "architecture: tiny",
                f"output: {tmp_path / 'pkg'}",
                "images:",
                f"  - image: {REPO / 'resources/data/raleigh/landsat7_2000.tif'}",
                f"    labels: {REPO / 'resources/data/raleigh/landclass96.tif'}",
                f"    mask: {REPO / 'resources/data/raleigh/training_area.geojson'}",
                "label_map: {1: developed, 2: herbaceous, 3: herbaceous, 4: shrubland,",
                "            5: forest, 6: water, 7: ignore}",
                "block_size: 64",
                "window: 128",
                "batch: 2",
                "steps: 2",
                "num_points: 512",
            ]
        )
    )
    code = main(["train", "--config", str(recipe_file), "--eval-every", "2", "--progress", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["steps"] == 2
    package = open_package(tmp_path / "pkg")
    assert package.card.provenance["command"].startswith("crossearth train --config ")
    # Paths relative to the recipe file, which the command line passed on.
    assert package.card.provenance["recipe"]["output"] == "pkg"

    code = main(
        [
            "evaluate",
            str(package.path),
            str(SAMPLE),
            str(SAMPLE_LABELS),
            "--json",
            str(tmp_path / "m.json"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["pixels"] == 27521  # every labelled pixel of the held-out sample
    assert sum(map(sum, metrics["confusion_matrix"])) == 27521
    assert "mIoU" in out and "confusion matrix" in out

    code = main(["train", "--config", str(recipe_file)])
    _, err = capsys.readouterr()
    assert code == 2 and "already exists" in err


def test_two_processes_with_torchrun(tmp_path):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "engine.cli",
        "train",
        "--architecture",
        "tiny",
        "--image",
        str(REPO / "resources/data/raleigh/landsat7_2000.tif"),
        "--labels",
        str(REPO / "resources/data/raleigh/landclass96.tif"),
        "--label-map",
        "1=developed,2=herbaceous,3=herbaceous,4=shrubland,5=forest,6=water,7=ignore",
        "--output",
        str(tmp_path / "ddp"),
        "--steps",
        "2",
        "--batch",
        "1",
        "--window",
        "128",
        "--block-size",
        "64",
        "--eval-every",
        "2",
        "--num-points",
        "256",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--progress",
        "none",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    package = open_package(tmp_path / "ddp")
    assert package.card.provenance["steps"] == 2
    rows = read_csv(tmp_path / "ddp.run" / "train_log.csv")
    assert len(rows) == 2  # one log, written by rank 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mixed_precision_on_cuda(tmp_path):
    result = train(
        recipe(tmp_path, device="cuda", amp=True, steps=3, eval_every=3), progress="none"
    )
    rows = read_csv(result.run_dir / "train_log.csv")
    assert all(float(r["loss"]) == float(r["loss"]) for r in rows)  # finite, not NaN


def test_a_cancelled_training_is_a_cancelled_event_with_exit_130(tmp_path, capsys, monkeypatch):
    """The plugin's Cancel on fine-tuning: the worker reports "cancelled" (not an error) with
    the checkpoint that resumes it."""
    import training.trainer

    def stopped(config, **kwargs):
        raise TrainingCancelled(3, tmp_path / "run" / "checkpoints" / "step_0000003.pt")

    monkeypatch.setattr(training.trainer, "train", stopped)
    code = main([
        "train", "--architecture", "tiny", "--image", str(SAMPLE), "--labels", str(SAMPLE_LABELS),
        "--output", str(tmp_path / "out"), "--progress", "json",
    ])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 130
    event = json.loads(out.strip().splitlines()[-1])
    assert event["event"] == "cancelled" and event["code"] == "cancelled"
    assert event["fields"]["step"] == 3
    assert event["fields"]["checkpoint"].endswith("step_0000003.pt")
    assert err.strip().startswith("crossearth: training cancelled at step 3; resume from ")
