"""The dock's form: the widgets, built in sections (what to segment with which model, the
advanced options, post-processing and the run controls), and what they show on their own.

The form knows nothing of the engine: the dock's parts fill it and read it (models.py the
model, device, workers and runtime lists; area.py the area and resolution; run.py the run
controls), and the dock connects its signals.
"""

from __future__ import annotations

from typing import Any, TypeVar

from qgis.core import QgsApplication
from qgis.gui import (
    QgsCheckableComboBox,
    QgsCollapsibleGroupBox,
    QgsDoubleSpinBox,
    QgsFileWidget,
    QgsMapLayerComboBox,
    QgsSpinBox,
)
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .. import qgis_enums
from ..worker.requests import RUNTIME_LABELS
from .choices import LayerChoices
from .fit_panel import ModelFitPanel

AREA_WHOLE, AREA_CANVAS, AREA_SELECTION = "whole", "canvas", "selection"
GSD_AUTO, GSD_NATIVE, GSD_METRES = "auto", "native", "metres"
REGION_UNITS = [("pixels", "px"), ("m²", "m2"), ("ha", "ha")]


# The dock's Runtime choices (the engine's --runtime values).
RUNTIME_CHOICES = tuple((label, name) for name, label in RUNTIME_LABELS.items())


class DockForm(QWidget):
    """The dock's widgets in their sections."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._has_torch = True
        layout = QVBoxLayout(self)
        layout.addLayout(self._build_choices())
        layout.addWidget(self._build_advanced())
        self._build_post_processing(layout)
        self._build_run_controls(layout)
        layout.addStretch(1)
        self.area_combo.currentIndexChanged.connect(self._area_changed)
        self.gsd_combo.currentIndexChanged.connect(self._gsd_changed)
        self._area_changed()

    def _area_changed(self) -> None:
        by_selection = self.area_combo.currentData() == AREA_SELECTION
        self.area_layer_combo.setVisible(by_selection)
        self.area_layer_label.setVisible(by_selection)

    def _gsd_changed(self) -> None:
        self.gsd_spin.setEnabled(self.gsd_combo.currentData() == GSD_METRES)

    def _build_choices(self) -> QFormLayout:
        """The layer, the model, the device and the area, with notes on the resolution."""
        form = QFormLayout()
        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(qgis_enums.RASTER_LAYERS)
        self.layer_combo.setAllowEmptyLayer(True)
        form.addRow("Raster layer", self.layer_combo)

        self.model_combo = QComboBox()
        self.model_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.refresh_button = QToolButton()
        self.refresh_button.setIcon(QgsApplication.getThemeIcon("/mActionRefresh.svg"))
        self.refresh_button.setToolTip("Look for models and GPUs again")
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.refresh_button)
        form.addRow("Model", row)
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        form.addRow("", self.model_info)
        self.fit_panel = ModelFitPanel()
        form.addRow("", self.fit_panel)

        self.device_combo = QComboBox()
        form.addRow("Device", self.device_combo)

        self.area_combo = QComboBox()
        self.area_combo.addItem("Whole layer", AREA_WHOLE)
        self.area_combo.addItem("Current map extent", AREA_CANVAS)
        self.area_combo.addItem("Extent of selected features", AREA_SELECTION)
        form.addRow("Area", self.area_combo)
        self.area_layer_combo = QgsMapLayerComboBox()
        self.area_layer_combo.setFilters(qgis_enums.POLYGON_LAYERS)
        self.area_layer_label = QLabel("Polygons from")
        form.addRow(self.area_layer_label, self.area_layer_combo)
        self.resolution_label = QLabel()
        self.resolution_label.setWordWrap(True)
        form.addRow("", self.resolution_label)
        self.gsd_warning = QLabel()
        self.gsd_warning.setWordWrap(True)
        self.gsd_warning.setStyleSheet("color: #b35c00")
        form.addRow("", self.gsd_warning)
        return form

    def _build_advanced(self) -> QgsCollapsibleGroupBox:
        """Tiling, bands and workers, the processing resolution, and the output files."""
        self.advanced = QgsCollapsibleGroupBox("Advanced")
        self.advanced.setCollapsed(True)
        advanced = QFormLayout(self.advanced)
        self._build_tiling(advanced)
        self._build_resolution(advanced)
        self._build_outputs(advanced)
        return self.advanced

    def _build_tiling(self, advanced: QFormLayout) -> None:
        self.tile_spin = _spin_box(QgsSpinBox(), (0, 4096), 0, "model's", " px")
        self.tile_spin.setSingleStep(16)
        advanced.addRow("Tile size", self.tile_spin)
        self.overlap_spin = _spin_box(QgsSpinBox(), (-1, 2048), -1, "model's", " px")
        advanced.addRow("Overlap", self.overlap_spin)
        self.batch_spin = _spin_box(QgsSpinBox(), (1, 256), 4)
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
        self.fill_workers(None)  # shown once the engine reports Ray
        self.runtime_combo = QComboBox()
        self.runtime_combo.setToolTip(
            "What runs the model. Auto: PyTorch on a GPU; on the CPU ONNX Runtime when the "
            "model has an ONNX graph (faster), else PyTorch"
        )
        # Compiling is a PyTorch option: on the runtime's row, so the dock stays as tall.
        self.compile_check = QCheckBox("Compile")
        self.compile_check.setToolTip(
            "torch.compile (PyTorch runtime): the first run with a tile and batch size compiles "
            "for minutes, later runs start from the cache. Pays off on GPUs and long runs"
        )
        self.runtime_combo.currentIndexChanged.connect(self._runtime_changed)
        self.fill_runtimes(None)  # narrowed to the installed ones once the engine reports
        row = QHBoxLayout()
        row.addWidget(self.runtime_combo, 1)
        row.addWidget(self.compile_check)
        advanced.addRow("Runtime", row)

    def form_choices(self) -> LayerChoices:
        """The choices that belong to the layer and model shown (see choices.py)."""
        return LayerChoices(
            bands=self.bands_edit.text(),
            gsd=self.gsd_combo.currentData(),
            gsd_m=self.gsd_spin.value(),
            runtime=self.runtime_combo.currentData(),
        )

    def set_form_choices(self, choices: LayerChoices) -> None:
        self.bands_edit.setText(choices.bands)
        self.gsd_combo.setCurrentIndex(max(0, self.gsd_combo.findData(choices.gsd)))
        self.gsd_spin.setValue(choices.gsd_m)
        # a runtime that this environment does not offer (any more) is Auto
        self.runtime_combo.setCurrentIndex(max(0, self.runtime_combo.findData(choices.runtime)))

    def fill_runtimes(self, installed: dict[str, str] | None) -> None:
        """Auto and the runtimes installed in the engine environment (None: not known yet,
        all of them)."""
        wanted = self.runtime_combo.currentData()
        self._has_torch = installed is None or "torch" in installed
        self.runtime_combo.blockSignals(True)
        self.runtime_combo.clear()
        for label, runtime in RUNTIME_CHOICES:
            if runtime == "auto" or installed is None or runtime in installed:
                self.runtime_combo.addItem(label, runtime)
        self.runtime_combo.setCurrentIndex(max(0, self.runtime_combo.findData(wanted)))
        self.runtime_combo.blockSignals(False)
        self._runtime_changed()

    def fill_workers(self, most: int | None) -> None:
        """The workers choice: off, auto and 2..`most`; hidden when None (no Ray)."""
        wanted = self.workers_combo.currentData()
        self.workers_combo.clear()
        self.workers_combo.addItem("Off (one process)", None)
        self.workers_combo.addItem("Auto (one per GPU, or CPU cores shared)", "auto")
        for count in range(2, (most or 1) + 1):
            self.workers_combo.addItem(str(count), str(count))
        self.workers_combo.setCurrentIndex(max(0, self.workers_combo.findData(wanted)))
        self.workers_label.setVisible(most is not None)
        self.workers_combo.setVisible(most is not None)

    def fill_devices(self, devices: list[dict[str, Any]], wanted: str) -> None:
        """Auto, the CPU and the engine's GPUs; `wanted` chosen (kept visible if not found)."""
        self.device_combo.clear()
        self.device_combo.addItem("Auto (a GPU when there is one)", "auto")
        self.device_combo.addItem("CPU", "cpu")
        for device in devices:
            if device.get("id") == "cpu":
                continue
            memory = f", {device['memory_gib']} GiB" if "memory_gib" in device else ""
            self.device_combo.addItem(f"{device['name']} ({device['id']}{memory})", device["id"])
        if self.device_combo.findData(wanted) < 0:
            # A GPU chosen earlier that this engine does not see now: keep it visible.
            self.device_combo.addItem(f"{wanted} (not detected)", wanted)
        self.device_combo.setCurrentIndex(self.device_combo.findData(wanted))

    def set_class_names(self, names: list[str]) -> None:
        """The classes whose small regions can be kept: the model's (checked ones stay)."""
        kept = [name for name in self.keep_combo.checkedItems() if name in names]
        self.keep_combo.clear()
        self.keep_combo.addItems(names)
        self.keep_combo.setCheckedItems(kept)

    def set_running(self, running: bool) -> None:
        """The run controls while a job runs (Segment greyed, Cancel offered) and after."""
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.progress_bar.setValue(0)

    def clear_status(self) -> None:
        self.status_label.setText("")
        self.status_label.setToolTip("")
        self.progress_bar.setValue(0)

    def _runtime_changed(self) -> None:
        # The ONNX runtimes run an exported graph: there is nothing to compile (and without
        # PyTorch, Auto is an ONNX runtime too).
        runtime = self.runtime_combo.currentData()
        self.compile_check.setEnabled(runtime == "torch" or (runtime == "auto" and self._has_torch))

    def _build_outputs(self, advanced: QFormLayout) -> None:
        self.output_widget = QgsFileWidget()
        self.output_widget.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
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

    def _build_run_controls(self, layout: QVBoxLayout) -> None:
        """The run and cancel buttons, the progress bar and the status line."""
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Segment layer")
        self.run_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
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

    def _build_resolution(self, advanced: QFormLayout) -> None:
        self.gsd_combo = QComboBox()
        self.gsd_combo.addItem("Auto (the model's GSD)", GSD_AUTO)
        self.gsd_combo.addItem("Native (the layer's pixels)", GSD_NATIVE)
        self.gsd_combo.addItem("Metres per pixel", GSD_METRES)
        self.gsd_combo.setToolTip(
            "The ground sample distance the model runs at. Auto resamples the layer on the fly "
            "to the resolution the model was trained at; the result keeps the layer's grid."
        )
        self.gsd_spin = _spin_box(QgsDoubleSpinBox(), (0.01, 100000.0), 1.0, suffix=" m")
        self.gsd_spin.setEnabled(False)
        row = QHBoxLayout()
        row.addWidget(self.gsd_combo, 1)
        row.addWidget(self.gsd_spin)
        advanced.addRow("Processing resolution", row)
        self.grid_combo = QComboBox()
        self.grid_combo.addItem("The layer's grid", "source")
        self.grid_combo.addItem("The processing grid (small results for fine imagery)", "model")
        advanced.addRow("Result grid", self.grid_combo)

    def _build_post_processing(self, layout: QVBoxLayout) -> None:
        self.post_processing = QgsCollapsibleGroupBox("Post-processing")
        self.post_processing.setCollapsed(True)
        form = QFormLayout(self.post_processing)
        self.min_region_spin = _spin_box(QgsDoubleSpinBox(), (0.0, 1e12), 0.0, "off")
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
        self.simplify_spin = _spin_box(QgsDoubleSpinBox(), (0.0, 1e6), 0.0, "off", " m")
        self.simplify_spin.setToolTip("Tolerance for simplifying the class polygons")
        form.addRow("Simplify polygons", self.simplify_spin)
        layout.addWidget(self.post_processing)


SpinBox = TypeVar("SpinBox", QgsSpinBox, QgsDoubleSpinBox)


def _spin_box(
    box: SpinBox, limits: tuple[float, float], value: float, special: str = "", suffix: str = ""
) -> SpinBox:
    """`box` set up: its range, its value (also what clearing gives back), the text shown at
    its lowest value instead of the number ("off", "model's") and its unit; two decimals."""
    box.setRange(*limits)
    if isinstance(box, QgsDoubleSpinBox):
        box.setDecimals(2)
    box.setClearValue(value)
    box.setValue(value)
    box.setSpecialValueText(special)
    box.setSuffix(suffix)
    return box
