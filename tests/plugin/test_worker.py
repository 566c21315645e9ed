"""The worker protocol from the plugin's side: real engine subprocesses, progress, errors,
cancel; plus the ETA and the plain-language messages."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from crossearth_qgis.environment.engine_env import Interpreter
from crossearth_qgis.worker.client import run_engine
from crossearth_qgis.worker.engine_errors import (
    EngineCancelled,
    EngineError,
    analyst_message,
    reported_error,
    sentence,
)
from crossearth_qgis.worker.eta import EtaEstimator, format_eta
from crossearth_qgis.worker.requests import SegmentRequest

from .conftest import MODEL_NAME, assert_plain


def hidden_leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".")]


def test_segment_reports_progress_and_a_summary(rasters, tmp_path):
    events: list[tuple[float, str]] = []
    request = SegmentRequest(str(rasters["rgb"]), str(tmp_path / "classes.tif"), model=MODEL_NAME)
    outcome = run_engine(request.args(), on_progress=lambda f, m: events.append((f, m)))

    fractions = [f for f, _ in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(m.startswith("tile ") for _, m in events)
    done = outcome.done
    assert done["output"] == str(tmp_path / "classes.tif")
    assert set(done["classes"]) == {"water", "built-up", "vegetation"}
    assert sum(done["classes"].values()) == 200 * 170
    assert done["tiles"] == 4 and done["device"] in ("cpu", "cpu (onnxruntime)")
    assert (tmp_path / "classes.tif").is_file()


def test_engine_errors_arrive_as_plain_sentences(rasters, tmp_path):
    request = SegmentRequest(str(rasters["six_band"]), str(tmp_path / "x.tif"), model=MODEL_NAME)
    with pytest.raises(EngineError) as caught:
        run_engine(request.args())
    message = str(caught.value)
    # The engine said "...pass --bands, e.g. --bands 1,2,3"; the analyst reads the setting,
    # worded from the error's code and fields.
    assert message.startswith("Cannot tell which of the raster's 6 bands")
    assert "set Bands to 1,2,3" in message
    assert_plain(message)
    assert caught.value.code == "input.bands_ambiguous"
    assert caught.value.fields["suggestion"] == "1,2,3" and caught.value.fields["count"] == 6
    assert "crossearth:" in caught.value.details  # the raw stderr is kept for the log
    assert not (tmp_path / "x.tif").exists()


def test_cancel_terminates_the_worker_and_leaves_no_file(rasters, tmp_path):
    output = tmp_path / "cancelled.tif"
    # Stride 8 px: about 70 tiles of 128 px, one per batch, so the job is still running.
    request = SegmentRequest(
        str(rasters["rgb"]), str(output), model=MODEL_NAME, overlap=120, batch=1
    )
    cancel = threading.Event()
    seen: list[str] = []

    def progress(fraction: float, message: str) -> None:
        seen.append(message)
        if message.startswith("tile "):
            cancel.set()

    with pytest.raises(EngineCancelled):
        run_engine(request.args(), on_progress=progress, is_cancelled=cancel.is_set)
    assert any(m.startswith("tile ") for m in seen)
    assert not output.exists()
    assert hidden_leftovers(tmp_path) == []


def test_an_interpreter_without_torch_is_an_environment_problem(rasters, tmp_path):
    system_python = Path("/usr/bin/python3")
    request = SegmentRequest(str(rasters["rgb"]), str(tmp_path / "x.tif"), model=MODEL_NAME)
    with pytest.raises(EngineError) as caught:
        run_engine(request.args(), interpreter=Interpreter(system_python, "settings"))
    message = str(caught.value)
    if "No module named" not in caught.value.details:
        pytest.skip("the system Python has every engine module here")
    assert message.startswith("The CrossEarth engine environment is missing")
    assert "Set up engine environment" in message
    assert_plain(message)


def test_eta_starts_with_the_first_tile_and_counts_down():
    now = [100.0]
    eta = EtaEstimator(clock=lambda: now[0])
    assert eta.update(0.0) is None  # loading the model says nothing about the speed
    now[0] = 130.0
    assert eta.update(0.1) is None  # first tile: the clock starts here
    now[0] = 140.0
    assert eta.update(0.3) == pytest.approx(35.0)  # 0.2 per 10 s, 0.7 to go
    now[0] = 150.0
    assert eta.update(0.5) == pytest.approx(25.0)
    assert eta.update(1.0) is None
    assert format_eta(35.0) == "about 35 s left"
    assert format_eta(600) == "about 10 min left"
    assert format_eta(4000) == "about 1 h 7 min left"


def test_plain_words_for_engine_messages_come_from_code_and_fields():
    # The CLI's wording is never read for a known code: only the code and the fields count.
    reason = "CUDA is not available (torch 2.1, no usable NVIDIA GPU/driver)"
    fields = {"device": "cuda", "reason": reason, "option": "device"}
    assert analyst_message("device.unavailable", fields, "ignored") == (
        "Device 'cuda' requested but CUDA is not available (torch 2.1, no usable NVIDIA "
        "GPU/driver); choose the device cpu or auto."
    )
    fields = {"option": "bands", "value": [1, 2], "wanted": ["red", "green", "blue"]}
    assert analyst_message("input.bands_count", fields, "ignored") == (
        "Bands lists 2 band(s) but the model takes 3 (red, green, blue); list one source band "
        "per model input."
    )
    fields = {"name": "potsdam", "folder": "/m", "option": "overwrite"}
    assert analyst_message("model.installed", fields, "ignored") == (
        "'potsdam' is already installed in /m; confirm replacing it with a new download."
    )
    # An unknown code, or a known one without its fields (another engine version): the
    # engine's message, without the CLI's prefix, as a sentence.
    assert analyst_message("input.read", {}, "crossearth: cannot read x.tif") == (
        "Cannot read x.tif."
    )
    assert analyst_message("output.exists", {}, "crossearth: out.tif exists") == ("Out.tif exists.")
    assert sentence("crossearth: done already.") == "Done already."


def test_a_reported_error_event_becomes_an_engine_error_with_its_code_and_fields():
    event = {
        "event": "error",
        "code": "workers.gpus",
        "message": "--workers 4 needs 4 GPUs but this machine has 1; use --workers 1 (or auto)",
        "fields": {"option": "workers", "value": 4, "gpus": 1},
    }
    error = reported_error(event, ["crossearth: --workers 4 needs 4 GPUs"], "stderr")
    assert isinstance(error, EngineError) and error.details == "stderr"
    assert error.code == "workers.gpus" and error.fields == event["fields"]
    assert str(error) == (
        "4 workers need 4 GPUs but this machine has 1; set Workers to 1 (or auto), or choose "
        "the device cpu."
    )
    assert_plain(str(error))
    # Without an event (an argparse usage error): the stderr line, generic code.
    error = reported_error(None, ["usage: ...", "crossearth segment: error: bad --tile"], "")
    assert error.code == "" and str(error) == "Bad --tile."


def test_segment_request_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("in.tif").touch()
    request = SegmentRequest(
        "in.tif",
        "out.tif",
        model="m",
        device="cuda:1",
        tile=256,
        overlap=0,
        batch=2,
        bands=[3, 2, 1],
        confidence="c.tif",
        polygons="p.gpkg",
        extent=(1.0, 2.0, 3.5, 4.0),
    )
    # The worker runs in the engine's folder: local paths become absolute, a model name and
    # GDAL connection strings stay as they are.
    # Every option is one "--name=value" word, so a value starting with '-' stays a value.
    here = str(tmp_path)
    assert request.args() == [
        "segment", f"{here}/in.tif", f"{here}/out.tif", "--progress=json", "--model=m",
        "--device=cuda:1", "--batch=2", "--tile=256", "--overlap=0", "--bands=3,2,1",
        f"--confidence={here}/c.tif", f"--polygons={here}/p.gpkg", "--extent=1.0,2.0,3.5,4.0",
    ]  # fmt: skip
    assert "--overwrite" not in request.args()  # only once the analyst confirmed it
    assert [p.name for p in request.outputs()] == ["out.tif", "c.tif", "p.gpkg"]
    remote = SegmentRequest("/vsicurl/https://example.org/a.tif", "o.tif")
    assert remote.args()[1] == "/vsicurl/https://example.org/a.tif"


def test_segment_request_resolution_and_post_processing_options():
    request = SegmentRequest(
        "/d/in.tif",
        "/d/out.tif",
        gsd="0.5",
        output_grid="model",
        min_region="2000m2",
        keep_classes=["water", "built-up"],
        simplify=2.5,
    )
    assert request.args()[-5:] == [
        "--gsd=0.5", "--output-grid=model", "--min-region=2000m2",
        "--keep-classes=water,built-up", "--simplify=2.5",
    ]  # fmt: skip
    # Left unset, the engine's defaults apply (auto GSD, the source grid, no sieve).
    assert not any(
        a.startswith(("--gsd", "--output-grid", "--min-region", "--keep", "--simplify"))
        for a in SegmentRequest("/d/in.tif", "/d/out.tif").args()
    )


def test_segment_request_workers_and_cluster():
    request = SegmentRequest(
        "/d/in.tif", "/d/out.tif", workers="2", cluster="ray://head:10001", overwrite=True
    )
    assert request.args()[-3:] == ["--workers=2", "--cluster=ray://head:10001", "--overwrite"]
    assert "--workers=auto" in SegmentRequest("/d/i.tif", "/d/o.tif", workers="auto").args()
    # Without them the engine runs in one process and never imports Ray.
    assert not any(
        a.startswith(("--workers", "--cluster"))
        for a in SegmentRequest("/d/in.tif", "/d/out.tif").args()
    )


def test_segment_request_runtime_and_the_engine_parses_it():
    from engine.cli import build_parser

    request = SegmentRequest("/d/in.tif", "/d/out.tif", runtime="onnxruntime")
    assert "--runtime=onnxruntime" in request.args()
    assert build_parser().parse_args(request.args()).runtime == "onnxruntime"
    # auto is the engine's default: not passed.
    plain = SegmentRequest("/d/i.tif", "/d/o.tif", runtime="auto").args()
    assert not any(a.startswith("--runtime") for a in plain)
    assert "--compile" not in plain
    assert not build_parser().parse_args(plain).compile
    compiled = SegmentRequest("/d/i.tif", "/d/o.tif", runtime="torch", compile=True).args()
    assert build_parser().parse_args(compiled).compile
