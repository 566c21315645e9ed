"""Starting a segmentation task from the dock, following it, and adding its results as
layers (a part of CrossEarthDock).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsMapLayer, QgsProject

from .. import messages, settings
from ..environment.engine_env import EngineEnvironmentError
from ..layers import styling
from ..layers.export import ExportSegmentTask
from ..layers.inputs import InputProblem
from ..worker.engine_task import EngineTask
from ..worker.models import ModelEntry
from ..worker.requests import SegmentRequest


class DockRun:
    """The run and cancel buttons, the progress bar, the status line and the results."""

    def segment(self) -> EngineTask | None:
        """Checks the choices and starts the segmentation task (None when it cannot start)."""
        if self.task is not None:
            return None
        # Nothing of the run before stays on show while this one is checked and starts.
        self.status_label.setText("")
        self.status_label.setToolTip("")
        self.progress_bar.setValue(0)
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
            task = ExportSegmentTask(
                description, request.args(), interpreter, job.export, warm=True
            )
        else:
            task = EngineTask(description, request.args(), interpreter, warm=True)
        task.progressChanged.connect(self._task_progress)
        task.statusChanged.connect(self.status_label.setText)
        task.completed.connect(self._segment_finished)
        self.task = task
        self._running = {
            "request": request,
            "layer_name": layer.name(),
            "layer_id": layer.id(),
            "model": model,
        }
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
            messages.notify(self.iface, warning, Qgis.MessageLevel.Warning)
        self.progress_bar.setValue(100)
        self._add_results(task.outcome.done or {}, running)

    def _add_results(self, done: dict[str, Any], running: dict[str, Any]) -> None:
        """Adds the class raster (styled where styling works), then the confidence raster and
        the polygons the worker wrote. A complete class raster is always loaded: an optional
        output that is missing or cannot be styled is reported in one line of its own."""
        request: SegmentRequest = running["request"]
        model: ModelEntry = running["model"]
        name = styling.result_layer_name(running["layer_name"], model.name)
        classes = styling.classes_from_card(model.card)
        failed = {str(k): str(v) for k, v in (done.get("failed") or {}).items()}
        problems = [f"The {kind} could not be written: {why}" for kind, why in failed.items()]
        try:
            result, style_problem = styling.class_layer_or_plain(request.output, name, classes)
        except styling.StyleError as exc:
            messages.error(self.iface, f"The result could not be added: {exc}")
            return
        if style_problem:
            problems.append(style_problem)
        # Above the input, bottom to top: the confidence raster, the classes, their polygons.
        stack = _AboveInput(running["layer_id"], self.result_layer_ids)
        if request.confidence and "confidence" not in failed:
            self._add_optional(
                lambda: styling.confidence_layer(request.confidence, f"{name} confidence"),
                problems,
                stack,
            )
        stack.add(result)
        if request.polygons and "polygons" not in failed:
            self._add_optional(
                lambda: styling.polygon_layer(request.polygons, f"{name} polygons", classes),
                problems,
                stack,
            )
        for problem in problems:
            messages.notify(self.iface, problem, Qgis.MessageLevel.Warning)
        for warning in done.get("warnings", []):
            messages.notify(self.iface, warning, Qgis.MessageLevel.Warning)
        summary = (
            f"Segmented '{running['layer_name']}' with {model.name} in "
            f"{done.get('seconds', 0):.1f} s on {done.get('device', '?')} "
            f"({done.get('tiles', '?')} tiles): {Path(request.output).name}"
        )
        self.status_label.setText(summary)
        self.status_label.setToolTip(request.output)
        pixels = ", ".join(f"{k} {v:,}" for k, v in done.get("classes", {}).items())
        details = "\n".join(str(p) for p in request.outputs()) + f"\npixels per class: {pixels}"
        messages.notify(self.iface, summary, Qgis.MessageLevel.Success, details)

    @staticmethod
    def _add_optional(make: Callable[[], Any], problems: list[str], stack: _AboveInput) -> None:
        """Adds a layer of an optional output; one that QGIS cannot open becomes a problem
        line, never a reason to drop the class raster."""
        try:
            stack.add(make())
        except styling.StyleError as exc:
            problems.append(str(exc))


class _AboveInput:
    """Adds result layers to the layer tree right above the input layer, each above the one
    added before; at the top when the input is not in the tree (any more)."""

    def __init__(self, input_id: str, added_ids: set[str]) -> None:
        project = QgsProject.instance()
        self._anchor = project.layerTreeRoot().findLayer(input_id)
        self._added_ids = added_ids

    def add(self, layer: QgsMapLayer) -> None:
        project = QgsProject.instance()
        self._added_ids.add(layer.id())
        group = self._anchor.parent() if self._anchor is not None else None
        if group is None:
            project.addMapLayer(layer)
            return
        project.addMapLayer(layer, False)
        self._anchor = group.insertLayer(group.children().index(self._anchor), layer)
