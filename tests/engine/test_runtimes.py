"""Runtimes: a package's exported ONNX graph runs on ONNX Runtime and OpenVINO with the classes
PyTorch gives (scores within 1e-4), also when tiles are resampled to the model's GSD without
torch; damaged graphs and graphs that do not fit are refused in one line; and a virtual
environment without PyTorch segments the sample raster with the same classes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from engine.cli import main
from engine.files import file_sha256
from engine.models.model_card import read_card
from engine.run.resize import resize

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "resources" / "models" / "crossearth-landsat-lc"
SAMPLE = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A copy of the bundled 64-px model with its ONNX graph, exported once for the module."""
    folder = tmp_path_factory.mktemp("exported") / "model"
    shutil.copytree(BUNDLED, folder)
    (folder / "model.onnx").unlink(missing_ok=True)
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    card.pop("onnx", None)
    (folder / "model.json").write_text(json.dumps(card), encoding="utf-8")
    assert main(["export", str(folder), "--progress", "none"]) == 0
    return folder


def segment(capsys, model, output, *extra):
    code, out, err = run(
        capsys, "segment", SAMPLE, output, "--model", model, "--progress", "json",
        "--confidence", output.with_name(output.stem + "_confidence.tif"), *extra,
    )  # fmt: skip
    assert code == 0, err
    done = json.loads(out.strip().splitlines()[-1])
    with rasterio.open(output) as classes, rasterio.open(done["confidence"]) as confidence:
        return done, classes.read(1), confidence.read(1)


@pytest.mark.parametrize(
    ("source", "target", "mode"),
    [((100, 90), (37, 41), "area"), ((130, 130), (128, 128), "area"),
     ((37, 41), (100, 90), "bicubic"), ((64, 64), (128, 128), "bicubic"),
     ((7, 7), (20, 13), "bicubic")],
)  # fmt: skip
def test_numpy_resampling_equals_torch(source, target, mode):
    x = np.random.default_rng(0).normal(size=(2, 3, *source)).astype(np.float32)
    options = {} if mode == "area" else {"align_corners": False}
    expected = F.interpolate(torch.from_numpy(x), size=target, mode=mode, **options).numpy()
    assert np.abs(resize(x, *target, mode) - expected).max() < 2e-5


def test_export_records_the_graph_in_the_card(exported):
    graph = read_card(exported / "model.json").onnx
    assert graph is not None
    assert graph["file"] == "model.onnx" and graph["opset"] == 18
    assert graph["tile"] == 64 and graph["bands"] == 5
    assert graph["sha256"] == file_sha256(exported / "model.onnx")
    assert 0 < graph["max_abs_diff"] <= 1e-4
    assert "torch" in graph["exported_with"]
    # Weights and card are still the package's; only the graph was added.
    assert sorted(p.name for p in exported.iterdir()) == [
        "model.json", "model.onnx", "weights.safetensors",
    ]  # fmt: skip


def test_onnx_runtimes_give_the_classes_pytorch_gives(exported, tmp_path, capsys):
    done, classes, confidence = segment(
        capsys, exported, tmp_path / "torch.tif", "--runtime", "torch"
    )
    assert done["device"] == "cpu"
    for runtime in ("onnxruntime", "openvino"):
        result, other, other_confidence = segment(
            capsys, exported, tmp_path / f"{runtime}.tif", "--runtime", runtime
        )
        assert result["device"] == f"cpu ({runtime})"
        assert np.array_equal(other, classes), runtime
        assert np.abs(other_confidence - confidence).max() < 1e-4, runtime
    # auto: the fastest ONNX runtime on the CPU when the package has a graph.
    result, auto, _ = segment(capsys, exported, tmp_path / "auto.tif")
    assert result["device"] == "cpu (onnxruntime)" and np.array_equal(auto, classes)


def test_resampled_runs_agree_without_torch(exported, tmp_path, capsys):
    # 28.5 m raster processed at 40 m: tiles are resampled to the model's GSD and back, by
    # ResampledModel with torch, by engine/run/resize.py with the ONNX runtimes.
    extra = ("--gsd", "40")
    _, classes, confidence = segment(
        capsys, exported, tmp_path / "t.tif", "--runtime", "torch", *extra
    )
    _, other, other_confidence = segment(
        capsys, exported, tmp_path / "o.tif", "--runtime", "onnxruntime", *extra
    )
    assert np.array_equal(other, classes)
    assert np.abs(other_confidence - confidence).max() < 1e-4


