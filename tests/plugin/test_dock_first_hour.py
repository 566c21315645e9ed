"""The dock in the first hour, driven through its real widgets (a `.click()` sends clicked(bool)
as a mouse does): two runs in a row, choices that follow the layer and the model, a cleared
status, the models that fit a layer, and downloads a Light environment cannot do."""

from __future__ import annotations

import json
import os
import subprocess

from qgis.core import Qgis, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtTest import QTest

from crossearth_qgis.dock.fit_panel import NEEDS_FULL
from crossearth_qgis.dock.panel import DOWNLOAD_PREFIX, GSD_AUTO, GSD_METRES
from crossearth_qgis.worker import engine_task
from crossearth_qgis.worker.models import catalog_from_json

from .conftest import ENGINE_PYTHON, MODEL_NAME, REPO, bar_messages, wait_for

FAST = "crossearth-landsat-lc-fast"  # a bundled five-band model
# A Light engine: the matrix's own (CROSSEARTH_TEST_ENGINE), else the one `make setup` makes.
LIGHT_PYTHON = os.environ.get("CROSSEARTH_TEST_ENGINE") or str(
    REPO / "build" / "engine-light" / "bin" / "python"
)


def click_segment(dock) -> None:
    dock.form.run_button.click()
    assert dock.task is not None, bar_messages(dock.iface, Qgis.Critical)
    wait_for(lambda: dock.task is None, 240, "the segmentation task")


def tree_order(project: QgsProject) -> list[str]:
    return [node.name() for node in project.layerTreeRoot().children()]


def choose_model(dock, name: str) -> None:
    index = next(
        i
        for i in range(dock.form.model_combo.count())
        if dock.form.model_combo.itemText(i).startswith(name)
    )
    dock.form.model_combo.setCurrentIndex(index)


def test_two_segment_clicks_in_a_row_keep_the_input_and_stack_the_results(
    dock, add_raster, rasters, project, monkeypatch
):
    base = add_raster(rasters["two_band"], "below")
    source = add_raster(rasters["rgb"], "olinda")
    dock.form.layer_combo.setLayer(source)
    statuses: list[str] = []
    compose = engine_task.status_text
    monkeypatch.setattr(
        engine_task, "status_text", lambda f, m, e: statuses.append(m) or compose(f, m, e)
    )
    click_segment(dock)
    [first] = [layer for layer in project.mapLayers().values() if layer.id() in dock.results.ids]
    dock.follow_layer(first)  # QGIS makes a new layer active; the dock keeps its input
    assert dock.form.layer_combo.currentLayer() is source
    click_segment(dock)
    assert dock.form.layer_combo.currentLayer() is source
    results = [project.mapLayer(i) for i in dock.results.ids]
    assert len(results) == 2 and all(isinstance(r, QgsRasterLayer) for r in results)
    name = f"olinda – {MODEL_NAME}"
    # Each result right above the input, the newest on top; the layer below stays below.
    assert tree_order(project) == [name, name, "olinda", "below"]
    assert base.id() not in dock.results.ids
    # The second run found its model loaded in the warm worker.
    assert any(m.startswith(f"loading model {MODEL_NAME}") for m in statuses)
    assert any(
        m.startswith(f"model {MODEL_NAME}") and m.endswith("loaded already") for m in statuses
    )
    assert dock.form.status_label.text().startswith("Segmented 'olinda'")


def test_bands_resolution_and_runtime_follow_the_layer_and_the_model(dock, add_raster, rasters):
    first = add_raster(rasters["six_band"], "six")
    second = add_raster(rasters["rgb"], "olinda")
    dock.form.layer_combo.setLayer(first)
    QTest.keyClicks(dock.form.bands_edit, "3,2,1")
    dock.form.gsd_combo.setCurrentIndex(dock.form.gsd_combo.findData(GSD_METRES))
    dock.form.gsd_spin.setValue(10.0)
    dock.form.runtime_combo.setCurrentIndex(dock.form.runtime_combo.findData("onnxruntime"))

    dock.form.layer_combo.setLayer(second)  # another layer: the defaults
    assert dock.form.bands_edit.text() == ""
    assert dock.form.gsd_combo.currentData() == GSD_AUTO and not dock.form.gsd_spin.isEnabled()
    assert dock.form.runtime_combo.currentData() == "auto"

    dock.form.layer_combo.setLayer(first)  # back: what was typed for it
    assert dock.form.bands_edit.text() == "3,2,1"
    assert (dock.form.gsd_combo.currentData(), dock.form.gsd_spin.value()) == (GSD_METRES, 10.0)
    assert dock.form.runtime_combo.currentData() == "onnxruntime"

    choose_model(dock, FAST)  # another model for the same layer: the defaults again
    assert dock.form.bands_edit.text() == "" and dock.form.runtime_combo.currentData() == "auto"
    choose_model(dock, MODEL_NAME)
    assert dock.form.bands_edit.text() == "3,2,1"


def test_a_failed_pre_check_clears_the_last_runs_status(dock, add_raster, rasters):
    dock.form.layer_combo.setLayer(add_raster(rasters["rgb"], "olinda"))
    click_segment(dock)
    assert dock.form.progress_bar.value() == 100 and dock.form.status_label.text()
    dock.form.layer_combo.setLayer(add_raster(rasters["two_band"], "two bands"))
    dock.form.run_button.click()
    assert dock.task is None
    assert dock.form.progress_bar.value() == 0 and dock.form.status_label.text() == ""
    assert "'two bands' has 2 band(s)" in bar_messages(dock.iface, Qgis.Critical)[-1]


