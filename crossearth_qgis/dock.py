"""The "Segment layer" dock: choose a raster, a model and a device, run, watch, cancel.

All engine work happens in QgsTasks running worker processes, so QGIS stays responsive; the
dock only checks the analyst's choices, starts tasks and turns their results into layers.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Any, NamedTuple

from qgis.core import QgsMapLayer, QgsProcessingUtils, QgsRasterLayer
from qgis.gui import QgsDockWidget
from qgis.PyQt.QtWidgets import QMessageBox, QWidget

from .catalog_events import catalog_events
from .dock_models import ADD_MODEL, ADD_MODEL_TEXT, DOWNLOAD_PREFIX, DockModels
from .dock_processing import DockProcessing
from .dock_run import DockRun
from .dock_widgets import (
    AREA_CANVAS,
    AREA_SELECTION,
    AREA_WHOLE,
    GSD_AUTO,
    GSD_METRES,
    GSD_NATIVE,
    DockForm,
)
from .engine_env import Interpreter, resolve_interpreter
from .engine_task import EngineTask
from .inputs import InputProblem, check_bands, local_raster_source, parse_bands
from .layer_export import FILE, RENDERED, ExportPlan, check_rendered_bands, layer_kind, plan_export
from .models import ModelCatalog, ModelEntry
from .requests import SegmentRequest

log = logging.getLogger("crossearth_qgis.dock")

__all__ = [
    "ADD_MODEL",
    "ADD_MODEL_TEXT",
    "AREA_CANVAS",
    "AREA_SELECTION",
    "AREA_WHOLE",
    "DOWNLOAD_PREFIX",
    "GSD_AUTO",
    "GSD_METRES",
    "GSD_NATIVE",
    "CrossEarthDock",
    "Job",
]


class Job(NamedTuple):
    request: SegmentRequest
    layer: QgsRasterLayer
    model: ModelEntry
    interpreter: Interpreter
    export: ExportPlan | None = None  # a non-file layer, read into a GeoTIFF first


class CrossEarthDock(DockForm, DockModels, DockProcessing, DockRun, QgsDockWidget):
    """The dock widget; `segment()` is what the "Segment layer" button does. Its parts: the
    form (dock_widgets), the model and device lists (dock_models), the area, resolution and
    post-processing options (dock_processing) and running a job (dock_run)."""

    def __init__(self, iface: Any, parent: QWidget | None = None) -> None:
        super().__init__("CrossEarth: Segment layer", parent)
        self.setObjectName("CrossEarthDock")
        self.iface = iface
        self.catalog: ModelCatalog | None = None
        self.devices: list[dict[str, Any]] | None = None
        self.cuda_available: bool | None = None
        self.task: EngineTask | None = None
        self._query_tasks: list[EngineTask] = []
        self._running: dict[str, Any] = {}
        self._last_model_index = -1
        self._build()
        catalog_events.package_added.connect(self._package_added)
        if iface is not None:
            iface.currentLayerChanged.connect(self.follow_layer)
            active = iface.activeLayer()
            if isinstance(active, QgsRasterLayer):
                self.layer_combo.setLayer(active)
            # The map extent is the area read from web layers: keep its size shown.
            iface.mapCanvas().extentsChanged.connect(self.update_resolution_info)

    def follow_layer(self, layer: QgsMapLayer | None) -> None:
        """Keeps the raster picker on the active layer when that is a raster."""
        if isinstance(layer, QgsRasterLayer) and self.task is None:
            self.layer_combo.setLayer(layer)

    def build_request(self) -> Job:
        """The job the current choices describe; InputProblem/EngineEnvironmentError if none."""
        layer = self.layer_combo.currentLayer()
        kind = layer_kind(layer)
        source = local_raster_source(layer) if kind == FILE else ""
        # The environment next: without it the model list and everything after are unknown.
        interpreter = resolve_interpreter()
        model = self.current_model()
        if model is None:
            raise InputProblem(
                "No model is chosen. Wait for the model list to load, or add a model with "
                f"'{ADD_MODEL_TEXT}' in the model list."
            )
        bands = parse_bands(self.bands_edit.text())
        if kind == RENDERED:
            check_rendered_bands(layer.name(), model.name, model.bands, bands)
        else:
            check_bands(layer, model.name, model.bands, bands)
        device = self.device_combo.currentData() or "auto"
        if device.startswith("cuda") and self.cuda_available is False:
            raise InputProblem(
                f"The device {device} (CUDA) was chosen but CUDA is not available in the engine "
                "environment (no usable NVIDIA GPU or driver, or a CPU-only PyTorch). Choose "
                "Auto or CPU as the device."
            )
        extent = self._extent(layer)
        export = None
        if kind != FILE:
            # Read over the extent at the processing resolution; the engine segments the file.
            export = plan_export(layer, self._export_extent(layer), self._export_gsd(layer, model))
            source, extent = str(export.destination), None
        output = self.output_widget.filePath().strip()
        if output:
            if Path(output).suffix.lower() not in (".tif", ".tiff"):
                output += ".tif"
        else:
            output = self._temporary_output(layer, model)
        stem = str(Path(output).with_suffix(""))
        request = SegmentRequest(
            input=source,
            output=output,
            model=model.path,
            device=device,
            tile=self.tile_spin.value() or None,
            overlap=None if self.overlap_spin.value() < 0 else self.overlap_spin.value(),
            batch=self.batch_spin.value(),
            bands=bands,
            confidence=f"{stem}_confidence.tif" if self.confidence_check.isChecked() else None,
            polygons=f"{stem}_classes.gpkg" if self.polygons_check.isChecked() else None,
            extent=extent,
            workers=self.workers_combo.currentData() if self.ray_version else None,
            runtime=self.runtime_combo.currentData(),
            compile=self.compile_check.isEnabled() and self.compile_check.isChecked(),
            **self._processing_options(export is not None, self.polygons_check.isChecked()),
        )
        return Job(request, layer, model, interpreter, export)

    @staticmethod
    def _temporary_output(layer: QgsRasterLayer, model: ModelEntry) -> str:
        """A new name in Processing's temporary folder: no file of the job exists there yet,
        so the default output never replaces anything."""
        safe = re.sub(r"[^\w.-]+", "_", f"{layer.name()}_{model.name}").strip("_")
        stem = Path(QgsProcessingUtils.tempFolder()) / f"{safe}_{time.strftime('%Y%m%d_%H%M%S')}"
        candidate, number = stem, 1
        while any(
            Path(f"{candidate}{ending}").exists()
            for ending in (".tif", ".qml", "_confidence.tif", "_classes.gpkg")
        ):
            number += 1
            candidate = Path(f"{stem}_{number}")
        return f"{candidate}.tif"

    def _confirm_replace(self, existing: list[Path]) -> bool:
        """Asks whether files that already exist may be replaced (No is the default); both a
        segmentation (dock_run) and a conversion (dock_models) ask it."""
        names = "\n".join(str(path) for path in existing)
        these, them = ("These already exist", "them") if existing[1:] else ("This exists", "it")
        answer = QMessageBox.question(
            self,
            "CrossEarth",
            f"{these}:\n{names}\n\nReplace {them} with the new result?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def shutdown(self) -> None:
        """Before the plugin unloads: stop a running job and stop following layers."""
        for task in [self.task, *self._query_tasks]:
            if task is not None:
                task.completed.disconnect()  # nothing may call back into a deleted dock
                task.cancel()
        self.task = None
        self._query_tasks.clear()
        with contextlib.suppress(TypeError, RuntimeError):  # already disconnected
            catalog_events.package_added.disconnect(self._package_added)
        if self.iface is not None:
            with contextlib.suppress(TypeError, RuntimeError):  # already disconnected
                self.iface.currentLayerChanged.disconnect(self.follow_layer)
            with contextlib.suppress(TypeError, RuntimeError):
                self.iface.mapCanvas().extentsChanged.disconnect(self.update_resolution_info)