def test_a_damaged_graph_is_refused_in_one_line(exported, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(exported, damaged)
    data = bytearray((damaged / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one weight byte: the graph still loads, the map would be wrong
    (damaged / "model.onnx").write_bytes(bytes(data))
    for runtime in ("onnxruntime", "auto"):
        output = tmp_path / f"{runtime}.tif"
        code, _, err = run(
            capsys, "segment", SAMPLE, output, "--model", damaged, "--runtime", runtime,
            "--progress", "none",
        )  # fmt: skip
        assert code == 2 and "Traceback" not in err
        assert "is not the one its card records (sha256 differs)" in err
        assert err.count("\n") == 1 and not output.exists()


def test_graph_must_fit_the_tiles(exported, tmp_path, capsys):
    output = tmp_path / "o.tif"
    code, _, err = run(
        capsys, "segment", SAMPLE, output, "--model", exported, "--tile", "128",
        "--runtime", "onnxruntime",
    )  # fmt: skip
    assert code == 2 and "ONNX graph takes tiles of at most 64 px, not 128" in err
    assert not output.exists()
    # auto runs such tiles with PyTorch instead.
    code, out, err = run(
        capsys, "segment", SAMPLE, output, "--model", exported, "--tile", "128",
        "--progress", "json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["device"] == "cpu"


def test_export_replaces_only_with_overwrite(exported, tmp_path, capsys):
    before = (exported / "model.onnx").read_bytes()
    code, _, err = run(capsys, "export", exported, "--progress", "none")
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert (exported / "model.onnx").read_bytes() == before
    assert not [p for p in exported.iterdir() if p.name.startswith(".crossearth-tmp")]
    # --overwrite replaces the graph this tool wrote, and the card records the new one.
    again = tmp_path / "again"
    shutil.copytree(exported, again)
    (again / "model.onnx").write_bytes(b"an older graph")
    code, _, err = run(capsys, "export", again, "--overwrite", "--progress", "none")
    assert code == 0, err
    assert sorted(p.name for p in again.iterdir()) == [
        "model.json", "model.onnx", "weights.safetensors",
    ]  # fmt: skip
    assert read_card(again / "model.json").onnx["sha256"] == file_sha256(again / "model.onnx")


def test_a_package_without_graph_cannot_use_an_onnx_runtime(tmp_path, capsys):
    output = tmp_path / "o.tif"
    code, _, err = run(
        capsys, "segment", SAMPLE, output, "--model", BUNDLED, "--runtime", "openvino"
    )
    if read_card(BUNDLED / "model.json").onnx is not None:
        assert code == 0, err  # the bundled package ships its graph
    else:
        assert code == 2 and "has no ONNX graph ('crossearth export' adds one)" in err


def test_a_light_environment_without_torch_segments(exported, tmp_path, capsys, light_python):
    python = light_python
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)}
    probe = subprocess.run([str(python), "-c", "import torch"], capture_output=True, env=env)
    assert probe.returncode != 0  # really without PyTorch
    output = tmp_path / "light.tif"
    done = subprocess.run(
        [str(python), "-m", "engine.cli", "segment", str(SAMPLE), str(output), "--model",
         str(exported), "--progress", "json"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["device"] == "cpu (onnxruntime)"
    _, classes, _ = segment(capsys, exported, tmp_path / "torch.tif", "--runtime", "torch")
    with rasterio.open(output) as light:
        assert np.array_equal(light.read(1), classes)
    # What needs PyTorch says so in one line.
    refused = subprocess.run(
        [str(python), "-m", "engine.cli", "convert", "a.pth", "out", "--preset", "d2m-rein"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "needs torch, which this engine environment does not have" in refused.stderr
    copy = tmp_path / "no-graph"
    shutil.copytree(BUNDLED, copy)
    before = sorted(p.name for p in copy.iterdir())
    refused = subprocess.run(
        [str(python), "-m", "engine.cli", "export", str(copy), "--progress", "none"],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "'export' needs torch, which this engine environment" in refused.stderr
    assert sorted(p.name for p in copy.iterdir()) == before  # no graph, no temporary left


FAST = Path(__file__).resolve().parents[2] / "resources" / "models" / "crossearth-landsat-lc-fast"
SAMPLE = (
    Path(__file__).resolve().parents[2] / "resources" / "samples" / "raleigh_landsat7_sample.tif"
)
IMPORTED_AFTER = """
import runpy, sys
sys.argv = ["crossearth", *sys.argv[1:]]
try:
    runpy.run_module("engine.cli", run_name="__main__")
except SystemExit as exit:
    code = exit.code
print("IMPORTED", "torch" in sys.modules, "timm" in sys.modules, code, file=sys.stderr)
"""


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_an_onnx_job_in_a_full_environment_imports_neither_torch_nor_timm(tmp_path, runtime):
    """PyTorch is installed here; a job on an ONNX runtime must not pay for it anyway."""
    pytest.importorskip(runtime)
    args = [str(SAMPLE), str(tmp_path / "out.tif"), "--model", str(FAST), "--runtime", runtime]
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED_AFTER, "segment", *args, "--progress", "none"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert "IMPORTED False False 0" in done.stderr, done.stderr
    assert (tmp_path / "out.tif").exists()
