"""The "Segment layer" dock end to end: real rasters, a real tiny model, real worker processes."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
from osgeo import gdal
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsGeometry,
    QgsLayerTreeModel,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsPalettedRasterRenderer,
    QgsRasterLayer,
    QgsRasterSymbolLegendNode,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize, Qt, QTimer
from qgis.PyQt.QtGui import QColor, QImage

from crossearth_qgis import settings
from crossearth_qgis.dock.panel import (
    ADD_MODEL,
    ADD_MODEL_TEXT,
    AREA_CANVAS,
    AREA_SELECTION,
    GSD_NATIVE,
)
from crossearth_qgis.worker import engine_task
from crossearth_qgis.worker.requests import ConvertRequest

from .conftest import (
    CLASSES,
    ENGINE_PYTHON,
    MODEL_NAME,
    TINY_MMSEG_CONFIG,
    assert_plain,
    bar_messages,
    wait_for,
)

PIXEL = 28.5  # the Landsat sample's pixel size in metres


def run_dock(dock, timeout: float = 240.0):
    task = dock.segment()
    assert task is not None, bar_messages(dock.iface, Qgis.Critical)
    wait_for(lambda: dock.task is None, timeout, "the segmentation task")
    return task


def added_layers(project, kind=QgsRasterLayer) -> dict[str, object]:
    return {
        layer.name(): layer for layer in project.mapLayers().values() if isinstance(layer, kind)
    }


def legend_entries(project, layer) -> list[tuple[str, tuple[int, int, int]]]:
    """What the Layers panel shows under the layer: each entry's label and swatch colour."""
    model = QgsLayerTreeModel(project.layerTreeRoot())
    entries = []
    for node in model.layerLegendNodes(project.layerTreeRoot().findLayer(layer.id())):
        if not isinstance(node, QgsRasterSymbolLegendNode):
            continue  # the "Band 1" title
        swatch = node.data(Qt.DecorationRole).pixmap(16, 16).toImage()
        entries.append((node.data(Qt.DisplayRole), swatch.pixelColor(8, 8).getRgb()[:3]))
    return entries


def render(layer: QgsRasterLayer) -> QImage:
    """The layer drawn alone on a transparent background, one image pixel per raster pixel."""
    map_settings = QgsMapSettings()
    map_settings.setLayers([layer])
    map_settings.setDestinationCrs(layer.crs())
    map_settings.setExtent(layer.extent())
    map_settings.setOutputSize(QSize(layer.width(), layer.height()))
    map_settings.setBackgroundColor(QColor(0, 0, 0, 0))
    job = QgsMapRendererSequentialJob(map_settings)
    job.start()
    job.waitForFinished()
    return job.renderedImage()


def critical(dock) -> list[str]:
    return bar_messages(dock.iface, Qgis.Critical)


def test_dock_asks_the_engine_for_models_and_devices(qgis_iface, project, engine_check):
    from crossearth_qgis.dock.panel import CrossEarthDock

    dock = CrossEarthDock(qgis_iface, qgis_iface.mainWindow())
    try:
        dock.models.refresh_engine_info()
        wait_for(lambda: dock.models.catalog is not None and dock.models.devices is not None, 120)
        labels = [dock.form.model_combo.itemText(i) for i in range(dock.form.model_combo.count())]
        assert f"{MODEL_NAME} (user)" in labels
        assert labels[-1] == ADD_MODEL_TEXT
        assert dock.form.model_combo.itemData(dock.form.model_combo.count() - 1) == ADD_MODEL
        # Nothing chosen or saved yet: the bundled default model is preselected.
        assert dock.models.current_model().name == "crossearth-landsat-lc-fast"
        assert "crossearth-landsat-lc-fast (bundled, default)" in labels
        assert "crossearth-landsat-lc (bundled)" in labels
        dock.form.model_combo.setCurrentIndex(labels.index(f"{MODEL_NAME} (user)"))
        assert dock.models.current_model().name == MODEL_NAME
        assert "3 classes: water, built-up, vegetation" in dock.form.model_info.text()
        devices = [
            dock.form.device_combo.itemData(i) for i in range(dock.form.device_combo.count())
        ]
        expected = ["auto", "cpu"] + [d["id"] for d in engine_check["devices"] if d["id"] != "cpu"]
        assert devices == expected
        for device in engine_check["devices"][1:]:  # each GPU is listed by its name
            index = dock.form.device_combo.findData(device["id"])
            assert device["name"] in dock.form.device_combo.itemText(index)
        # Workers (sharded runs) only when the engine environment has Ray.
        assert dock.form.workers_combo.isHidden() == (not engine_check.get("ray"))
    finally:
        dock.shutdown()
        dock.deleteLater()


