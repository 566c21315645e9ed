"""What the plugin hands the worker and what it cleans up after one: command lines that keep
values starting with '-' as values (coordinates west of Greenwich), removal of exactly the
temporaries a killed worker announced, and replacing an output only when that was confirmed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from osgeo import gdal, osr
from qgis.core import Qgis, QgsProcessingException

from crossearth_qgis.dock import panel as dock_module
from crossearth_qgis.environment.engine_env import Interpreter
from crossearth_qgis.worker.client import HOST_MARK, SCRATCH_PREFIX, TEMP_PREFIX, run_engine
from crossearth_qgis.worker.engine_errors import EngineCancelled, EngineError, analyst_message
from crossearth_qgis.worker.requests import ConvertRequest, FineTuneRequest, SegmentRequest

from .conftest import (
    CLASSES,
    ENGINE_PYTHON,
    MODEL_NAME,
    REPO,
    bar_messages,
    fresh_qgis_config,
    qgis_process,
    qgis_process_env,
    wait_for,
)

RALEIGH = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"
# 64 x 64 px of the Raleigh Landsat sample in lon/lat: everything here has XMIN < 0.
WEST = (-78.748, 35.773, -78.728, 35.793)

# Parses command lines with the engine's own parser, in the engine's interpreter (the test
# process hosts QGIS and imports no engine code, like QGIS itself).
PARSE = """
import contextlib, io, json, sys
from engine.cli import build_parser
answers = []
for argv in json.load(sys.stdin):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parsed = vars(build_parser().parse_args(argv))
    except SystemExit:
        answers.append({"error": err.getvalue()})
        continue
    answers.append(parsed)
print(json.dumps(answers, default=str))  # paths as text
"""


def engine_parse(*argvs: list[str]) -> list[dict]:
    done = subprocess.run(
        [ENGINE_PYTHON, "-c", PARSE],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    for argv, answer in zip(argvs, answers, strict=True):
        assert "error" not in answer, f"{argv}: {answer['error']}"
    return answers


def checksums(folder: Path) -> dict[str, str]:
    """Every file and folder below `folder` (relative name -> content hash or 'dir')."""
    found = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            found[name] = f"link to {os.readlink(path)}"
        elif path.is_dir():
            found[name] = "dir"
        else:
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


# --- 1. command lines ---------------------------------------------------------------------


def test_values_starting_with_a_dash_reach_the_engine_as_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("-in.tif", "-ckpt.pth", "-config.py", "-labels.tif"):
        Path(name).touch()
    here = str(tmp_path)
    segment = SegmentRequest(
        "-in.tif",
        "-out.tif",
        model="-model",
        bands=[3, 2, 1],
        confidence="-conf.tif",
        polygons="-poly.gpkg",
        extent=(-78.9, 35.7, -78.6, 35.9),
    )
    missing_input = SegmentRequest("-not-here.tif", "/data/out.tif")
    convert = ConvertRequest(
        "-ckpt.pth", "-package", mmseg_config="-config.py", name="-named", classes=["-a", "b"]
    )
    train = FineTuneRequest(
        "-in.tif",
        "-package",
        base="-model",
        labels="-labels.tif",
        classes=["-a", "b"],
        label_map="-9999=ignore,1=-a,2=b",
        bands=[3, 2, 1],
        lr=-0.5,  # nonsense for training, but the parser must hand it over as a number
        name="-tuned",
        teacher="-teacher",
        distill_weight=2.5,
    )
    train_polygons = FineTuneRequest("/d/i.tif", "/d/p", polygons="/d/l.gpkg", class_field="-c")
    seg, seg_missing, conv, tr, tr_polygons = engine_parse(
        segment.args(), missing_input.args(), convert.args(), train.args(), train_polygons.args()
    )

    assert seg["command"] == "segment"
    assert seg["input"] == f"{here}/-in.tif" and seg["output"] == f"{here}/-out.tif"
    assert tuple(float(v) for v in seg["extent"].split(",")) == (-78.9, 35.7, -78.6, 35.9)
    assert seg["model"] == "-model"  # an installed name stays a name
    assert seg["bands"] == [3, 2, 1] and seg["progress"] == "json"
    assert seg["confidence"] == f"{here}/-conf.tif" and seg["polygons"] == f"{here}/-poly.gpkg"
    assert seg["overwrite"] is False
    # Not a file here, but a positional that starts with '-' can only be a file name.
    assert seg_missing["input"] == f"{here}/-not-here.tif"

    assert conv["command"] == "convert"
    assert conv["checkpoint"] == f"{here}/-ckpt.pth" and conv["output"] == f"{here}/-package"
    assert conv["mmseg_config"] == f"{here}/-config.py"
    assert conv["name"] == "-named" and conv["classes"] == "-a,b"
    assert conv["overwrite"] is False

    assert tr["command"] == "train"
    assert tr["image"] == [f"{here}/-in.tif"] and tr["labels"] == [f"{here}/-labels.tif"]
    assert tr["output"] == f"{here}/-package" and tr["base"] == "-model"
    assert tr["label_map"] == "-9999=ignore,1=-a,2=b" and tr["classes"] == "-a,b"
    assert tr["bands"] == "3,2,1" and tr["name"] == "-tuned" and tr["lr"] == -0.5
    assert tr["progress"] == "json" and tr["overwrite"] is False
    assert tr["teacher"] == "-teacher" and tr["distill_weight"] == 2.5
    assert tr_polygons["polygons"] == ["/d/l.gpkg"] and tr_polygons["class_field"] == "-c"

    # Replacing is asked for only when the analyst confirmed it.
    for request in (segment, convert, train):
        request.overwrite = True
    answers = engine_parse(segment.args(), convert.args(), train.args())
    assert [a["overwrite"] for a in answers] == [True, True, True]


def test_overwrite_in_engine_messages_is_said_in_plain_words():
    # Worded from the code and the fields; the CLI's message (with its flags) is not read.
    cli = "crossearth: ... pass --overwrite ..."
    fields = {"path": "/d/p", "choose": "choose another name", "option": "overwrite"}
    assert analyst_message("package.exists", fields, cli) == (
        "/d/p already exists; remove it, choose another name or confirm replacing it."
    )
    fields = {"what": "output", "path": "/d/o.tif", "option": "overwrite"}
    assert analyst_message("output.exists", fields, cli) == (
        "Output /d/o.tif already exists; confirm replacing it, or choose another name."
    )


# --- 2. west of Greenwich, end to end -------------------------------------------------------


@pytest.fixture(scope="module")
def west_raster(tmp_path_factory) -> Path:
    """A real-looking lon/lat (EPSG:4326) GeoTIFF, red/green/blue, 64 x 64 px at Raleigh, NC."""
    folder = tmp_path_factory.mktemp("west")
    gdal.Warp(
        str(folder / "warped.tif"),
        str(RALEIGH),
        dstSRS="EPSG:4326",
        outputBounds=WEST,
        width=64,
        height=64,
        resampleAlg="near",
    )  # not kept: the dataset is written and closed here
    target = folder / "raleigh_wgs84.tif"
    gdal.Translate(str(target), str(folder / "warped.tif"), bandList=[3, 2, 1])
    (folder / "warped.tif").unlink()
    values = gdal.Open(str(target)).ReadAsArray()
    assert values.shape == (3, 64, 64) and values.min() > 0  # no nodata: all land cover
    return target


def assert_west_result(path: Path, extent: tuple[float, ...], size: tuple[int, int]) -> np.ndarray:
    dataset = gdal.Open(str(path))
    assert (dataset.RasterXSize, dataset.RasterYSize) == size
    crs = osr.SpatialReference(wkt=dataset.GetProjection())
    crs.AutoIdentifyEPSG()
    assert crs.GetAuthorityCode(None) == "4326"
    x0, dx, _, y0, _, dy = dataset.GetGeoTransform()
    assert x0 == pytest.approx(extent[0], abs=1e-9) and y0 == pytest.approx(extent[3], abs=1e-9)
    assert dx == pytest.approx(0.0003125) and dy == pytest.approx(-0.0003125)
    values = dataset.GetRasterBand(1).ReadAsArray()
    assert values.max() < len(CLASSES)  # every pixel is one of the model's classes
    return values


def test_segment_west_of_greenwich_through_the_request(west_raster, tmp_path):
    output = tmp_path / "west.tif"
    request = SegmentRequest(str(west_raster), str(output), model=MODEL_NAME, extent=WEST)
    assert request.args()[-1] == "--extent=-78.748,35.773,-78.728,35.793"
    outcome = run_engine(request.args())
    values = assert_west_result(output, WEST, (64, 64))
    counts = np.bincount(values.ravel(), minlength=len(CLASSES))
    names = [name for name, _ in CLASSES]
    assert outcome.done["classes"] == dict(zip(names, counts.tolist(), strict=True))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary


def test_segment_west_of_greenwich_through_qgis_process(west_raster, tmp_path):
    env = qgis_process_env(fresh_qgis_config(tmp_path / "profile"))
    qgis_process(["plugins", "enable", "crossearth_qgis"], env)
    output = tmp_path / "out" / "west_half.tif"
    output.parent.mkdir()
    xmin, ymin, _, ymax = WEST
    half = (xmin, ymin, -78.738, ymax)  # the western half: 32 x 64 px
    answer = qgis_process(
        [
            "run",
            "crossearth:segmentraster",
            "--json",
            "--",
            f"INPUT={west_raster}",
            f"MODEL={MODEL_NAME}",
            f"EXTENT={half[0]!r},{half[2]!r},{half[1]!r},{half[3]!r} [EPSG:4326]",
            f"OUTPUT={output}",
        ],
        env,
    )
    result = json.loads(answer[answer.index("{") :])
    assert result["results"]["OUTPUT"] == str(output)
    assert_west_result(output, half, (32, 64))
    assert not [p.name for p in output.parent.iterdir() if p.name.startswith(".")]


# --- 3. exactly the announced temporaries ---------------------------------------------------

# A stand-in engine worker: announces temporaries the way engine/cli.py does, creates them,
# then crashes, hangs or finishes as told. It ignores SIGTERM, like a worker stuck in a
# library call, so a cancel has to kill it.
FAKE_WORKER = """
import hashlib, json, os, signal, socket, sys, time
from pathlib import Path
args = sys.argv[sys.argv.index("engine.cli") + 1:]
mode, folder, names = args[0], Path(args[1]), args[2:]
# {run}: this worker's mark, as engine/files.py puts it in its temporaries' names
host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
names = [n.replace("{run}", f"{host}p{os.getpid()}") for n in names]
signal.signal(signal.SIGTERM, signal.SIG_IGN)
for name in names:
    kind, _, name = name.partition(":")
    path = folder / name
    print(json.dumps({"event": "temporary", "path": str(path)}), flush=True)
    if kind == "dir":
        path.mkdir()
        (path / "part.gpkg").write_text("partial")
    elif kind == "link":
        path.symlink_to(folder / "keep.txt")
    elif kind == "file":
        path.write_text("partial")
