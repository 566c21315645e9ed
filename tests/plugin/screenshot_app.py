"""A QGIS-like main window with the CrossEarth dock and a segmented layer, saved as a PNG.

Run by tests/plugin/test_screenshot.py under Xvfb (a real X display, not Qt's offscreen
platform), with QGIS_CUSTOM_CONFIG_PATH naming a throwaway profile folder:
    python screenshot_app.py OUTPUT.png WORK_FOLDER
It segments the Landsat 7 sample through the dock exactly as an analyst would (a real
worker process), waits for the map to draw, grabs the window and prints a JSON summary.
The model is the bundled default when its bands are Landsat bands, else the test model
"tiny-landcover" from CROSSEARTH_MODELS_DIR; the dock and the layer name show which.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from qgis.PyQt.QtCore import QCoreApplication, QEventLoop, QObject, Qt, pyqtSignal

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "resources" / "samples" / "landsat7_olinda_6band.tif"
LANDSAT_BANDS = {"blue": 1, "green": 2, "red": 3, "nir": 4, "swir1": 5, "swir2": 6}
FALLBACK_MODEL = "tiny-landcover"
MENUS = "Project Edit View Layer Settings Plugins Vector Raster Database Web Mesh Processing Help"


def wait_for(condition, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
        time.sleep(0.01)


class Interface(QObject):
    """The part of QgisInterface the dock uses."""

    currentLayerChanged = pyqtSignal(object)

    def __init__(self, window, canvas, bar) -> None:
        super().__init__()
        self._window, self._canvas, self._bar = window, canvas, bar
        self.active = None

    def mainWindow(self):
        return self._window

    def mapCanvas(self):
        return self._canvas

    def messageBar(self):
        return self._bar

    def activeLayer(self):
        return self.active


def main(output: Path, work: Path) -> dict:
    if not os.environ.get("QGIS_CUSTOM_CONFIG_PATH"):
        raise SystemExit("set QGIS_CUSTOM_CONFIG_PATH to a throwaway profile folder")
    # QgsApplication keeps its settings in that profile, as QGIS does.
    QCoreApplication.setOrganizationName("QGIS")
    QCoreApplication.setApplicationName("QGIS3")
    from qgis.core import (
        QgsApplication,
        QgsContrastEnhancement,
        QgsLayerTreeModel,
        QgsMultiBandColorRenderer,
        QgsProject,
        QgsRasterLayer,
        QgsRasterSymbolLegendNode,
    )
    from qgis.gui import (
        QgsLayerTreeMapCanvasBridge,
        QgsLayerTreeView,
        QgsMapCanvas,
        QgsMessageBar,
    )
    from qgis.PyQt.QtWidgets import (
        QDockWidget,
        QLabel,
        QMainWindow,
        QToolBar,
        QVBoxLayout,
        QWidget,
    )

    app = QgsApplication([], True)
    app.initQgis()
    sys.path.insert(0, str(REPO))
    from crossearth_qgis.dock.panel import CrossEarthDock
    from crossearth_qgis.plugin import ICON

    window = QMainWindow()
    window.setWindowTitle("*Untitled Project — QGIS")
    window.resize(1400, 940)
    for title in MENUS.split():
        window.menuBar().addMenu(title)
    toolbar = QToolBar("CrossEarth")
    from qgis.PyQt.QtGui import QIcon

    toolbar.addAction(QIcon(str(ICON)), "Segment layer (CrossEarth)")
    window.addToolBar(toolbar)

    central = QWidget()
    layout = QVBoxLayout(central)
    layout.setContentsMargins(0, 0, 0, 0)
    bar = QgsMessageBar()
    canvas = QgsMapCanvas()
    canvas.setCanvasColor(Qt.white)
    layout.addWidget(bar)
    layout.addWidget(canvas, 1)
    window.setCentralWidget(central)

    project = QgsProject.instance()
    root = project.layerTreeRoot()
    bridge = QgsLayerTreeMapCanvasBridge(root, canvas)  # noqa: F841 (keeps the canvas in sync)
    view = QgsLayerTreeView()
    view.setModel(QgsLayerTreeModel(root, view))  # parented: the view keeps its model
    layers_dock = QDockWidget("Layers")
    layers_dock.setObjectName("Layers")
    layers_dock.setWidget(view)
    window.addDockWidget(Qt.LeftDockWidgetArea, layers_dock)
    window.statusBar().addPermanentWidget(QLabel("EPSG:31985"))

    source = QgsRasterLayer(str(SAMPLE), "landsat7_olinda", "gdal")
    renderer = QgsMultiBandColorRenderer(source.dataProvider(), 3, 2, 1)
    setters = {
        3: renderer.setRedContrastEnhancement,
        2: renderer.setGreenContrastEnhancement,
        1: renderer.setBlueContrastEnhancement,
    }
    for band, setter in setters.items():
        stats = source.dataProvider().cumulativeCut(band, 0.02, 0.98)
        enhancement = QgsContrastEnhancement(source.dataProvider().dataType(band))
        enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
        enhancement.setMinimumValue(stats[0])
        enhancement.setMaximumValue(stats[1])
        setter(enhancement)
    source.setRenderer(renderer)
    project.addMapLayer(source)
    canvas.setDestinationCrs(source.crs())
    canvas.setExtent(source.extent())

    iface = Interface(window, canvas, bar)
    iface.active = source
    dock = CrossEarthDock(iface, window)
    window.addDockWidget(Qt.RightDockWidgetArea, dock)
    window.show()
    dock.models.refresh_engine_info()
    wait_for(lambda: dock.models.catalog is not None and dock.models.devices is not None)

    catalog = dock.models.catalog
    default = next((m for m in catalog.models if m.default), None)
    model = (
        default
        if default and all(b in LANDSAT_BANDS for b in default.bands)
        else catalog.find(FALLBACK_MODEL)
    )
    if model is None:
        raise SystemExit(f"no usable model: {[m.name for m in catalog.models]}")
    dock.form.model_combo.setCurrentIndex(dock.form.model_combo.findData(model.path))
    dock.form.layer_combo.setLayer(source)
    dock.form.advanced.setCollapsed(False)
    dock.form.bands_edit.setText(",".join(str(LANDSAT_BANDS[b]) for b in model.bands))
    dock.form.output_widget.setFilePath(str(work / "landsat7_olinda_classes.tif"))
    task = dock.segment()
    if task is None:
        raise SystemExit("the dock refused to start")
    wait_for(lambda: dock.task is None)
    if task.error is not None:
        raise SystemExit(f"segmentation failed: {task.error}\n{task.error.details}")

    result = next(layer for layer in project.mapLayers().values() if layer is not source)
    view.setCurrentLayer(result)
    view.expandAll()
    canvas.setExtent(source.extent())
    canvas.refreshAllLayers()
    wait_for(lambda: not canvas.isDrawing(), 60)
    for _ in range(20):  # let the last paint events through
        QCoreApplication.processEvents(QEventLoop.AllEvents, 20)
        time.sleep(0.02)
    image = window.grab()
    output.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(output), "PNG"):
        raise SystemExit(f"could not write {output}")

    legend = []
    tree = QgsLayerTreeModel(root)
    for node in tree.layerLegendNodes(root.findLayer(result.id())):
        if isinstance(node, QgsRasterSymbolLegendNode):
            legend.append(node.data(Qt.DisplayRole))
    summary = {
        "model": model.name,
        "layer": result.name(),
        "classes": model.class_names,
        "colors": [list(c["color"]) for c in model.card["classes"]],
        "legend": legend,
        "size": [image.width(), image.height()],
        "status": dock.form.status_label.text(),
    }
    dock.shutdown()
    return summary


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
    sys.stdout.flush()
    # Leaving without QGIS's teardown: this process only existed to draw one picture.
    os._exit(0)
