"""The "Segment layer" dock: choose a raster, a model and a device, run, watch, cancel.

All engine work happens in QgsTasks running worker processes, so QGIS stays responsive; the
dock only checks the analyst's choices, starts tasks and turns their results into layers.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapLayer,
    QgsMapLayerProxyModel,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
)
from qgis.gui import (
    QgsCheckableComboBox,
    QgsCollapsibleGroupBox,
    QgsDockWidget,
    QgsDoubleSpinBox,
    QgsFileWidget,
    QgsMapLayerComboBox,
    QgsSpinBox,
)
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QBrush, QPalette
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from . import messages, settings, styling
from .add_model import AddModelDialog
from .catalog_events import catalog_events
from .engine_env import EngineEnvironmentError, Interpreter, resolve_interpreter
from .inputs import (
    InputProblem,
    check_bands,
    extent_in_layer_crs,
    local_raster_source,
    parse_bands,
    selected_features_extent,
)
from .layer_export import (
    DEFAULT_LIMIT_MPX,
    FILE,
    RENDERED,
    ExportGrid,
    ExportPlan,
    ExportSegmentTask,
    check_rendered_bands,
    export_grid,
    format_gsd,
    ground_size,
    has_fixed_grid,
    layer_gsd_m,
    layer_kind,
    native_units_per_pixel,
    plan_export,
)
from .models import (
    LIST_MODELS_ARGS,
    AvailableModel,
    ModelCatalog,
    ModelEntry,
    catalog_from_json,
)
from .models import install_package as copy_package
from .models import preset_names as engine_preset_names
from .worker import ConvertRequest, DownloadRequest, EngineError, EngineTask, SegmentRequest

log = logging.getLogger("crossearth_qgis.dock")

ADD_MODEL = "__add_model__"
ADD_MODEL_TEXT = "Add model package or official checkpoint..."
# Item data of an official model that can be downloaded: this prefix + its catalog name.
DOWNLOAD_PREFIX = "__download__:"
AREA_WHOLE, AREA_CANVAS, AREA_SELECTION = "whole", "canvas", "selection"
CHECK_ARGS = ["check", "--json"]
GSD_AUTO, GSD_NATIVE, GSD_METRES = "auto", "native", "metres"
REGION_UNITS = [("pixels", "px"), ("m²", "m2"), ("ha", "ha")]


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

    # --- widgets ------------------------------------------------------------------------------

    def _build(self) -> None:
        body = QWidget()
        layout = QVBoxLayout(body)
        form = QFormLayout()

        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.layer_combo.setAllowEmptyLayer(True)
        form.addRow("Raster layer", self.layer_combo)

        self.model_combo = QComboBox()
        self.model_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.refresh_button = QToolButton()
        self.refresh_button.setIcon(QgsApplication.getThemeIcon("/mActionRefresh.svg"))
        self.refresh_button.setToolTip("Look for models and GPUs again")
        self.refresh_button.clicked.connect(self.refresh_engine_info)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.refresh_button)
        form.addRow("Model", row)
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        form.addRow("", self.model_info)

        self.device_combo = QComboBox()
        form.addRow("Device", self.device_combo)

        self.area_combo = QComboBox()
        self.area_combo.addItem("Whole layer", AREA_WHOLE)
        self.area_combo.addItem("Current map extent", AREA_CANVAS)
        self.area_combo.addItem("Extent of selected features", AREA_SELECTION)
        form.addRow("Area", self.area_combo)
        self.area_layer_combo = QgsMapLayerComboBox()
        self.area_layer_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.area_layer_label = QLabel("Polygons from")
        form.addRow(self.area_layer_label, self.area_layer_combo)
        self.resolution_label = QLabel()
        self.resolution_label.setWordWrap(True)
        form.addRow("", self.resolution_label)
        self.gsd_warning = QLabel()
        self.gsd_warning.setWordWrap(True)
        self.gsd_warning.setStyleSheet("color: #b35c00")
        form.addRow("", self.gsd_warning)
        layout.addLayout(form)

        self.advanced = QgsCollapsibleGroupBox("Advanced")
        self.advanced.setCollapsed(True)
        advanced = QFormLayout(self.advanced)
        self.tile_spin = QgsSpinBox()
        self.tile_spin.setRange(0, 4096)
        self.tile_spin.setSingleStep(16)
        self.tile_spin.setSpecialValueText("model's")
        self.tile_spin.setClearValue(0)
        self.tile_spin.setSuffix(" px")
        advanced.addRow("Tile size", self.tile_spin)
        self.overlap_spin = QgsSpinBox()
        self.overlap_spin.setRange(-1, 2048)
        self.overlap_spin.setSpecialValueText("model's")
        self.overlap_spin.setClearValue(-1)
        self.overlap_spin.setValue(-1)
        self.overlap_spin.setSuffix(" px")
        advanced.addRow("Overlap", self.overlap_spin)
        self.batch_spin = QgsSpinBox()
        self.batch_spin.setRange(1, 256)
        self.batch_spin.setClearValue(4)
        self.batch_spin.setValue(4)
        advanced.addRow("Batch size", self.batch_spin)
        self.bands_edit = QLineEdit()
        self.bands_edit.setPlaceholderText("by band names, e.g. 3,2,1")
        self.bands_edit.setToolTip(
            "Band numbers of the raster, one per model input in the model's order"
        )
        advanced.addRow("Bands", self.bands_edit)
        self.workers_label = QLabel("Workers")
        self.workers_combo = QComboBox()
        self.workers_combo.setToolTip(
            "Share the layer among several model workers with Ray (one per GPU, or the CPU "
            "cores divided among them); the result is the same as with one process"
        )
        advanced.addRow(self.workers_label, self.workers_combo)
        self._fill_workers({})  # shown once the engine reports Ray (see _devices_checked)
        self._build_resolution(advanced)
        self.output_widget = QgsFileWidget()
        self.output_widget.setStorageMode(QgsFileWidget.SaveFile)
        self.output_widget.setFilter("GeoTIFF (*.tif *.tiff)")
        self.output_widget.lineEdit().setPlaceholderText("[Save to temporary file]")
        # The dock asks before replacing anything when the job starts (see _confirm_replace):
        # that also covers typed names and the confidence and polygon files beside the output.
        self.output_widget.setConfirmOverwrite(False)
        advanced.addRow("Output", self.output_widget)
        self.confidence_check = QCheckBox("Also write a confidence raster")
        advanced.addRow(self.confidence_check)
        self.polygons_check = QCheckBox("Also write class polygons (GeoPackage)")
        advanced.addRow(self.polygons_check)
        layout.addWidget(self.advanced)
        self._build_post_processing(layout)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Segment layer")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.segment)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress_bar = QProgressBar()
        self.progress_bar.setRange(0, 100)
        self.progress_bar.setValue(0)
        layout.addWidget(self.progress_bar)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        layout.addStretch(1)
        self.setWidget(body)

        self.model_combo.currentIndexChanged.connect(self._model_changed)
        self.area_combo.currentIndexChanged.connect(self._area_changed)
        self.area_combo.currentIndexChanged.connect(self.update_resolution_info)
        self.layer_combo.layerChanged.connect(self.update_resolution_info)
        self._area_changed()
        self._fill_devices()

    def follow_layer(self, layer: QgsMapLayer | None) -> None:
        """Keeps the raster picker on the active layer when that is a raster."""
        if isinstance(layer, QgsRasterLayer) and self.task is None:
            self.layer_combo.setLayer(layer)

    def _area_changed(self) -> None:
        by_selection = self.area_combo.currentData() == AREA_SELECTION
        self.area_layer_combo.setVisible(by_selection)
        self.area_layer_label.setVisible(by_selection)

    # --- models and devices (asked from the engine in background tasks) -----------------------

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt override)
        super().showEvent(event)
        if self.catalog is None and not self._query_tasks:
            self.refresh_engine_info()

    def refresh_engine_info(self) -> None:
        """Lists the models and the devices again (two quick worker runs in the background)."""
        try:
            interpreter = resolve_interpreter()
        except EngineEnvironmentError as exc:
            self.model_info.setText(str(exc))
            return
        self.model_info.setText("Looking for models...")
        self._query(
            "CrossEarth: listing models", LIST_MODELS_ARGS, interpreter, self._models_listed
        )
        self._query("CrossEarth: checking devices", CHECK_ARGS, interpreter, self._devices_checked)

    def _query(
        self,
        description: str,
        args: list[str],
        interpreter: Interpreter,
        done: Callable[[Any], None],
    ) -> None:
        task = EngineTask(description, args, interpreter, cancelable=False, timeout_s=300)
        task.completed.connect(lambda: self._query_done(task, done))
        self._query_tasks.append(task)
        QgsApplication.taskManager().addTask(task)

    def _query_done(self, task: EngineTask, done: Callable[[Any], None]) -> None:
        if task in self._query_tasks:
            self._query_tasks.remove(task)
        if task.error is not None:
            details = getattr(task.error, "details", "")
            messages.log(f"{task.description()}: {task.error}\n{details}", Qgis.Warning)
            self.model_info.setText(str(task.error))
            return
        try:
            done(task.outcome.json())
        except EngineError as exc:
            messages.log(f"{task.description()}: {exc}\n{exc.details}", Qgis.Warning)

    def _models_listed(self, data: dict[str, Any]) -> None:
        self.set_catalog(catalog_from_json(data))

    def _devices_checked(self, report: dict[str, Any]) -> None:
        self.cuda_available = bool(report.get("cuda_available"))
        self.devices = list(report.get("devices", []))
        self._fill_devices()
        self._fill_workers(report)

    def _fill_workers(self, report: dict[str, Any]) -> None:
        """Workers is offered only when the engine environment has Ray (`check --json`)."""
        self.ray_version = report.get("ray") or None
        wanted = self.workers_combo.currentData()
        self.workers_combo.clear()
        self.workers_combo.addItem("Off (one process)", None)
        self.workers_combo.addItem("Auto (one per GPU, or CPU cores shared)", "auto")
        gpus = sum(1 for d in report.get("devices", []) if d.get("id") != "cpu")
        most = min(64, max(2, gpus, int(report.get("cpu_count") or 2)))
        for count in range(2, most + 1):
            self.workers_combo.addItem(str(count), str(count))
        self.workers_combo.setCurrentIndex(max(0, self.workers_combo.findData(wanted)))
        self.workers_label.setVisible(self.ray_version is not None)
        self.workers_combo.setVisible(self.ray_version is not None)

    def set_catalog(self, catalog: ModelCatalog, select: str | None = None) -> None:
        """Fills the model picker; keeps the current, else the saved, else the default model."""
        wanted = select or self.model_combo.currentData() or settings.get(settings.MODEL)
        self.catalog = catalog
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for entry in catalog.models:
            self.model_combo.addItem(entry.label(), entry.path)
            self.model_combo.setItemData(
                self.model_combo.count() - 1, entry.summary(), Qt.ToolTipRole
            )
        self._add_downloadable(catalog.downloadable())
        self.model_combo.insertSeparator(self.model_combo.count())
        self.model_combo.addItem(ADD_MODEL_TEXT, ADD_MODEL)
        chosen = catalog.find(wanted) if wanted else None
        chosen = chosen or next((m for m in catalog.models if m.default), None)
        chosen = chosen or (catalog.models[0] if catalog.models else None)
        self.model_combo.setCurrentIndex(self.model_combo.findData(chosen.path) if chosen else -1)
        self.model_combo.blockSignals(False)
        self._model_changed()
        for problem in catalog.problems:
            messages.log(f"broken model package: {problem}", Qgis.Warning)

    def current_model(self) -> ModelEntry | None:
        if self.catalog is None:
            return None
        key = self.model_combo.currentData()
        return self.catalog.find(key) if key and key != ADD_MODEL else None

    def _model_changed(self) -> None:
        data = self.model_combo.currentData()
        if data == ADD_MODEL or (isinstance(data, str) and data.startswith(DOWNLOAD_PREFIX)):
            # An action, not a model: the choice returns to the model chosen before.
            self.model_combo.blockSignals(True)
            self.model_combo.setCurrentIndex(self._last_model_index)
            self.model_combo.blockSignals(False)
            if data == ADD_MODEL:
                self.add_model()
            else:
                self.offer_download(data[len(DOWNLOAD_PREFIX) :])
            return
        self._last_model_index = self.model_combo.currentIndex()
        entry = self.current_model()
        if entry is not None:
            self.model_info.setText(entry.summary())
        elif self.catalog is not None and not self.catalog.models:
            self.model_info.setText(
                f"No model package is installed yet: choose '{ADD_MODEL_TEXT}' above."
            )
        self._update_model_options()

    def _fill_devices(self) -> None:
        wanted = self.device_combo.currentData() or settings.get(settings.DEVICE) or "auto"
        self.device_combo.clear()
        self.device_combo.addItem("Auto (a GPU when there is one)", "auto")
        self.device_combo.addItem("CPU", "cpu")
        for device in self.devices or []:
            if device.get("id") == "cpu":
                continue
            memory = f", {device['memory_gib']} GiB" if "memory_gib" in device else ""
            self.device_combo.addItem(f"{device['name']} ({device['id']}{memory})", device["id"])
        if self.device_combo.findData(wanted) < 0:
            # A GPU chosen earlier that this engine does not see now: keep it visible.
            self.device_combo.addItem(f"{wanted} (not detected)", wanted)
        self.device_combo.setCurrentIndex(self.device_combo.findData(wanted))

    # --- adding models ------------------------------------------------------------------------

    def add_model(self) -> None:
        """Asks for a package folder or a checkpoint, then installs or converts it."""
        try:
            interpreter = resolve_interpreter()
            presets = engine_preset_names(interpreter)
        except (EngineEnvironmentError, EngineError) as exc:
            messages.error(self.iface, str(exc), getattr(exc, "details", None))
            return
        dialog = AddModelDialog(presets, self._user_models_dir(), self)
        if not dialog.exec_():
            return
        if dialog.is_conversion():
            self.convert_checkpoint(dialog.convert_request())
        else:
            self.install_package(dialog.package_folder())

    def _user_models_dir(self) -> str:
        if self.catalog is not None and self.catalog.user_dir:
            return self.catalog.user_dir
        from .engine_env import user_data_dir

        return str(user_data_dir() / "crossearth" / "models")

    def install_package(self, folder: str) -> Path | None:
        """Copies a model package into the user models folder and selects it."""
        try:
            target = copy_package(Path(folder), Path(self._user_models_dir()))
        except (EngineError, OSError) as exc:
            messages.error(self.iface, f"The model package was not added: {exc}")
            return None
        messages.notify(self.iface, f"Model package added: {target}", Qgis.Success)
        self._refresh_models(select=str(target))
        return target

    def convert_checkpoint(self, request: ConvertRequest) -> EngineTask | None:
        """Converts an official checkpoint into a package (background task), then selects it."""
        if not request.checkpoint or not Path(request.checkpoint).is_file():
            messages.error(
                self.iface, f"Choose the checkpoint file (.pth) to convert ({request.checkpoint})."
            )
            return None
        try:
            interpreter = resolve_interpreter()
        except EngineEnvironmentError as exc:
            messages.error(self.iface, str(exc))
            return None
        if Path(request.output).exists():
            if not self._confirm_replace([Path(request.output)]):
                self.status_label.setText("Not converted: the existing model was kept.")
                return None
            request.overwrite = True  # the engine still replaces only a package it wrote
        Path(request.output).parent.mkdir(parents=True, exist_ok=True)
        task = EngineTask(
            f"CrossEarth: converting {Path(request.checkpoint).name}",
            request.args(),
            interpreter,
        )
        task.completed.connect(lambda: self._converted(task, request))
        self._query_tasks.append(task)
        self.status_label.setText(f"Converting {Path(request.checkpoint).name}...")
        QgsApplication.taskManager().addTask(task)
        return task

    def _converted(self, task: EngineTask, request: ConvertRequest) -> None:
        if task in self._query_tasks:
            self._query_tasks.remove(task)
        self.status_label.setText("")
        if task.cancelled:
            messages.notify(self.iface, "Conversion cancelled; no package was written.")
            return
        if task.error is not None:
            messages.error(
                self.iface,
                f"The checkpoint was not converted: {task.error}",
                getattr(task.error, "details", None),
            )
            return
        for warning in task.outcome.warnings:
            messages.notify(self.iface, f"Conversion: {warning}", Qgis.Warning)
        messages.notify(self.iface, f"Checkpoint converted into {request.output}", Qgis.Success)
        self._refresh_models(select=request.output)

    # --- downloading official models ----------------------------------------------------------

    def _add_downloadable(self, available: list[AvailableModel]) -> None:
        """The official models not installed yet, greyed, with their size."""
        if not available:
            return
        self.model_combo.insertSeparator(self.model_combo.count())
        grey = QBrush(self.palette().color(QPalette.Disabled, QPalette.Text))
        for model in available:
            self.model_combo.addItem(model.label(), f"{DOWNLOAD_PREFIX}{model.name}")
            index = self.model_combo.count() - 1
            self.model_combo.setItemData(index, grey, Qt.ForegroundRole)
            self.model_combo.setItemData(
                index, f"Not installed; choose it to download. {model.summary()}", Qt.ToolTipRole
            )

    def offer_download(self, name: str) -> EngineTask | None:
        """Asks whether to download an official model, then downloads it (background task)."""
        model = self.catalog.find_available(name) if self.catalog is not None else None
        if model is None:
            return None
        answer = QMessageBox.question(
            self,
            "CrossEarth",
            f"Download {model.name} ({model.size_text}) and install it in "
            f"{self._user_models_dir()}?\n\n{model.summary()}\n\nLicense: {model.license}",
            QMessageBox.Yes | QMessageBox.No,
            QMessageBox.Yes,
        )
        if answer != QMessageBox.Yes:
            return None
        return self.download_model(model.name)

    def download_model(self, name: str) -> EngineTask | None:
        """Downloads and installs an official model; selects it when it is ready."""
        if self.task is not None:
            messages.error(self.iface, "Wait for the running job to finish, or cancel it first.")
            return None
        try:
            interpreter = resolve_interpreter()
        except EngineEnvironmentError as exc:
            messages.error(self.iface, str(exc))
            return None
        task = EngineTask(
            f"CrossEarth: downloading {name}", DownloadRequest(name).args(), interpreter
        )
        task.progressChanged.connect(self._task_progress)
        task.statusChanged.connect(self.status_label.setText)
        task.completed.connect(lambda: self._downloaded(task, name))
        self.task = task
        self._set_running(True)
        self.status_label.setText(f"Downloading {name}...")
        QgsApplication.taskManager().addTask(task)
        return task

    def _downloaded(self, task: EngineTask, name: str) -> None:
        if self.task is task:
            self.task = None
        self._set_running(False)
        for line in task.stderr_lines:
            messages.log(line)
        if task.cancelled:
            self.status_label.setText("Download cancelled; nothing was installed.")
            messages.notify(self.iface, f"Download of {name} cancelled; nothing was installed.")
            return
        if task.error is not None:
            self.status_label.setText("Download failed; see the message bar.")
            messages.error(
                self.iface,
                f"{name} was not downloaded: {task.error}",
                getattr(task.error, "details", None),
            )
            return
        done = task.outcome.done or {}
        package = str(done.get("package", ""))
        self.progress_bar.setValue(100)
        self.status_label.setText(f"Installed {name}.")
        for warning in done.get("warnings", []):
            messages.notify(self.iface, f"Download: {warning}", Qgis.Warning)
        messages.notify(
            self.iface, f"Model {name} downloaded and installed: {package}", Qgis.Success
        )
        self._refresh_models(select=package)

    def _package_added(self, path: str) -> None:
        """A package was written elsewhere (e.g. by "Fine-tune model"): list it."""
        if self.catalog is not None:
            self._refresh_models(select=path)

    def _refresh_models(self, select: str | None = None) -> None:
        try:
            interpreter = resolve_interpreter()
        except EngineEnvironmentError as exc:
            messages.error(self.iface, str(exc))
            return
        self._query(
            "CrossEarth: listing models",
            LIST_MODELS_ARGS,
            interpreter,
            lambda data: self.set_catalog(catalog_from_json(data), select=select),
        )

    # --- processing resolution, web layers, post-processing ----------------------------------

    def _build_resolution(self, advanced: QFormLayout) -> None:
        self.gsd_combo = QComboBox()
        self.gsd_combo.addItem("Auto (the model's GSD)", GSD_AUTO)
        self.gsd_combo.addItem("Native (the layer's pixels)", GSD_NATIVE)
        self.gsd_combo.addItem("Metres per pixel", GSD_METRES)
        self.gsd_combo.setToolTip(
            "The ground sample distance the model runs at. Auto resamples the layer on the fly "
            "to the resolution the model was trained at; the result keeps the layer's grid."
        )
        self.gsd_spin = QgsDoubleSpinBox()
        self.gsd_spin.setRange(0.01, 100000.0)
        self.gsd_spin.setDecimals(2)
        self.gsd_spin.setClearValue(1.0)
        self.gsd_spin.setValue(1.0)
        self.gsd_spin.setSuffix(" m")
        self.gsd_spin.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.gsd_combo, 1)
        row.addWidget(self.gsd_spin)
        advanced.addRow("Processing resolution", row)
        self.grid_combo = QComboBox()
        self.grid_combo.addItem("The layer's grid", "source")
        self.grid_combo.addItem("The processing grid (small results for fine imagery)", "model")
        advanced.addRow("Result grid", self.grid_combo)
        self.gsd_combo.currentIndexChanged.connect(self._gsd_changed)
        self.gsd_spin.valueChanged.connect(self.update_resolution_info)

    def _build_post_processing(self, layout: QVBoxLayout) -> None:
        self.post_processing = QgsCollapsibleGroupBox("Post-processing")
        self.post_processing.setCollapsed(True)
        form = QFormLayout(self.post_processing)
        self.min_region_spin = QgsDoubleSpinBox()
        self.min_region_spin.setRange(0.0, 1e12)
        self.min_region_spin.setDecimals(2)
        self.min_region_spin.setSpecialValueText("off")
        self.min_region_spin.setClearValue(0.0)
        self.min_region_spin.setToolTip(
            "Regions smaller than this are merged into the class around them"
        )
        self.min_region_unit = QComboBox()
        for label, unit in REGION_UNITS:
            self.min_region_unit.addItem(label, unit)
        row = QHBoxLayout()
        row.addWidget(self.min_region_spin, 1)
        row.addWidget(self.min_region_unit)
        form.addRow("Minimum region size", row)
        self.keep_combo = QgsCheckableComboBox()
        self.keep_combo.setDefaultText("none")
        self.keep_combo.setToolTip("Small regions of these classes stay as they are")
        form.addRow("Keep small regions of", self.keep_combo)
        self.simplify_spin = QgsDoubleSpinBox()
        self.simplify_spin.setRange(0.0, 1e6)
        self.simplify_spin.setDecimals(2)
        self.simplify_spin.setSpecialValueText("off")
        self.simplify_spin.setClearValue(0.0)
        self.simplify_spin.setSuffix(" m")
        self.simplify_spin.setToolTip("Tolerance for simplifying the class polygons")
        form.addRow("Simplify polygons", self.simplify_spin)
        layout.addWidget(self.post_processing)

    def _gsd_changed(self) -> None:
        self.gsd_spin.setEnabled(self.gsd_combo.currentData() == GSD_METRES)
        self.update_resolution_info()

    def _update_model_options(self) -> None:
        """The class names to keep follow the model; the resolution note follows too."""
        entry = self.current_model()
        names = entry.class_names if entry is not None else []
        kept = [name for name in self.keep_combo.checkedItems() if name in names]
        self.keep_combo.clear()
        self.keep_combo.addItems(names)
        self.keep_combo.setCheckedItems(kept)
        self.update_resolution_info()

    def _processing_options(self, exported: bool, polygons: bool) -> dict[str, Any]:
        """--gsd, --output-grid, --min-region, --keep-classes and --simplify as chosen."""
        options: dict[str, Any] = {}
        choice = self.gsd_combo.currentData()
        if exported:
            options["gsd"] = "native"  # read at the processing resolution already
        elif choice == GSD_METRES:
            options["gsd"] = f"{self.gsd_spin.value():g}"
            options["output_grid"] = self.grid_combo.currentData()
        else:
            options["gsd"] = choice
            options["output_grid"] = self.grid_combo.currentData()
        size = self.min_region_spin.value()
        if size > 0:
            unit = self.min_region_unit.currentData()
            options["min_region"] = str(max(1, round(size))) if unit == "px" else f"{size:g}{unit}"
            options["keep_classes"] = list(self.keep_combo.checkedItems()) or None
        if polygons and self.simplify_spin.value() > 0:
            options["simplify"] = self.simplify_spin.value()
        return options

    def _canvas(self) -> Any:
        return self.iface.mapCanvas() if self.iface is not None else None

    def _canvas_gsd(self) -> float:
        canvas = self._canvas()
        if canvas is None:
            raise InputProblem("There is no map to take a resolution from; choose one in metres.")
        units = canvas.mapUnitsPerPixel()
        return ground_size((units, units), canvas.mapSettings().destinationCrs(), canvas.extent())

    def _export_gsd(self, layer: QgsRasterLayer, model: ModelEntry | None) -> float | None:
        """The resolution a non-file layer is read at, in metres (None: the layer's own pixels):
        as chosen; Auto is the model's GSD, else the layer's pixels, else the map's."""
        choice = self.gsd_combo.currentData()
        if choice == GSD_METRES:
            return self.gsd_spin.value()
        model_gsd = model.card.get("gsd_m") if model is not None else None
        if choice == GSD_AUTO and model_gsd:
            return float(model_gsd)
        if choice == GSD_NATIVE and native_units_per_pixel(layer) is not None:
            return None
        if choice == GSD_AUTO and has_fixed_grid(layer):
            return None
        return self._canvas_gsd()

    def _export_extent(self, layer: QgsRasterLayer) -> tuple[float, float, float, float]:
        """The area read from a non-file layer: as chosen; "Whole layer" is the map extent for
        web layers, which have no extent of their own (XYZ: the whole world)."""
        chosen = self._extent(layer)
        if chosen is not None:
            return chosen
        if has_fixed_grid(layer):
            box = layer.extent()
            return (box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum())
        canvas = self._canvas()
        if canvas is None:
            raise InputProblem(f"Choose the area to read from '{layer.name()}'.")
        return extent_in_layer_crs(
            canvas.extent(), canvas.mapSettings().destinationCrs(), layer, "The current map extent"
        )

    def export_grid_for(self, layer: QgsRasterLayer, model: ModelEntry | None) -> ExportGrid:
        return export_grid(layer, self._export_extent(layer), self._export_gsd(layer, model))

    def update_resolution_info(self, *_: Any) -> None:
        """The layer's and the model's GSD (a warning when they are more than 2x apart), and for
        non-file layers the size that will be read."""
        self.resolution_label.setText("")
        self.gsd_warning.setText("")
        layer = self.layer_combo.currentLayer()
        model = self.current_model()
        try:
            kind = layer_kind(layer)
            layer_gsd = layer_gsd_m(layer)
        except InputProblem:
            return
        model_gsd = model.card.get("gsd_m") if model is not None else None
        lines = [
            f"Layer pixels: {format_gsd(layer_gsd) if layer_gsd else 'none of its own'}; "
            f"model GSD: {format_gsd(model_gsd) if model_gsd else 'not stated'}"
        ]
        if kind != FILE and model is not None:
            try:
                lines.append(f"Reads {self.export_grid_for(layer, model).describe()}.")
            except InputProblem as exc:
                lines.append(str(exc))
        self.resolution_label.setText("\n".join(lines))
        if layer_gsd and model_gsd and max(layer_gsd / model_gsd, model_gsd / layer_gsd) > 2:
            how = "finer" if layer_gsd < model_gsd else "coarser"
            ratio = max(layer_gsd / model_gsd, model_gsd / layer_gsd)
            self.gsd_warning.setText(
                f"The layer's pixels ({format_gsd(layer_gsd)}) are {ratio:.1f}x {how} than the "
                f"model's ({format_gsd(model_gsd)}). Auto resamples them to the model's GSD; "
                "check that this model suits this imagery."
            )

    def _confirm_size(self, plan: ExportPlan) -> bool:
        """Asks before reading more than the limit from a non-file layer (No is the default)."""
        try:
            limit = float(settings.get(settings.EXPORT_LIMIT_MPX) or DEFAULT_LIMIT_MPX)
        except ValueError:
            limit = DEFAULT_LIMIT_MPX
        if plan.pixels <= limit * 1e6:
            return True
        answer = QMessageBox.question(
            self,
            "CrossEarth",
            f"'{plan.layer_name}' is read as {plan.describe()}, more than {limit:g} Mpx: that "
            "much imagery takes long to download and to segment.\n\nRead and segment it anyway?",
            QMessageBox.Yes | QMessageBox.No,
            QMessageBox.No,
        )
        return answer == QMessageBox.Yes

    # --- segmenting ---------------------------------------------------------------------------

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
            **self._processing_options(export is not None, self.polygons_check.isChecked()),
        )
        return Job(request, layer, model, interpreter, export)

    def _extent(self, layer: QgsRasterLayer) -> tuple[float, float, float, float] | None:
        area = self.area_combo.currentData()
        if area == AREA_CANVAS:
            canvas = self.iface.mapCanvas()
            return extent_in_layer_crs(
                canvas.extent(),
                canvas.mapSettings().destinationCrs(),
                layer,
                "The current map extent",
            )
        if area == AREA_SELECTION:
            polygons = self.area_layer_combo.currentLayer()
            box = selected_features_extent(polygons)
            return extent_in_layer_crs(
                box, polygons.crs(), layer, f"The selection in '{polygons.name()}'"
            )
        return None

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
        """Asks whether files that already exist may be replaced (No is the default)."""
        names = "\n".join(str(path) for path in existing)
        these, them = ("These already exist", "them") if existing[1:] else ("This exists", "it")
        answer = QMessageBox.question(
            self,
            "CrossEarth",
            f"{these}:\n{names}\n\nReplace {them} with the new result?",
            QMessageBox.Yes | QMessageBox.No,
            QMessageBox.No,
        )
        return answer == QMessageBox.Yes

    def segment(self) -> EngineTask | None:
        """Checks the choices and starts the segmentation task (None when it cannot start)."""
        if self.task is not None:
            return None
        try:
            job = self.build_request()
        except (InputProblem, EngineEnvironmentError) as exc:
            messages.error(self.iface, str(exc))
            return None
        request, layer, model, interpreter = job.request, job.layer, job.model, job.interpreter
        if job.export is not None and not self._confirm_size(job.export):
            self.status_label.setText(
                f"Not started: reading {job.export.describe()} from '{layer.name()}' was declined."
            )
            return None
        existing = [path for path in request.outputs() if path.exists()]
        if existing:
            if not self._confirm_replace(existing):
                self.status_label.setText("Not started: the existing output was kept.")
                return None
            request.overwrite = True  # the engine refuses an existing output without it
        settings.set_value(settings.MODEL, model.path)
        settings.set_value(settings.DEVICE, request.device)
        description = f"CrossEarth: segmenting {layer.name()}"
        if job.export is not None:
            task = ExportSegmentTask(description, request.args(), interpreter, job.export)
        else:
            task = EngineTask(description, request.args(), interpreter)
        task.progressChanged.connect(self._task_progress)
        task.statusChanged.connect(self.status_label.setText)
        task.completed.connect(self._segment_finished)
        self.task = task
        self._running = {"request": request, "layer_name": layer.name(), "model": model}
        self._set_running(True)
        if job.export is not None:
            self.status_label.setText(f"Reading '{layer.name()}': {job.export.describe()}...")
        else:
            self.status_label.setText(f"Starting the engine for {model.name}...")
        messages.log(f"segmenting {layer.name()} with {model.name}: {' '.join(request.args())}")
        QgsApplication.taskManager().addTask(task)
        return task

    def cancel(self) -> None:
        if self.task is not None:
            self.status_label.setText("Cancelling...")
            self.task.cancel()

    def _task_progress(self, percent: float) -> None:
        self.progress_bar.setValue(int(percent))

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.progress_bar.setValue(0)

    def _segment_finished(self) -> None:
        task, self.task = self.task, None
        running, self._running = self._running, {}
        self._set_running(False)
        if task is None:
            return
        for line in task.stderr_lines:
            messages.log(line)
        if task.cancelled:
            self.status_label.setText("Cancelled; no output was written.")
            messages.notify(self.iface, "Segmentation cancelled; no output was written.")
            return
        if task.error is not None:
            self.status_label.setText("Failed; see the message bar.")
            messages.error(self.iface, str(task.error), getattr(task.error, "details", None))
            return
        for warning in getattr(task, "export_warnings", []):
            messages.notify(self.iface, warning, Qgis.Warning)
        self.progress_bar.setValue(100)
        self._add_results(task.outcome.done or {}, running)

    def _add_results(self, done: dict[str, Any], running: dict[str, Any]) -> None:
        request: SegmentRequest = running["request"]
        model: ModelEntry = running["model"]
        name = styling.result_layer_name(running["layer_name"], model.name)
        classes = styling.classes_from_card(model.card)
        project = QgsProject.instance()
        try:
            if request.confidence:
                confidence = styling.confidence_layer(request.confidence, f"{name} confidence")
                project.addMapLayer(confidence)
            result = styling.class_layer(request.output, name, classes)
            project.addMapLayer(result)
            if request.polygons:
                project.addMapLayer(
                    styling.polygon_layer(request.polygons, f"{name} polygons", classes)
                )
        except styling.StyleError as exc:
            messages.error(self.iface, f"The result could not be added: {exc}")
            return
        for warning in done.get("warnings", []):
            messages.notify(self.iface, warning, Qgis.Warning)
        summary = (
            f"Segmented '{running['layer_name']}' with {model.name} in "
            f"{done.get('seconds', 0):.1f} s on {done.get('device', '?')} "
            f"({done.get('tiles', '?')} tiles): {Path(request.output).name}"
        )
        self.status_label.setText(summary)
        self.status_label.setToolTip(request.output)
        pixels = ", ".join(f"{k} {v:,}" for k, v in done.get("classes", {}).items())
        details = "\n".join(str(p) for p in request.outputs()) + f"\npixels per class: {pixels}"
        messages.notify(self.iface, summary, Qgis.Success, details)

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