def test_a_complete_class_raster_is_loaded_when_the_polygons_fail(
    dock, add_raster, rasters, project, tmp_path, monkeypatch
):
    """The disk fills up after the class raster: the worker keeps it (exit code 3) and the
    dock loads it, styled, and says in one line that the polygons are missing."""
    limited = tmp_path / "bin" / "python"
    limited.parent.mkdir()
    # Files may not grow past 32 KiB in the worker (as on a nearly full disk): the class
    # raster of this crop fits, a GeoPackage (SQLite's pages alone) does not.
    limited.write_text(f'#!/bin/sh\ntrap \'\' XFSZ\nulimit -f 32\nexec "{ENGINE_PYTHON}" "$@"\n')
    limited.chmod(0o755)
    monkeypatch.setenv("CROSSEARTH_PYTHON", str(limited))
    source = add_raster(rasters["rgb"], "olinda")
    dock.form.layer_combo.setLayer(source)
    dock.form.polygons_check.setChecked(True)
    output = tmp_path / "out" / "olinda_classes.tif"
    output.parent.mkdir()
    dock.form.output_widget.setFilePath(str(output))
    run_dock(dock)
    assert critical(dock) == []
    [warning] = [m for m in bar_messages(dock.iface, Qgis.MessageLevel.Warning) if "polygons" in m]
    assert warning.startswith("The polygons could not be written: ")
    assert str(output.parent / "olinda_classes_classes.gpkg") in warning  # the dock's name
    assert_plain(warning)
    layers = added_layers(project)
    [result] = [layer for name, layer in layers.items() if name.startswith("olinda –")]
    assert result.source() == str(output)
    assert result.renderer().type() == "paletted"
    assert added_layers(project, QgsVectorLayer) == {}
    assert sorted(p.name for p in output.parent.iterdir()) in (
        ["olinda_classes.qml", "olinda_classes.tif", "olinda_classes.tif.aux.xml"],
        ["olinda_classes.qml", "olinda_classes.tif"],
    )  # no polygons, no temporary left


def test_dock_follows_the_active_raster_layer(dock, add_raster, rasters):
    first = add_raster(rasters["rgb"], "first")
    second = add_raster(rasters["two_band"], "second")
    dock.follow_layer(first)
    assert dock.form.layer_combo.currentLayer() is first
    dock.follow_layer(second)
    assert dock.form.layer_combo.currentLayer() is second
    polygons = QgsVectorLayer("Polygon?crs=EPSG:4326", "polygons", "memory")
    dock.follow_layer(polygons)  # not a raster: the picker stays where it was
    assert dock.form.layer_combo.currentLayer() is second


def test_segment_layer_adds_a_styled_result_with_polygons_and_confidence(
    dock, add_raster, rasters, project, tmp_path, monkeypatch
):
    # The Landsat crop with a 48 x 48 px nodata corner.
    source = add_raster(rasters["rgb_nodata"], "olinda")
    dock.form.layer_combo.setLayer(source)
    dock.form.confidence_check.setChecked(True)
    dock.form.polygons_check.setChecked(True)
    output = tmp_path / "olinda_classes.tif"
    dock.form.output_widget.setFilePath(str(output))

    # QGIS must stay responsive while the worker runs: a 50 ms timer keeps firing on time.
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(50)
    statuses: list[str] = []
    compose = engine_task.status_text

    def record(fraction: float, message: str, eta: float | None) -> str:
        statuses.append(compose(fraction, message, eta))
        return statuses[-1]

    # In place before the task starts: a signal connected after dock.segment() returned
    # could miss what the task's thread said first.
    monkeypatch.setattr(engine_task, "status_text", record)
    started = time.monotonic()
    task = dock.segment()
    wait_for(lambda: dock.task is None, 240, "the segmentation task")
    elapsed = time.monotonic() - started
    timer.stop()
    assert max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) < 1.0
    # The timer fired all along (a Light engine is done in about a second, a Full one later).
    assert len(ticks) >= 0.5 * elapsed / 0.05 and len(ticks) >= 5

    assert task.error is None, task.error
    assert any("tile" in s and "%" in s for s in statuses)
    assert dock.form.progress_bar.value() == 100
    name = f"olinda – {MODEL_NAME}"
    rasters_added = added_layers(project)
    result = rasters_added[name]
    assert result.source() == str(output)
    assert result.extent() == source.extent()
    assert result.crs() == source.crs()
    assert result.crs().authid() == "EPSG:31985"
    assert (result.width(), result.height()) == (200, 170)

    renderer = result.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    assert [(c.value, c.label, c.color.getRgb()[:3]) for c in renderer.classes()] == [
        (i, n, rgb) for i, (n, rgb) in enumerate(CLASSES)
    ]
    assert legend_entries(project, result) == CLASSES

    # The style file beside the output gives the same look when the file is opened again.
    qml = output.with_suffix(".qml")
    assert qml.is_file() and "built-up" in qml.read_text()
    reopened = QgsRasterLayer(str(output), "again", "gdal")
    assert reopened.loadDefaultStyle()[1]  # True only when the .qml was found and applied
    assert isinstance(reopened.renderer(), QgsPalettedRasterRenderer)
    assert [c.label for c in reopened.renderer().classes()] == [n for n, _ in CLASSES]

    confidence = rasters_added[f"{name} confidence"]
    assert confidence.source() == str(tmp_path / "olinda_classes_confidence.tif")
    polygons = added_layers(project, QgsVectorLayer)[f"{name} polygons"]
    assert polygons.featureCount() > 0
    assert {"class", "area_m2"} <= set(polygons.fields().names())
    area = sum(f["area_m2"] for f in polygons.getFeatures())
    assert area == pytest.approx((200 * 170 - 48 * 48) * PIXEL * PIXEL, rel=1e-6)
    categories = {
        c.value(): c.symbol().color().getRgb()[:3] for c in polygons.renderer().categories()
    }
    assert categories == dict(CLASSES)
    # Nodata stays nodata and is drawn transparent; classified pixels in their class colour.
    values = gdal.Open(str(output)).ReadAsArray()
    assert (values[:48, :48] == 255).all() and (values[60:, 60:] != 255).all()
    image = render(result)
    assert image.pixelColor(10, 10).alpha() == 0
    inside = image.pixelColor(150, 120)
    assert inside.alpha() == 255
    assert inside.getRgb()[:3] == CLASSES[values[120, 150]][1]

    successes = bar_messages(dock.iface, Qgis.Success)
    assert any(f"Segmented 'olinda' with {MODEL_NAME}" in m for m in successes)
    assert settings.get(settings.MODEL).endswith(MODEL_NAME)


def test_cancel_stops_the_worker_and_removes_the_output(dock, add_raster, rasters, tmp_path):
    # The Olinda crop at twice its resolution, read as it is, with tiles 8 px apart: about
    # 1,000 tiles, so that a Light engine is still running when the time left is first shown.
    fine = tmp_path / "in" / "olinda_fine.tif"
    fine.parent.mkdir()
    gdal.Translate(str(fine), str(rasters["rgb"]), width=400, height=340)
    dock.form.layer_combo.setLayer(add_raster(fine, "olinda fine"))
    dock.form.gsd_combo.setCurrentIndex(dock.form.gsd_combo.findData(GSD_NATIVE))
    dock.form.overlap_spin.setValue(120)
    dock.form.batch_spin.setValue(1)
    out = tmp_path / "out"
    out.mkdir()
    dock.form.output_widget.setFilePath(str(out / "cancelled.tif"))
    dock.form.polygons_check.setChecked(True)
    task = dock.segment()
    shown: list[tuple[str, int, bool]] = []  # the status, the bar, Cancel offered

    def status(text: str) -> None:
        # Percent, tile and the time left, once a few tiles have given the speed: then Cancel,
        # clicked while the worker runs.
        if "left" in text and not shown:
            shown.append(
                (text, dock.form.progress_bar.value(), dock.form.cancel_button.isEnabled())
            )
            dock.form.cancel_button.click()

    task.statusChanged.connect(status)
    wait_for(lambda: dock.task is None, 240, "the cancelled task")
    assert shown, "no time left was shown before the run ended"
    text, percent, cancel_offered = shown[0]
    assert re.fullmatch(r"\d+% · tile \d+/\d+ · about \d+ (s|min) left", text), text
    assert 0 <= percent < 100 and cancel_offered
    assert task.cancelled and task.error is None
    assert list(out.iterdir()) == []  # no output, no hidden temporary file
    assert dock.form.status_label.text() == "Cancelled; no output was written."
    assert any("cancelled" in m for m in bar_messages(dock.iface, Qgis.Info))
    assert dock.form.run_button.isEnabled() and not dock.form.cancel_button.isEnabled()


