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

from ..catalog_events import catalog_events
from ..environment.engine_env import EngineEnvironmentError, Interpreter, resolve_interpreter
from ..environment.options_page import PAGE_TITLE as OPTIONS_PAGE
from ..layers.export import (
    FILE,
    RENDERED,
    ExportPlan,
    check_rendered_bands,
    layer_kind,
    plan_export,
)
from ..layers.inputs import InputProblem, check_bands, local_raster_source, parse_bands
from ..worker.engine_task import EngineTask
from ..worker.models import ModelCatalog, ModelEntry
from ..worker.requests import SegmentRequest
from .area import DockProcessing
from .choices import ChoiceKey, ChoiceMemory
from .models import ADD_MODEL, ADD_MODEL_TEXT, DOWNLOAD_PREFIX, DockModels
from .run import DockRun
from .widgets import (
    AREA_CANVAS,
    AREA_SELECTION,
    AREA_WHOLE,
    GSD_AUTO,
    GSD_METRES,
    GSD_NATIVE,
    DockForm,
)

log = logging.getLogger("crossearth_qgis.dock.panel")

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
        self.features: dict[str, bool] | None = None  # `check --json`: what the engine can do
        self.choice_memory = ChoiceMemory()
        self._choice_key: ChoiceKey | None = None
        self._fit_serial = 0  # only the answer to the latest fit question is shown
        self.result_layer_ids: set[str] = set()  # layers the dock added: never its input
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
        """Keeps the raster picker on the active layer when that is a raster, except for the
        results the dock added (QGIS makes a new layer active: the input stays chosen)."""
        if (
            isinstance(layer, QgsRasterLayer)
            and self.task is None
            and layer.id() not in self.result_layer_ids
        ):
            self.layer_combo.setLayer(layer)

    def _layer_or_model_changed(self, *_: Any) -> None:
        """Bands, resolution and runtime follow the (layer, model) pair; the fit is asked."""
        layer = self.layer_combo.currentLayer()
        model = self.current_model()
        key = (layer.id() if layer is not None else "", model.path if model is not None else "")
        if key == self._choice_key:
            return
        leaving, self._choice_key = self._choice_key, key
        if leaving is not None and all(leaving):
            # what was typed before the layer or the model list was there stays as it is
            self.set_form_choices(self.choice_memory.swap(leaving, self.form_choices(), key))
        self.check_fit()

    def select_model(self, path: str) -> None:
        index = self.model_combo.findData(path)
        if index >= 0:
            self.model_combo.setCurrentIndex(index)

    def open_options(self) -> None:
        """Settings > Options at the CrossEarth page (where PyTorch is added)."""
        if self.iface is not None:
            self.iface.showOptionsDialog(self.iface.mainWindow(), OPTIONS_PAGE)

    def check_fit(self) -> None:
        """Asks the engine whether the chosen model takes the layer, and which ones do."""
        self._fit_serial += 1
        serial = self._fit_serial
        self.fit_panel.clear()
        args = self._fit_args()
        if args is None:
            return
        try:
            interpreter = resolve_interpreter()
        except EngineEnvironmentError:
            return  # the model list says what is missing
        self._query(
            "CrossEarth: models that fit the layer",
            args,
            interpreter,
            lambda report: self._fit_checked(serial, report),
            quiet=True,
        )

    def _fit_args(self) -> list[str] | None:
        layer = self.layer_combo.currentLayer()
        model = self.current_model()
        if layer is None or model is None:
            return None
        try:
            kind = layer_kind(layer)
            if kind == FILE:
                source = local_raster_source(layer)
                return [
                    "fit",
                    "--json",
                    "--model",
                    model.path,
                    "--layer-name",
                    layer.name(),
                    "--",
                    source,
                ]
        except InputProblem:
            return None  # the pre-check words it when the analyst clicks Segment
        if kind != RENDERED:
            return None
        # A web layer is read as its rendered red, green and blue, at the processing GSD.
        return [
            "fit",
            "--json",
            "--model",
            model.path,
            "--layer-bands",
            "red,green,blue",
            "--layer-name",
            layer.name(),
        ]

    def _fit_checked(self, serial: int, report: dict[str, Any]) -> None:
        if serial == self._fit_serial:
            can_download = self.features.get("download") if self.features is not None else None
            self.fit_panel.show_report(report, can_download)

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