def test_an_rgb_layer_with_a_five_band_model_is_offered_the_model_that_takes_it(
    dock, add_raster, rasters
):
    dock.form.layer_combo.setLayer(add_raster(rasters["rgb"], "olinda"))
    choose_model(dock, FAST)
    wait_for(lambda: dock.form.fit_panel.report is not None, 120, "the fit of the layer")
    text = dock.form.fit_panel.text.text()
    assert text.startswith(f"'olinda' does not fit the model '{FAST}': it has 3 band(s)")
    assert f"Installed models that take it: {MODEL_NAME} (installed;" in text
    [use] = [b for b in dock.form.fit_panel.buttons if b.text() == f"Use {MODEL_NAME}"]
    use.click()
    assert dock.models.current_model().name == MODEL_NAME
    wait_for(
        lambda: dock.form.fit_panel.isHidden() and dock.form.fit_panel.report is None,
        120,
        "the panel to go once the model fits",
    )
    assert dock.segment() is not None  # and the run starts
    wait_for(lambda: dock.task is None, 240, "the segmentation task")


def test_a_layer_no_model_takes_gets_what_would(dock, add_raster, rasters):
    dock.form.layer_combo.setLayer(add_raster(rasters["two_band"], "two bands"))
    wait_for(lambda: dock.form.fit_panel.report is not None, 120, "the fit of the layer")
    assert dock.form.fit_panel.buttons == []
    assert "No model here takes it; what would: fine-tune a model on labels of this area" in (
        dock.form.fit_panel.text.text()
    )


def _engine_json(python: str, *args: str) -> dict:
    done = subprocess.run(
        [python, "-m", "engine.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout)


def test_a_download_in_a_light_environment_is_greyed_with_its_reason(
    dock, add_raster, rasters, monkeypatch
):
    light = _engine_json(LIGHT_PYTHON, "check", "--json")
    assert light["features"]["download"] is False and "torch" not in light["runtimes"]
    catalog = _engine_json(ENGINE_PYTHON, "models", "--json", "--available")
    dock.models.set_catalog(catalog_from_json(catalog), select=FAST)
    dock.models._devices_checked(light)  # the report a Light engine gives the dock
    downloads = [
        i
        for i in range(dock.form.model_combo.count())
        if str(dock.form.model_combo.itemData(i)).startswith(DOWNLOAD_PREFIX)
    ]
    assert downloads
    for index in downloads:
        assert not dock.form.model_combo.model().item(index).isEnabled()
        assert dock.form.model_combo.itemData(index, Qt.ItemDataRole.ToolTipRole) == NEEDS_FULL
    # Without PyTorch, Auto is an ONNX runtime: nothing to compile.
    assert (
        dock.form.runtime_combo.currentData() == "auto" and not dock.form.compile_check.isEnabled()
    )
    # Only the runtimes the environment has are offered.
    offered = [dock.form.runtime_combo.itemData(i) for i in range(dock.form.runtime_combo.count())]
    assert offered == ["auto", *[r for r in ("onnxruntime", "openvino") if r in light["runtimes"]]]
    # The fit panel's download buttons are greyed too, with the one-click fix beside them.
    dock.form.layer_combo.setLayer(add_raster(rasters["rgb"], "olinda"))
    monkeypatch.setattr(dock.models, "current_model", lambda: dock.models.catalog.find(FAST))
    dock.check_fit()
    wait_for(lambda: dock.form.fit_panel.report is not None, 120, "the fit of the layer")
    by_label = {b.text(): b for b in dock.form.fit_panel.buttons}
    download = [b for label, b in by_label.items() if label.startswith("Download ")]
    assert download and all(not b.isEnabled() and b.toolTip() == NEEDS_FULL for b in download)
    by_label["Add PyTorch..."].click()
    dock.iface.showOptionsDialog.assert_called_with(dock.iface.mainWindow(), "CrossEarth")
    # And a download asked for anyway says why in one line, before any question.
    assert dock.models.offer_download(download[0].text().split()[1]) is None
    assert NEEDS_FULL in bar_messages(dock.iface, Qgis.Critical)[-1]


def test_converting_a_checkpoint_is_greyed_where_the_engine_cannot(dock, monkeypatch, tmp_path):
    from crossearth_qgis.dock import models as dock_models
    from crossearth_qgis.dock.add_model import NEEDS_PYTORCH, AddModelDialog

    light = _engine_json(LIGHT_PYTHON, "check", "--json")
    assert light["features"]["convert"] is False
    dock.models._devices_checked(light)
    shown: list[AddModelDialog] = []

    def look(dialog: AddModelDialog) -> int:
        shown.append(dialog)
        return 0  # the analyst closes it

    monkeypatch.setattr(dock_models.AddModelDialog, "exec", look)
    dock.models.add_model()
    [dialog] = shown
    assert not dialog.checkpoint_radio.isEnabled()
    assert dialog.checkpoint_radio.toolTip() == NEEDS_PYTORCH
    assert dialog.package_radio.isChecked() and dialog.package_radio.isEnabled()
    offered = AddModelDialog(["potsdam-r-source"], str(tmp_path), None, can_convert=None)
    assert offered.checkpoint_radio.isEnabled()  # not known yet: offered