def test_only_the_current_map_extent(dock, add_raster, rasters, project, qgis_iface, tmp_path):
    source = add_raster(rasters["rgb"], "olinda")
    dock.form.layer_combo.setLayer(source)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(source.crs())
    full = source.extent()
    wanted = QgsRectangle(
        full.xMinimum() + 40 * PIXEL,
        full.yMinimum() + 30 * PIXEL,
        full.xMinimum() + 120 * PIXEL,
        full.yMinimum() + 100 * PIXEL,
    )
    canvas.resize(QSize(400, 350))
    canvas.setExtent(wanted)
    visible = canvas.extent()  # the canvas widens one side to its own aspect ratio
    dock.form.area_combo.setCurrentIndex(dock.form.area_combo.findData(AREA_CANVAS))
    dock.form.output_widget.setFilePath(str(tmp_path / "extent.tif"))
    run_dock(dock)
    assert critical(dock) == []
    result = added_layers(project)[f"olinda – {MODEL_NAME}"]
    got = result.extent()
    clipped = visible.intersect(full)
    # Pixels touched by the extent, rounded outwards to the raster's grid.
    assert got.xMinimum() == pytest.approx(clipped.xMinimum(), abs=PIXEL)
    assert got.xMaximum() == pytest.approx(clipped.xMaximum(), abs=PIXEL)
    assert got.yMinimum() == pytest.approx(clipped.yMinimum(), abs=PIXEL)
    assert got.yMaximum() == pytest.approx(clipped.yMaximum(), abs=PIXEL)
    assert got.width() < full.width() or got.height() < full.height()


def test_only_the_extent_of_a_selected_polygon(dock, add_raster, rasters, project, tmp_path):
    source = add_raster(rasters["rgb"], "olinda")
    dock.form.layer_combo.setLayer(source)
    # A polygon drawn in another CRS (WGS 84): the extent is transformed to the raster's.
    polygons = QgsVectorLayer("Polygon?crs=EPSG:4326", "areas", "memory")
    full = source.extent()
    from qgis.core import QgsCoordinateTransform, QgsProject

    to_wgs84 = QgsCoordinateTransform(
        source.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance()
    )
    inner = QgsRectangle(
        full.xMinimum() + 20 * PIXEL,
        full.yMinimum() + 20 * PIXEL,
        full.xMinimum() + 90 * PIXEL,
        full.yMinimum() + 70 * PIXEL,
    )
    other = QgsRectangle(full.xMinimum(), full.yMinimum(), full.xMaximum(), full.yMaximum())
    features = []
    for box in (inner, other):
        feature = QgsFeature()
        feature.setGeometry(QgsGeometry.fromRect(to_wgs84.transformBoundingBox(box)))
        features.append(feature)
    polygons.dataProvider().addFeatures(features)
    project.addMapLayer(polygons)
    polygons.selectByIds([polygons.getFeatures().__next__().id()])
    dock.form.area_combo.setCurrentIndex(dock.form.area_combo.findData(AREA_SELECTION))
    dock.form.area_layer_combo.setLayer(polygons)
    dock.form.output_widget.setFilePath(str(tmp_path / "selection.tif"))
    run_dock(dock)
    assert critical(dock) == []
    got = added_layers(project)[f"olinda – {MODEL_NAME}"].extent()
    # The selected polygon's box, transformed back (it grows a little in the round trip).
    assert got.width() == pytest.approx(70 * PIXEL, abs=3 * PIXEL)
    assert got.height() == pytest.approx(50 * PIXEL, abs=3 * PIXEL)
    assert got.xMinimum() == pytest.approx(inner.xMinimum(), abs=2 * PIXEL)
    assert got.yMaximum() == pytest.approx(inner.yMaximum(), abs=2 * PIXEL)


