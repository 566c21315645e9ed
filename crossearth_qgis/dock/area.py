"""The dock's area and processing resolution (what a layer is read at, and what that costs)
and its post-processing options, read from the form as engine options.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from qgis.core import QgsRasterLayer
from qgis.PyQt.QtWidgets import QMessageBox

from .. import settings
from ..layers.export_plan import ExportPlan
from ..layers.grid import (
    DEFAULT_LIMIT_MPX,
    FILE,
    ExportGrid,
    export_grid,
    format_gsd,
    ground_size,
    has_fixed_grid,
    layer_gsd_m,
    layer_kind,
    native_units_per_pixel,
)
from ..layers.inputs import InputProblem, extent_in_layer_crs, selected_features_extent
from ..worker.models import ModelEntry
from .widgets import AREA_CANVAS, AREA_SELECTION, GSD_AUTO, GSD_METRES, GSD_NATIVE, DockForm


class AreaChoices:
    """Turns the form's area, resolution and post-processing choices into engine options, and
    keeps its resolution notes up to date (`current_model`: the model the form shows)."""

    def __init__(
        self,
        form: DockForm,
        iface: Any,
        current_model: Callable[[], ModelEntry | None],
    ) -> None:
        self.form = form
        self.iface = iface
        self.current_model = current_model
        for signal in (
            form.area_combo.currentIndexChanged,
            form.layer_combo.layerChanged,
            form.gsd_combo.currentIndexChanged,
            form.gsd_spin.valueChanged,
        ):
            signal.connect(self.update_resolution_info)
        if iface is not None:
            # The map extent is the area read from web layers: keep its size shown.
            iface.mapCanvas().extentsChanged.connect(self.update_resolution_info)

    def disconnect(self) -> None:
        if self.iface is not None:
            with contextlib.suppress(TypeError, RuntimeError):  # already disconnected
                self.iface.mapCanvas().extentsChanged.disconnect(self.update_resolution_info)

    def extent(self, layer: QgsRasterLayer) -> tuple[float, float, float, float] | None:
        area = self.form.area_combo.currentData()
        if area == AREA_CANVAS:
            canvas = self.iface.mapCanvas()
            return extent_in_layer_crs(
                canvas.extent(),
                canvas.mapSettings().destinationCrs(),
                layer,
                "The current map extent",
            )
        if area == AREA_SELECTION:
            polygons = self.form.area_layer_combo.currentLayer()
            box = selected_features_extent(polygons)
            return extent_in_layer_crs(
                box, polygons.crs(), layer, f"The selection in '{polygons.name()}'"
            )
        return None

    def model_changed(self) -> None:
        """The class names to keep follow the model; the resolution note follows too."""
        entry = self.current_model()
        self.form.set_class_names(entry.class_names if entry is not None else [])
        self.update_resolution_info()

    def processing_options(self, exported: bool, polygons: bool) -> dict[str, Any]:
        """--gsd, --output-grid, --min-region, --keep-classes and --simplify as chosen."""
        options: dict[str, Any] = {}
        choice = self.form.gsd_combo.currentData()
        if exported:
            options["gsd"] = "native"  # read at the processing resolution already
        elif choice == GSD_METRES:
            options["gsd"] = f"{self.form.gsd_spin.value():g}"
            options["output_grid"] = self.form.grid_combo.currentData()
        else:
            options["gsd"] = choice
            options["output_grid"] = self.form.grid_combo.currentData()
        size = self.form.min_region_spin.value()
        if size > 0:
            unit = self.form.min_region_unit.currentData()
            options["min_region"] = str(max(1, round(size))) if unit == "px" else f"{size:g}{unit}"
            options["keep_classes"] = list(self.form.keep_combo.checkedItems()) or None
        if polygons and self.form.simplify_spin.value() > 0:
            options["simplify"] = self.form.simplify_spin.value()
        return options

    def _canvas(self) -> Any:
        return self.iface.mapCanvas() if self.iface is not None else None

    def _canvas_gsd(self) -> float:
        canvas = self._canvas()
        if canvas is None:
            raise InputProblem("There is no map to take a resolution from; choose one in metres.")
        units = canvas.mapUnitsPerPixel()
        return ground_size((units, units), canvas.mapSettings().destinationCrs(), canvas.extent())

    def export_gsd(self, layer: QgsRasterLayer, model: ModelEntry | None) -> float | None:
        """The resolution a non-file layer is read at, in metres (None: the layer's own pixels):
        as chosen; Auto is the model's GSD, else the layer's pixels, else the map's."""
        choice = self.form.gsd_combo.currentData()
        if choice == GSD_METRES:
            return self.form.gsd_spin.value()
        model_gsd = model.card.get("gsd_m") if model is not None else None
        if choice == GSD_AUTO and model_gsd:
            return float(model_gsd)
        if choice == GSD_NATIVE and native_units_per_pixel(layer) is not None:
            return None
        if choice == GSD_AUTO and has_fixed_grid(layer):
            return None
        return self._canvas_gsd()

    def export_extent(self, layer: QgsRasterLayer) -> tuple[float, float, float, float]:
        """The area read from a non-file layer: as chosen; "Whole layer" is the map extent for
        web layers, which have no extent of their own (XYZ: the whole world)."""
        chosen = self.extent(layer)
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
        return export_grid(layer, self.export_extent(layer), self.export_gsd(layer, model))

    def update_resolution_info(self, *_: Any) -> None:
        """The layer's and the model's GSD (a warning when they are more than 2x apart), and for
        non-file layers the size that will be read."""
        self.form.resolution_label.setText("")
        self.form.gsd_warning.setText("")
        layer = self.form.layer_combo.currentLayer()
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
        self.form.resolution_label.setText("\n".join(lines))
        if layer_gsd and model_gsd and max(layer_gsd / model_gsd, model_gsd / layer_gsd) > 2:
            how = "finer" if layer_gsd < model_gsd else "coarser"
            ratio = max(layer_gsd / model_gsd, model_gsd / layer_gsd)
            self.form.gsd_warning.setText(
                f"The layer's pixels ({format_gsd(layer_gsd)}) are {ratio:.1f}x {how} than the "
                f"model's ({format_gsd(model_gsd)}). Auto resamples them to the model's GSD; "
                "check that this model suits this imagery."
            )

    def confirm_size(self, plan: ExportPlan) -> bool:
        """Asks before reading more than the limit from a non-file layer (No is the default)."""
        try:
            limit = float(settings.get(settings.EXPORT_LIMIT_MPX) or DEFAULT_LIMIT_MPX)
        except ValueError:
            limit = DEFAULT_LIMIT_MPX
        if plan.pixels <= limit * 1e6:
            return True
        answer = QMessageBox.question(
            self.form,
            "CrossEarth",
            f"'{plan.layer_name}' is read as {plan.describe()}, more than {limit:g} Mpx: that "
            "much imagery takes long to download and to segment.\n\nRead and segment it anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes
