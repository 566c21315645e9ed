"""The crossearth command: segmenting, listing, and one clear line for every bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio

from engine.cli import main
from engine.models.architectures import register_architecture, unregister_architecture
from engine.models.packages import save_package

from .conftest import LANDSAT, PixelLinear, make_card, seeded, write_raster


@pytest.fixture
def package(tmp_path):
    register_architecture(
        "test-pixel-linear", lambda config, card: PixelLinear(3, card.num_classes), replace=True
    )
    card = make_card(
        num_classes=4, bands=("blue", "green", "red"), tile=64, stride=48, size_multiple=16
    )
    yield save_package(tmp_path / "pkg", card, seeded(PixelLinear(3, 4)).state_dict())
    unregister_architecture("test-pixel-linear")


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_segment_with_json_progress(tmp_path, capsys, package):
    out = tmp_path / "out.tif"
    code, stdout, err = run_cli(
        capsys,
        "segment",
        LANDSAT,
        out,
        "--model",
        package.path,
        "--bands",
        "1,2,3",
        "--progress",
        "json",
        "--confidence",
        tmp_path / "conf.tif",
        "--batch",
        "3",
        "--device",
        "cpu",
    )
    assert code == 0, err
    events = [json.loads(line) for line in stdout.splitlines()]
    assert events[-1]["event"] == "done"
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert sum(events[-1]["classes"].values()) == 352 * 349
    with rasterio.open(out) as dst:
        assert dst.count == 1 and dst.shape == (352, 349)
    assert (tmp_path / "conf.tif").exists()


def test_models_and_info(tmp_path, capsys, package, monkeypatch):
    monkeypatch.setenv("CROSSEARTH_MODELS_DIR", str(tmp_path))
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and "test-model" in out and "[user]" in out
    code, out, _ = run_cli(capsys, "info", "test-model")
    assert code == 0
    assert "class 3" in out and "blue, green, red" in out and "64 px, stride 48" in out
    code, out, _ = run_cli(capsys, "info", "test-model", "--json")
    assert json.loads(out)["tile"] == {"size": 64, "stride": 48}


def bad_inputs(tmp_path, package):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a raster")
    two_band = write_raster(tmp_path / "two.tif", np.zeros((2, 8, 8), np.uint8))
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    broken_pkg = tmp_path / "broken"
    broken_pkg.mkdir()
    (broken_pkg / "model.json").write_text("{}")
    (broken_pkg / "weights.safetensors").write_bytes(b"xx")
    model = ["--model", package.path, "--bands", "1,2,3"]
    return [
        (["segment", tmp_path / "missing.tif", tmp_path / "o.tif", *model], "does not exist"),
        (["segment", text_file, tmp_path / "o.tif", *model], "is not a raster GDAL can read"),
        (
            ["segment", two_band, tmp_path / "o.tif", "--model", package.path],
            "has 2 band(s) but the model needs 3",
        ),
        (["segment", LANDSAT, tmp_path / "nofolder" / "o.tif", *model], "does not exist; create"),
        (["segment", LANDSAT, readonly / "o.tif", *model], "is not writable"),
        (["segment", LANDSAT, LANDSAT, *model], "is the input raster"),
        (
            ["segment", LANDSAT, tmp_path / "o.tif", "--model", broken_pkg, "--bands", "1,2,3"],
            "missing field 'architecture'",
        ),
        (
            ["segment", LANDSAT, tmp_path / "o.tif", *model, "--tile", "40"],
            "tile size 40 cannot be used",
        ),
        (
            ["segment", LANDSAT, tmp_path / "o.tif", *model, "--tile", "64", "--overlap", "64"],
            "overlap 64 must be",
        ),
        (
            ["segment", LANDSAT, tmp_path / "o.tif", "--model", package.path, "--bands", "1,2,9"],
            "--bands 9 out of range",
        ),
        (
            ["segment", LANDSAT, tmp_path / "o.tif", "--model", package.path],
            "cannot tell which of the raster's 6 bands",
        ),
        (
            ["segment", LANDSAT, tmp_path / "o.tif", *model, "--scaling", "9,1"],
            "HIGH must be greater",
        ),
        (
            ["segment", LANDSAT, tmp_path / "o.tif", *model, "--device", "tpu"],
            "device 'tpu' is not valid",
        ),
        (
            ["segment", LANDSAT, tmp_path / "o.tif", *model, "--compile", "--runtime", "openvino"],
            "compiling applies to the PyTorch runtime, not openvino",
        ),
        (["info", tmp_path / "nothing-here"], "not found"),
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_readonly_folder_is_reported(tmp_path, capsys, package):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    code, _, err = run_cli(
        capsys, "segment", LANDSAT, readonly / "o.tif", "--model", package.path, "--bands", "1,2,3"
    )
    assert code == 2 and "is not writable" in err


def test_every_bad_input_gets_one_clear_line(tmp_path, capsys, package):
    for args, message in bad_inputs(tmp_path, package):
        if len(args) > 2 and "readonly" in str(args[2]) and os.geteuid() == 0:
            continue  # root may write anywhere; covered by the test above for normal users
        code, out, err = run_cli(capsys, *args)
        assert code == 2, (args, err)
        assert message in err, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("**/*.partial.tif"))
    assert not (tmp_path / "o.tif").exists()


def test_cuda_unavailable_message(tmp_path, capsys, package):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli(
        capsys,
        "segment",
        LANDSAT,
        tmp_path / "o.tif",
        "--model",
        package.path,
        "--bands",
        "1,2,3",
        "--device",
        "cuda",
    )
    assert code == 2 and "CUDA is not available" in err and "--device cpu" in err


def test_console_script_runs_without_traceback(tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "crossearth")
    result = subprocess.run(
        [script, "segment", str(tmp_path / "missing.tif"), str(tmp_path / "o.tif")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    help_text = subprocess.run([script, "segment", "--help"], capture_output=True, text=True)
    assert "--confidence" in help_text.stdout and "--bands" in help_text.stdout