# --- each error reaches the message bar in plain words ------------------------------------


def test_error_no_raster_selected(dock):
    dock.form.layer_combo.setLayer(None)
    assert dock.segment() is None
    [message] = critical(dock)
    assert "No raster layer is selected" in message
    assert_plain(message)


def test_error_too_few_bands(dock, add_raster, rasters):
    dock.form.layer_combo.setLayer(add_raster(rasters["two_band"], "two bands"))
    assert dock.segment() is None
    [message] = critical(dock)
    assert (
        f"'two bands' has 2 band(s) but the model '{MODEL_NAME}' needs 3 (red, green, blue)"
        in message
    )
    assert_plain(message)


def test_error_engine_environment_missing(dock, add_raster, rasters, monkeypatch, tmp_path):
    dock.form.layer_combo.setLayer(add_raster(rasters["rgb"], "olinda"))
    monkeypatch.setenv("CROSSEARTH_PYTHON", str(tmp_path / "no-env" / "bin" / "python"))
    assert dock.segment() is None
    [message] = critical(dock)
    assert message.endswith(
        "The CrossEarth engine environment is missing: CROSSEARTH_PYTHON names "
        f"{tmp_path / 'no-env' / 'bin' / 'python'}, which is not a Python interpreter on this "
        "computer. Point CROSSEARTH_PYTHON at the engine's python, or unset it to use the one "
        "chosen in Settings > Options > CrossEarth."
    )


def test_error_engine_environment_without_torch(dock, add_raster, rasters, monkeypatch, tmp_path):
    system_python = shutil.which("python3", path="/usr/bin")
    monkeypatch.setenv("CROSSEARTH_PYTHON", system_python)
    from crossearth_qgis.environment.engine_env import missing_modules

    if "torch" not in missing_modules(Path(system_python)):
        pytest.skip("the system Python has torch here")
    dock.form.layer_combo.setLayer(add_raster(rasters["rgb"], "olinda"))
    dock.form.output_widget.setFilePath(str(tmp_path / "x.tif"))
    logged: list[tuple[str, str]] = []
    log = QgsApplication.messageLog()
    record = lambda message, tag, level: logged.append((tag, message))  # noqa: E731
    log.messageReceived.connect(record)
    try:
        run_dock(dock)
    finally:
        log.messageReceived.disconnect(record)
    [message] = critical(dock)
    assert f"{system_python} (CROSSEARTH_PYTHON) has no Python module 'torch'," in message
    # The worker's traceback is in the CrossEarth log tab, not in the message bar.
    details = [m for tag, m in logged if tag == "CrossEarth" and message in m]
    assert details and "ModuleNotFoundError: No module named" in details[0]
    assert "Set up engine environment" in message
    assert_plain(message)
    assert list(tmp_path.iterdir()) == []


def test_error_cuda_requested_but_unavailable(dock, add_raster, rasters, engine_check, tmp_path):
    if engine_check["cuda_available"]:
        pytest.skip("CUDA is available here")
    dock.form.layer_combo.setLayer(add_raster(rasters["rgb"], "olinda"))
    dock.form.output_widget.setFilePath(str(tmp_path / "x.tif"))
    # A GPU chosen in an earlier session stays in the list, marked as not detected.
    dock.form.device_combo.addItem("cuda:0 (not detected)", "cuda:0")
    dock.form.device_combo.setCurrentIndex(dock.form.device_combo.findData("cuda:0"))

    # Known beforehand (the engine reported no CUDA): refused at once.
    assert dock.segment() is None
    [message] = critical(dock)
    assert "The device cuda:0 (CUDA) was chosen but CUDA is not available" in message
    assert_plain(message)

    # Not known yet: the worker refuses, and the message still reads plainly.
    dock.iface.messageBar().clear_messages()
    dock.models.cuda_available = None
    run_dock(dock)
    [message] = critical(dock)
    assert message.startswith("Device 'cuda:0' requested but ")
    # A Full engine has no GPU here; a Light one has no PyTorch for any GPU.
    assert "CUDA is not available" in message or "a Light engine environment" in message
    assert message.endswith("choose the device cpu or auto.")
    assert_plain(message)
    assert list(tmp_path.iterdir()) == []


