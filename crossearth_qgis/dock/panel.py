"""The "Segment layer" dock: choose a raster, a model and a device, run, watch, cancel.

All engine work happens in QgsTasks running worker processes, so QGIS stays responsive; the
dock only checks the analyst's choices, starts tasks and turns their results into layers.
It owns its parts, each with its own state: the form (widgets.py), the model lists
(models.py), the area and resolution (area.py), the job slot and the result layers (run.py)
and the layer-and-model choices it remembers (choices.py).
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

from .. import messages, settings
from ..catalog_events import catalog_events
from ..environment.engine_env import EngineEnvironmentError, Interpreter, resolve_interpreter
from ..environment.options_page import PAGE_TITLE as OPTIONS_PAGE
from ..layers.export import ExportSegmentTask
from ..layers.export_plan import ExportPlan, check_rendered_bands, plan_export
from ..layers.grid import FILE, RENDERED, layer_kind
from ..layers.inputs import InputProblem, check_bands, local_raster_source, parse_bands
from ..worker.engine_task import EngineTask
from ..worker.models import ModelEntry
from ..worker.requests import SegmentRequest
from .area import AreaChoices
from .choices import ChoiceKey, ChoiceMemory
from .models import ADD_MODEL, ADD_MODEL_TEXT, DOWNLOAD_PREFIX, ModelChoices
from .run import JobSlot, ResultLayers, RunningSegmentation
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


class CrossEarthDock(QgsDockWidget):
    """The dock widget; `segment()` is what the "Segment layer" button does."""

    def __init__(self, iface: Any, parent: QWidget | None = None) -> None:
        super().__init__("CrossEarth: Segment layer", parent)
        self.setObjectName("CrossEarthDock")
        self.iface = iface
        self.form = DockForm()
        self.setWidget(self.form)
        self.jobs = JobSlot(self.form)
        self.results = ResultLayers(self.form, iface)
        self.models = ModelChoices(self.form, iface, self.jobs, self._confirm_replace)
        self.area = AreaChoices(self.form, iface, self.models.current_model)
        self.choice_memory = ChoiceMemory()
        self._choice_key: ChoiceKey | None = None
        self._fit_serial = 0  # only the answer to the latest fit question is shown
        self._connect()
        if iface is not None:
            iface.currentLayerChanged.connect(self.follow_layer)
            active = iface.activeLayer()
            if isinstance(active, QgsRasterLayer):
                self.form.layer_combo.setLayer(active)

    def _connect(self) -> None:
        form = self.form
        form.run_button.clicked.connect(self.segment)
        form.layer_combo.layerChanged.connect(self._layer_or_model_changed)
        form.fit_panel.useModel.connect(self.select_model)
        form.fit_panel.downloadModel.connect(self.models.offer_download)
        form.fit_panel.setUpFull.connect(self.open_options)
        self.models.modelChanged.connect(self.area.model_changed)
        self.models.modelChanged.connect(self._layer_or_model_changed)
        self.models.environmentChecked.connect(self._environment_checked)
        catalog_events.package_added.connect(self.models.package_added)

    @property
    def task(self) -> EngineTask | None:
        """The long job running now (a segmentation or a download), if any."""
        return self.jobs.task

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if self.models.catalog is None and not self.models.query_tasks:
            self.models.refresh_engine_info()

    def follow_layer(self, layer: QgsMapLayer | None) -> None:
        """Keeps the raster picker on the active layer when that is a raster, except for the
        results the dock added (QGIS makes a new layer active: the input stays chosen)."""
        if (
            isinstance(layer, QgsRasterLayer)
            and self.task is None
            and layer.id() not in self.results.ids
        ):
            self.form.layer_combo.setLayer(layer)

    def _layer_or_model_changed(self, *_: Any) -> None:
        """Bands, resolution and runtime follow the (layer, model) pair; the fit is asked."""
        layer = self.form.layer_combo.currentLayer()
        model = self.models.current_model()
        key = (layer.id() if layer is not None else "", model.path if model is not None else "")
        if key == self._choice_key:
            return
        leaving, self._choice_key = self._choice_key, key
        if leaving is not None and all(leaving):
            # what was typed before the layer or the model list was there stays as it is
            self.form.set_form_choices(
                self.choice_memory.swap(leaving, self.form.form_choices(), key)
            )
        self.check_fit()

    def _environment_checked(self) -> None:
        if self.form.fit_panel.report is not None:
            self.check_fit()  # its download buttons follow what the environment can do

    def select_model(self, path: str) -> None:
        index = self.form.model_combo.findData(path)
        if index >= 0:
            self.form.model_combo.setCurrentIndex(index)

    def open_options(self) -> None:
        """Settings > Options at the CrossEarth page (where PyTorch is added)."""
        if self.iface is not None:
            self.iface.showOptionsDialog(self.iface.mainWindow(), OPTIONS_PAGE)

    def check_fit(self) -> None:
        """Asks the engine whether the chosen model takes the layer, and which ones do."""
        self._fit_serial += 1
        serial = self._fit_serial
        self.form.fit_panel.clear()
        args = self._fit_args()
        if args is None:
            return
        try:
            interpreter = resolve_interpreter()
        except EngineEnvironmentError:
            return  # the model list says what is missing
        self.models.query(
            "CrossEarth: models that fit the layer",
            args,
            interpreter,
            lambda report: self._fit_checked(serial, report),
            quiet=True,
        )

    def _fit_args(self) -> list[str] | None:
        layer = self.form.layer_combo.currentLayer()
        model = self.models.current_model()
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
            features = self.models.features
            can_download = features.get("download") if features is not None else None
            self.form.fit_panel.show_report(report, can_download)

    def segment(self) -> EngineTask | None:
        """Checks the choices and starts the segmentation task (None when it cannot start)."""
        if self.task is not None:
            return None
        # Nothing of the run before stays on show while this one is checked and starts.
        self.form.clear_status()
        try:
            job = self.build_request()
        except (InputProblem, EngineEnvironmentError) as exc:
            messages.error(self.iface, str(exc))
            return None
        request, layer, model = job.request, job.layer, job.model
        if job.export is not None and not self.area.confirm_size(job.export):
            self.form.status_label.setText(
                f"Not started: reading {job.export.describe()} from '{layer.name()}' was declined."
            )
            return None
        existing = [path for path in request.outputs() if path.exists()]
        if existing:
            if not self._confirm_replace(existing):
                self.form.status_label.setText("Not started: the existing output was kept.")
                return None
            request.overwrite = True  # the engine refuses an existing output without it
        settings.set_value(settings.MODEL, model.path)
        settings.set_value(settings.DEVICE, request.device)
        description = f"CrossEarth: segmenting {layer.name()}"
        if job.export is not None:
            task: EngineTask = ExportSegmentTask(
                description, request.args(), job.interpreter, job.export, warm=True
            )
            status = f"Reading '{layer.name()}': {job.export.describe()}..."
        else:
            task = EngineTask(description, request.args(), job.interpreter, warm=True)
            status = f"Starting the engine for {model.name}..."
        running = RunningSegmentation(request, layer.name(), layer.id(), model)
        self.jobs.start(task, status, lambda: self.results.show(task, running))
        messages.log(f"segmenting {layer.name()} with {model.name}: {' '.join(request.args())}")
        return task

    def cancel(self) -> None:
        self.jobs.cancel()

    def build_request(self) -> Job:
        """The job the current choices describe; InputProblem/EngineEnvironmentError if none."""
        layer = self.form.layer_combo.currentLayer()
        kind = layer_kind(layer)
        source = local_raster_source(layer) if kind == FILE else ""
        # The environment next: without it the model list and everything after are unknown.
        interpreter = resolve_interpreter()
        model = self.models.current_model()
        if model is None:
            raise InputProblem(
                "No model is chosen. Wait for the model list to load, or add a model with "
                f"'{ADD_MODEL_TEXT}' in the model list."
            )
        bands = parse_bands(self.form.bands_edit.text())
        if kind == RENDERED:
            check_rendered_bands(layer.name(), model.name, model.bands, bands)
        else:
            check_bands(layer, model.name, model.bands, bands)
        device = self.form.device_combo.currentData() or "auto"
        if device.startswith("cuda") and self.models.cuda_available is False:
            raise InputProblem(
                f"The device {device} (CUDA) was chosen but CUDA is not available in the engine "
                "environment (no usable NVIDIA GPU or driver, or a CPU-only PyTorch). Choose "
                "Auto or CPU as the device."
            )
        extent = self.area.extent(layer)
        export = None
        if kind != FILE:
            # Read over the extent at the processing resolution; the engine segments the file.
            area = self.area
            export = plan_export(layer, area.export_extent(layer), area.export_gsd(layer, model))
            source, extent = str(export.destination), None
        polygons = self.form.polygons_check.isChecked()
        output = self.form.output_widget.filePath().strip()
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
            tile=self.form.tile_spin.value() or None,
            overlap=None if self.form.overlap_spin.value() < 0 else self.form.overlap_spin.value(),
            batch=self.form.batch_spin.value(),
            bands=bands,
            confidence=f"{stem}_confidence.tif" if self.form.confidence_check.isChecked() else None,
            polygons=f"{stem}_classes.gpkg" if polygons else None,
            extent=extent,
            workers=self.form.workers_combo.currentData() if self.models.ray_version else None,
            runtime=self.form.runtime_combo.currentData(),
            compile=self.form.compile_check.isEnabled() and self.form.compile_check.isChecked(),
            **self.area.processing_options(
                export is not None, self.form.polygons_check.isChecked()
            ),
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
        segmentation (segment) and a conversion (models.py) ask it."""
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
        self.jobs.stop()
        self.models.stop_queries()
        with contextlib.suppress(TypeError, RuntimeError):  # already disconnected
            catalog_events.package_added.disconnect(self.models.package_added)
        self.area.disconnect()
        if self.iface is not None:
            with contextlib.suppress(TypeError, RuntimeError):  # already disconnected
                self.iface.currentLayerChanged.disconnect(self.follow_layer)