if mode == "publish":
    os.replace(folder / names[0].partition(":")[2], folder / "published.tif")
    print(json.dumps({"event": "done"}), flush=True)
    sys.exit(0)
print(json.dumps({"event": "progress", "fraction": 0.5, "message": "tile 1/2"}), flush=True)
if mode == "crash":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(120)
"""


@pytest.fixture
def fake_interpreter(tmp_path_factory) -> Interpreter:
    """An 'interpreter' that runs FAKE_WORKER for `-m engine.cli ...`."""
    folder = tmp_path_factory.mktemp("fake")
    (folder / "worker.py").write_text(FAKE_WORKER)
    python = folder / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{folder / "worker.py"}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return Interpreter(python, "test")


def unrelated_files(folder: Path) -> None:
    """Files beside the outputs that the old pattern `.{stem}.*` would have matched, and
    another run's temporary: none of them was announced, so none may go."""
    for name in (".data.json", ".a1", ".a1.txt", ".x.txt", "[x].tif", "keep.txt"):
        (folder / name).write_text(name)
    for name in (".abc", ".abc.d"):
        (folder / name).mkdir()
        (folder / name / "inside.txt").write_text("keep")
    # a job still running (this process) and a look-alike without a run mark
    (folder / f"{TEMP_PREFIX}{HOST_MARK}p{os.getpid()}-00000000-other-run.tif").write_text("x")
    (folder / f"{TEMP_PREFIX}00000000-other-run.tif").write_text("someone else's")