# --- adding models ----------------------------------------------------------------------------


def test_add_a_model_package(dock, engine_fixtures):
    package = engine_fixtures / "extra" / "tiny-buildings"
    target = dock.models.install_package(str(package))
    assert target == engine_fixtures / "models" / "tiny-buildings"
    assert (target / "model.json").is_file() and (target / "weights.safetensors").is_file()
    wait_for(
        lambda: (
            dock.models.current_model() and dock.models.current_model().name == "tiny-buildings"
        ),
        120,
    )
    assert "2 classes: background, building" in dock.form.model_info.text()
    # Adding it twice is refused in plain words, and nothing is overwritten.
    assert dock.models.install_package(str(package)) is None
    assert "already installed" in critical(dock)[-1]
    shutil.rmtree(target)


@pytest.mark.full_engine
def test_convert_an_official_checkpoint_from_the_dock(dock, engine_fixtures):
    user_dir = Path(dock.models.catalog.user_dir)
    request = ConvertRequest(
        checkpoint=str(engine_fixtures / "tiny.pth"),
        output=str(user_dir / "converted-tiny"),
        mmseg_config=str(TINY_MMSEG_CONFIG),
        classes=["sea", "town", "forest"],
        name="converted-tiny",
    )
    task = dock.models.convert_checkpoint(request)
    wait_for(
        lambda: (
            dock.models.current_model() and dock.models.current_model().name == "converted-tiny"
        ),
        240,
    )
    assert task.error is None
    assert "3 classes: sea, town, forest" in dock.form.model_info.text()
    assert any("Checkpoint converted" in m for m in bar_messages(dock.iface, Qgis.Success))

    # A checkpoint that is not CrossEarth: the engine's refusal, in the message bar.
    bogus = user_dir.parent / "bogus.pth"
    shutil.copy(Path(ENGINE_PYTHON), bogus)  # any non-checkpoint file
    task = dock.models.convert_checkpoint(
        ConvertRequest(str(bogus), str(user_dir / "bogus"), mmseg_config=str(TINY_MMSEG_CONFIG))
    )
    wait_for(lambda: not dock.models.query_tasks, 120)
    message = critical(dock)[-1]
    assert message.startswith("The checkpoint was not converted:")
    assert "is not a PyTorch checkpoint" in message
    assert_plain(message)
    assert not (user_dir / "bogus").exists()
    shutil.rmtree(user_dir / "converted-tiny")
    bogus.unlink()


def test_device_picker_names_each_gpu(dock):
    dock.models._devices_checked(
        {
            "cuda_available": True,
            "devices": [
                {"id": "cpu", "name": "CPU"},
                {"id": "cuda:0", "name": "NVIDIA H200", "memory_gib": 139.8},
                {"id": "cuda:1", "name": "NVIDIA RTX A4000", "memory_gib": 15.7},
            ],
        }
    )
    items = [
        (dock.form.device_combo.itemText(i), dock.form.device_combo.itemData(i))
        for i in range(dock.form.device_combo.count())
    ]
    assert items == [
        ("Auto (a GPU when there is one)", "auto"),
        ("CPU", "cpu"),
        ("NVIDIA H200 (cuda:0, 139.8 GiB)", "cuda:0"),
        ("NVIDIA RTX A4000 (cuda:1, 15.7 GiB)", "cuda:1"),
    ]


