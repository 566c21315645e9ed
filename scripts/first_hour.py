"""A new user's first hour, in a real QGIS window: the plugin zip to a first styled result.

Run by scripts/first_hour.sh inside QGIS (`qgis --code scripts/first_hour.py`) with a fresh
profile, under Xvfb. It does what the analyst does, through the real widgets: installs the zip
as Plugins > Install from ZIP does, opens Settings > Options > CrossEarth, chooses Light and
clicks "Set up engine environment", adds the Landsat sample, clicks "Segment layer" in the
dock, then adds an RGB layer (the model suggestion) and opens the model list (the greyed
downloads). Each state is grabbed from the screen into $FIRST_HOUR_OUT, with timings in
first_hour.json, and QGIS quits.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QCoreApplication, QEventLoop, QTimer
from qgis.PyQt.QtWidgets import QDialog, QVBoxLayout
from qgis.utils import iface, plugins

OUT = Path(os.environ["FIRST_HOUR_OUT"])
ZIP = Path(os.environ["FIRST_HOUR_ZIP"])
SAMPLE = Path(os.environ["FIRST_HOUR_SAMPLE"])
RGB = Path(os.environ["FIRST_HOUR_RGB"])
STARTED = float(os.environ["FIRST_HOUR_STARTED"])  # when QGIS was launched (time.time())
timings: dict[str, float] = {}


def wait_for(condition, timeout: float = 900.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.02)


def settle(seconds: float = 1.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QCoreApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.02)


def mark(name: str) -> None:
    timings[name] = round(time.time() - STARTED, 1)
    print(f"first hour: {name} at {timings[name]} s", flush=True)


def shot(widget, name: str) -> None:
    settle(1.5)  # the map and the widgets have drawn
    widget.window().grab().save(str(OUT / f"{name}.png"))


def install_zip() -> None:
    from pyplugin_installer import instance

    instance().installFromZipFile(str(ZIP))
    wait_for(lambda: "crossearth_qgis" in plugins, 120, "the plugin to start")


def set_up_light(plugin) -> None:
    dialog = QDialog(iface.mainWindow())
    dialog.setWindowTitle("Options | CrossEarth")
    layout = QVBoxLayout(dialog)
    page = plugin.options_factory.createWidget(dialog)
    layout.addWidget(page)
    dialog.resize(900, 760)
    dialog.show()
    page.kind_combo.setCurrentIndex(page.kind_combo.findData("light"))
    page.setup_button.click()
    wait_for(lambda: page.setup_progress.value() >= 40, 600, "set-up progress")
    shot(dialog, "setup_in_progress")
    from crossearth_qgis.environment import setup_task as engine_setup_task

    wait_for(lambda: engine_setup_task.running() is None, 900, "the set-up")
    settle(0.5)
    mark("engine set up")
    page.apply()
    dialog.close()


def first_result(plugin) -> None:
    layer = QgsRasterLayer(str(SAMPLE), "raleigh landsat 7", "gdal")
    QgsProject.instance().addMapLayer(layer)
    iface.setActiveLayer(layer)
    plugin.segment_action.trigger()  # the toolbar button: shows the dock
    dock = plugin.dock
    wait_for(
        lambda: dock.models.current_model() is not None and dock.models.features is not None,
        300,
        "the model list",
    )
    dock.form.run_button.click()
    wait_for(
        lambda: dock.task is None and dock.form.status_label.text().startswith("Segmented"),
        600,
        "the first result",
    )
    mark("first styled result")
    iface.mapCanvas().setExtent(layer.extent())
    iface.mapCanvas().refresh()
    shot(iface.mainWindow(), "finished_run")
    started = time.monotonic()
    dock.form.run_button.click()  # again, on the same layer: the warm worker
    wait_for(
        lambda: dock.task is None and dock.form.status_label.text().startswith("Segmented"),
        600,
        "the second result",
    )
    timings["second run, click to result (s)"] = round(time.monotonic() - started, 2)


def suggestion_and_greyed_downloads(plugin) -> None:
    dock = plugin.dock
    layer = QgsRasterLayer(str(RGB), "orthophoto rgb", "gdal")
    QgsProject.instance().addMapLayer(layer)
    dock.form.layer_combo.setLayer(layer)
    wait_for(lambda: dock.form.fit_panel.report is not None, 120, "the model suggestion")
    iface.mapCanvas().setExtent(layer.extent())
    shot(iface.mainWindow(), "model_suggestion")
    dock.form.model_combo.showPopup()
    settle(1.0)
    QgsApplication.primaryScreen().grabWindow(0).save(str(OUT / "greyed_download.png"))
    dock.form.model_combo.hidePopup()
    timings["fit text"] = dock.form.fit_panel.text.text()


def main() -> None:
    try:
        mark("QGIS up")
        install_zip()
        mark("plugin installed")
        plugin = plugins["crossearth_qgis"]
        set_up_light(plugin)
        first_result(plugin)
        suggestion_and_greyed_downloads(plugin)
        timings["ok"] = True
    except Exception:  # the report says what failed; QGIS must quit all the same
        timings["error"] = traceback.format_exc()
    (OUT / "first_hour.json").write_text(json.dumps(timings, indent=2))
    QgsApplication.instance().exit(0)


QTimer.singleShot(500, main)