ANNOUNCED = [
    f"file:{TEMP_PREFIX}{{run}}-1a2b3c4d-data.tif",
    f"file:{TEMP_PREFIX}{{run}}-1a2b3c4d-data.tif.aux.xml",
    f"file:{TEMP_PREFIX}{{run}}-5e6f7a8b-a*.tif",
    f"file:{TEMP_PREFIX}{{run}}-9c0d1e2f-[x].tif",
    f"dir:{TEMP_PREFIX}{{run}}-3a4b5c6d-[x]_classes.gpkg",
    f"link:{TEMP_PREFIX}{{run}}-7e8f9a0b-a*_confidence.tif",
    f"none:{TEMP_PREFIX}{{run}}-0f0f0f0f-never-created.tif",
    # Announced (not written) but not named like an engine temporary: never removed.
    "none:.data.json",
    # Announced, and named like another run's temporary (one still running, a look-alike).
    f"none:{TEMP_PREFIX}{HOST_MARK}p{os.getpid()}-00000000-other-run.tif",
    f"none:{TEMP_PREFIX}00000000-other-run.tif",
]


@pytest.mark.parametrize("how", ["cancel", "crash", "timeout"])
def test_a_killed_worker_loses_exactly_its_announced_temporaries(fake_interpreter, tmp_path, how):
    unrelated_files(tmp_path)
    before = checksums(tmp_path)
    args = ["cancel" if how == "timeout" else how, str(tmp_path), *ANNOUNCED]
    started = threading.Event()
    expected = EngineCancelled if how == "cancel" else EngineError
    with pytest.raises(expected) as caught:
        run_engine(
            args,
            interpreter=fake_interpreter,
            on_progress=lambda fraction, message: started.set(),
            is_cancelled=started.is_set if how == "cancel" else None,
            timeout_s=3.0 if how == "timeout" else None,
            terminate_grace_s=0.0,  # SIGTERM is ignored: the worker is killed at once
        )
    assert started.is_set()  # it got as far as writing
    if how == "crash":
        assert "stopped by the system (signal 9)" in str(caught.value)
    if how == "timeout":
        assert "did not answer in time" in str(caught.value)
    # Every announced temporary is gone; everything else is as it was, byte for byte (the
    # link was removed, not the file it pointed to; .data.json was announced but is no
    # temporary of the engine's, so it stays).
    assert checksums(tmp_path) == before


def test_a_finished_worker_keeps_its_output(fake_interpreter, tmp_path):
    unrelated_files(tmp_path)
    before = checksums(tmp_path)
    outcome = run_engine(
        ["publish", str(tmp_path), f"file:{TEMP_PREFIX}{{run}}-1a2b3c4d-published.tif"],
        interpreter=fake_interpreter,
    )
    assert outcome.done == {"event": "done"}
    assert (tmp_path / "published.tif").read_text() == "partial"
    after = checksums(tmp_path)
    del after["published.tif"]
    assert after == before


def test_a_real_worker_killed_mid_write_leaves_nothing(rasters, tmp_path, monkeypatch):
    """The real engine, killed with SIGKILL (no time to unwind) while it writes its outputs:
    what it announced is removed; the unrelated files beside the outputs stay."""
    from crossearth_qgis.worker import client as worker

    removed: list[list[Path]] = []
    real_remove = worker.remove_announced_temporaries

    def spy(paths):
        removed.append(real_remove(paths))
        return removed[-1]

    monkeypatch.setattr(worker, "remove_announced_temporaries", spy)
    unrelated_files(tmp_path)
    before = checksums(tmp_path)
    # Stride 8 px: about 70 tiles of 128 px, one per batch, so the job is still running.
    request = SegmentRequest(
        str(rasters["rgb"]),
        str(tmp_path / "data.tif"),
        model=MODEL_NAME,
        overlap=120,
        batch=1,
        polygons=str(tmp_path / "a*.gpkg"),
        confidence=str(tmp_path / "[x].tif.conf.tif"),
    )
    cancel = threading.Event()
    with pytest.raises(EngineCancelled):
        run_engine(
            request.args(),
            on_progress=lambda f, message: message.startswith("tile ") and cancel.set(),
            is_cancelled=cancel.is_set,
            terminate_grace_s=0.0,
        )
    assert cancel.is_set()
    # The killed worker could not clean up: the plugin removed its announced temporaries.
    assert removed, "the worker was not stopped mid-run"
    beside = [p for p in removed[0] if p.parent == tmp_path]
    assert beside, "the engine announced no temporary beside its outputs"
    assert all(p.name.startswith(TEMP_PREFIX) for p in beside)
    assert all(p.name.startswith((TEMP_PREFIX, SCRATCH_PREFIX)) for p in removed[0])
    assert checksums(tmp_path) == before