def test_workers_are_offered_only_when_the_engine_has_ray(dock, add_raster, rasters):
    dock.form.layer_combo.setLayer(add_raster(rasters["rgb"], "olinda"))
    cpu_only = {"cuda_available": False, "devices": [{"id": "cpu", "name": "CPU"}]}
    dock.models._devices_checked({**cpu_only, "cpu_count": 4, "ray": None})
    assert dock.form.workers_combo.isHidden() and dock.form.workers_label.isHidden()
    assert dock.build_request().request.workers is None

    dock.models._devices_checked({**cpu_only, "cpu_count": 4, "ray": "2.60.0"})
    assert not dock.form.workers_combo.isHidden() and not dock.form.workers_label.isHidden()
    items = [
        (dock.form.workers_combo.itemText(i), dock.form.workers_combo.itemData(i))
        for i in range(dock.form.workers_combo.count())
    ]
    assert items == [
        ("Off (one process)", None),
        ("Auto (one per GPU, or CPU cores shared)", "auto"),
        ("2", "2"),
        ("3", "3"),
        ("4", "4"),
    ]
    assert dock.build_request().request.workers is None  # Off unless chosen
    dock.form.workers_combo.setCurrentIndex(dock.form.workers_combo.findData("3"))
    request = dock.build_request().request
    assert "--workers=3" in request.args() and request.cluster is None
    # Asking the engine again keeps the choice; an engine without Ray drops it.
    dock.models._devices_checked({**cpu_only, "cpu_count": 4, "ray": "2.60.0"})
    assert dock.form.workers_combo.currentData() == "3"
    dock.models._devices_checked({**cpu_only, "cpu_count": 4})
    assert dock.form.workers_combo.isHidden()
    assert not any(a.startswith("--workers") for a in dock.build_request().request.args())


def test_choosing_add_model_opens_the_dialog_and_keeps_the_model(dock, monkeypatch):
    opened: list[bool] = []
    monkeypatch.setattr(dock.models, "add_model", lambda: opened.append(True))
    before = dock.form.model_combo.currentIndex()
    dock.form.model_combo.setCurrentIndex(dock.form.model_combo.findData(ADD_MODEL))
    assert opened == [True]
    assert dock.form.model_combo.currentIndex() == before
    assert dock.models.current_model().name == MODEL_NAME


def test_add_model_dialog_builds_the_conversion(tmp_path):
    from crossearth_qgis.dock.add_model import MMSEG_CONFIG_CHOICE, AddModelDialog

    dialog = AddModelDialog(["casid-sub-source", "potsdam-r-source"], str(tmp_path))
    assert not dialog.is_conversion()
    dialog.package_widget.setFilePath("/data/my-package")
    assert dialog.package_folder() == "/data/my-package"

    dialog.checkpoint_radio.setChecked(True)
    dialog.checkpoint_widget.setFilePath("/data/Potsdam(r)-source.pth")
    dialog.preset_combo.setCurrentText("potsdam-r-source")
    assert not dialog.config_widget.isEnabled()
    request = dialog.convert_request()
    assert (request.preset, request.mmseg_config, request.name) == (
        "potsdam-r-source",
        None,
        "Potsdam(r)-source",
    )
    assert request.output == str(tmp_path / "Potsdam(r)-source")

    dialog.preset_combo.setCurrentText(MMSEG_CONFIG_CHOICE)
    assert dialog.config_widget.isEnabled()
    dialog.config_widget.setFilePath("/data/config.py")
    dialog.backbone_widget.setFilePath("/data/dinov2_converted.pth")
    dialog.name_edit.setText("potsdam")
    dialog.dtype_combo.setCurrentText("float16")
    request = dialog.convert_request()
    assert request.args() == [
        "convert", "/data/Potsdam(r)-source.pth", str(tmp_path / "potsdam"), "--progress=json",
        "--dtype=float16",
        "--mmseg-config=/data/config.py", "--backbone=/data/dinov2_converted.pth",
        "--name=potsdam",
    ]  # fmt: skip
    dialog.deleteLater()


def test_compiling_is_offered_with_pytorch_only(dock, add_raster, rasters, engine_check):
    dock.form.layer_combo.setLayer(add_raster(rasters["rgb"], "olinda"))
    assert "--compile" not in dock.build_request().request.args()  # off unless chosen
    dock.form.compile_check.setChecked(True)
    has_torch = "torch" in engine_check["runtimes"]
    offered = [dock.form.runtime_combo.itemData(i) for i in range(dock.form.runtime_combo.count())]
    assert ("torch" in offered) == has_torch  # only the installed runtimes are offered
    for runtime, compiles in (("auto", has_torch), ("torch", True), ("onnxruntime", False)):
        if runtime not in offered:
            continue
        dock.form.runtime_combo.setCurrentIndex(dock.form.runtime_combo.findData(runtime))
        assert dock.form.compile_check.isEnabled() == compiles
        assert ("--compile" in dock.build_request().request.args()) == compiles