# --- 4. replacing only what the analyst confirmed -------------------------------------------


def test_processing_replaces_an_output_it_was_given(provider, west_raster, tmp_path, caplog):
    import logging

    import processing

    caplog.set_level(logging.INFO, logger="crossearth_qgis.worker.client")
    output = tmp_path / "existing.tif"
    gdal.Translate(str(output), str(west_raster), bandList=[1], srcWin=[0, 0, 8, 8])
    source_before = hashlib.sha256(west_raster.read_bytes()).hexdigest()
    processing.run(
        "crossearth:segmentraster",
        {"INPUT": str(west_raster), "MODEL": MODEL_NAME, "OUTPUT": str(output)},
    )
    [command] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("running")]
    assert command.endswith("--overwrite")
    assert_west_result(output, WEST, (64, 64))  # the new result replaced the old file
    assert hashlib.sha256(west_raster.read_bytes()).hexdigest() == source_before  # input kept


def test_fine_tune_does_not_replace_a_model_nobody_chose(provider, engine_fixtures, west_raster):
    import processing

    user_models = engine_fixtures / "models"
    existing = user_models / "already-here"
    shutil.copytree(engine_fixtures / "extra" / "tiny-buildings", existing)
    before = checksums(existing)
    try:
        with pytest.raises(QgsProcessingException, match="A model named 'already-here' already"):
            processing.run(
                "crossearth:finetune",
                {
                    "BASE": MODEL_NAME,
                    "INPUT": str(west_raster),
                    "LABELS": str(west_raster),
                    "NAME": "already-here",
                    "STEPS": 1,
                },
            )
        assert checksums(existing) == before
    finally:
        shutil.rmtree(existing)


@pytest.fixture
def dock(dock):
    """The shared dock on the CPU: an earlier test may have left CUDA as the saved choice."""
    dock.form.device_combo.setCurrentIndex(dock.form.device_combo.findData("cpu"))
    assert dock.form.device_combo.currentData() == "cpu"
    return dock


def _answer(monkeypatch, answer) -> list[str]:
    """Stands in for the dock's QMessageBox.question; records what it was asked."""
    asked: list[str] = []

    def question(parent, title, text, buttons, default):
        asked.append(text)
        assert default == dock_module.QMessageBox.No  # Enter must not replace anything
        return answer

    monkeypatch.setattr(dock_module.QMessageBox, "question", staticmethod(question))
    return asked


def test_dock_replaces_an_existing_output_only_when_confirmed(
    dock, add_raster, west_raster, tmp_path, monkeypatch
):
    dock.form.layer_combo.setLayer(add_raster(west_raster, "raleigh"))
    output = tmp_path / "raleigh_classes.tif"
    dock.form.output_widget.setFilePath(str(output))
    dock.form.confidence_check.setChecked(True)
    output.write_text("an older result")
    confidence = tmp_path / "raleigh_classes_confidence.tif"
    confidence.write_text("an older confidence")
    before = checksums(tmp_path)

    asked = _answer(monkeypatch, dock_module.QMessageBox.No)
    assert dock.task is None
    assert dock.segment() is None
    assert asked, (
        dock.form.status_label.text(),
        dock.iface.messageBar().get_messages(Qgis.Critical),
    )
    assert str(output) in asked[0] and str(confidence) in asked[0]
    assert dock.task is None and dock.form.run_button.isEnabled()
    assert dock.form.status_label.text() == "Not started: the existing output was kept."
    assert checksums(tmp_path) == before

    asked = _answer(monkeypatch, dock_module.QMessageBox.Yes)
    task = dock.segment()
    assert task is not None and "--overwrite" in task.args
    wait_for(lambda: dock.task is None, 240, "the segmentation task")
    assert task.error is None, task.error
    assert_west_result(output, WEST, (64, 64))
    assert gdal.Open(str(confidence)).RasterCount == 1


def test_dock_passes_no_overwrite_for_new_files(dock, add_raster, west_raster, tmp_path):
    dock.form.layer_combo.setLayer(add_raster(west_raster, "raleigh"))
    dock.form.output_widget.setFilePath(str(tmp_path / "new.tif"))
    assert not dock.form.output_widget.confirmOverwrite()  # the dock asks itself, once
    request = dock.build_request().request
    assert "--overwrite" not in request.args()


def test_dock_default_output_is_a_new_name(dock, add_raster, west_raster, tmp_path, monkeypatch):
    class TempFolder:
        @staticmethod
        def tempFolder() -> str:
            return str(tmp_path)

    # The module the dock's class lives in now (the plugin lifecycle tests reload it).
    module = sys.modules[type(dock).__module__]
    monkeypatch.setattr(module, "QgsProcessingUtils", TempFolder)
    clock = SimpleNamespace(strftime=lambda fmt: "20240102_030405")
    monkeypatch.setattr(module, "time", clock)
    dock.form.layer_combo.setLayer(add_raster(west_raster, "raleigh"))
    dock.form.output_widget.setFilePath("")
    stem = f"raleigh_{MODEL_NAME}_20240102_030405"
    (tmp_path / f"{stem}.tif").write_text("earlier run")
    (tmp_path / f"{stem}_2_classes.gpkg").write_text("earlier run")
    request = dock.build_request().request
    assert request.output == str(tmp_path / f"{stem}_3.tif")
    assert not any(path.exists() for path in request.outputs())


@pytest.mark.full_engine
def test_dock_conversion_keeps_an_existing_package_unless_confirmed(
    dock, engine_fixtures, monkeypatch
):
    user_dir = Path(dock.models.catalog.user_dir)
    existing = user_dir / "converted-again"
    shutil.copytree(engine_fixtures / "extra" / "tiny-buildings", existing)
    before = checksums(existing)
    request = ConvertRequest(
        checkpoint=str(engine_fixtures / "tiny.pth"),
        output=str(existing),
        preset=None,
        mmseg_config=str(REPO / "tests" / "fixtures" / "tiny_mmseg_config.py"),
        classes=["sea", "town", "forest"],
        name="converted-again",
    )
    try:
        asked = _answer(monkeypatch, dock_module.QMessageBox.No)
        assert dock.models.convert_checkpoint(request) is None
        assert asked and str(existing) in asked[0]
        assert checksums(existing) == before and not dock.models.query_tasks

        _answer(monkeypatch, dock_module.QMessageBox.Yes)
        task = dock.models.convert_checkpoint(request)
        assert task is not None and task.args[-1] == "--overwrite"
        wait_for(lambda: task not in dock.models.query_tasks, 240, "the conversion")
        assert task.error is None, task.error
        card = json.loads((existing / "model.json").read_text())
        assert [c["name"] for c in card["classes"]] == ["sea", "town", "forest"]
        assert any("Checkpoint converted" in m for m in bar_messages(dock.iface, Qgis.Success))
    finally:
        shutil.rmtree(existing, ignore_errors=True)


def test_the_plugin_reads_the_engine_s_temporary_names(tmp_path):
    """The plugin's copy of the run mark (it may not import the engine) names the engine's
    temporaries as the engine does: a killed worker's are removed, a running one's are not."""
    from crossearth_qgis.worker import client

    made = subprocess.run(
        [
            ENGINE_PYTHON,
            "-c",
            "import sys; from pathlib import Path; from engine.files import temporary_name; "
            "print(temporary_name(Path(sys.argv[1])))",
            str(tmp_path / "out.tif"),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    name = Path(made.stdout.strip()).name
    assert name.startswith(f"{TEMP_PREFIX}{HOST_MARK}p")
    assert client._run_is_over(name, TEMP_PREFIX)  # the process that made it has exited
    mine = client.temporary_name(tmp_path / "out.tif").name
    assert not client._run_is_over(mine, TEMP_PREFIX)  # this process is still running
