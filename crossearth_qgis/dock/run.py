"""The dock's one long job at a time (a segmentation or a download) on its run controls, and a
finished segmentation's files added as styled layers above its input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from qgis.core import Qgis, QgsApplication, QgsMapLayer, QgsProject

from .. import messages
from ..layers import styling
from ..worker.engine_task import EngineTask
from ..worker.models import ModelEntry
from ..worker.requests import SegmentRequest
from .widgets import DockForm


class JobSlot:
    """Runs one task at a time on the form's run controls: Segment is greyed and Cancel offered
    while it runs, its progress and status are shown, its worker's log lines go to the log."""

    def __init__(self, form: DockForm) -> None:
        self.form = form
        self.task: EngineTask | None = None
        form.cancel_button.clicked.connect(self.cancel)

    def start(self, task: EngineTask, status: str, finished: Callable[[], None]) -> None:
        """Starts `task` in QGIS's task manager; `finished` is called once it has ended."""
        task.progressChanged.connect(lambda percent: self.form.progress_bar.setValue(int(percent)))
        task.statusChanged.connect(self.form.status_label.setText)
        task.completed.connect(lambda: self._completed(task, finished))
        self.task = task
        self.form.set_running(True)
        self.form.status_label.setText(status)
        QgsApplication.taskManager().addTask(task)

    def _completed(self, task: EngineTask, finished: Callable[[], None]) -> None:
        if self.task is task:
            self.task = None
        self.form.set_running(False)
        for line in task.stderr_lines:
            messages.log(line)
        finished()

    def cancel(self) -> None:
        if self.task is not None:
            self.form.status_label.setText("Cancelling...")
            self.task.cancel()

    def stop(self) -> None:
        """Cancels the running task without calling back (the dock is going away)."""
        if self.task is not None:
            with contextlib.suppress(TypeError, RuntimeError):
                self.task.completed.disconnect()
            self.task.cancel()
        self.task = None


class RunningSegmentation(NamedTuple):
    """What a finished segmentation needs to be shown: its request, its input (by name and id:
    the layer may be gone by then) and its model."""

    request: SegmentRequest
    layer_name: str
    layer_id: str
    model: ModelEntry


class ResultLayers:
    """Adds a segmentation's outputs as layers; `ids` are the layers it added (the dock never
    takes one of them as its input)."""

    def __init__(self, form: DockForm, iface: Any) -> None:
        self.form = form
        self.iface = iface
        self.ids: set[str] = set()

    def show(self, task: EngineTask, job: RunningSegmentation) -> None:
        """The task's end as the analyst sees it: cancelled, failed, or its layers added."""
        if task.cancelled:
            self.form.status_label.setText("Cancelled; no output was written.")
            messages.notify(self.iface, "Segmentation cancelled; no output was written.")
            return
        if task.error is not None:
            self.form.status_label.setText("Failed; see the message bar.")
            messages.error(self.iface, str(task.error), getattr(task.error, "details", None))
            return
        for warning in getattr(task, "export_warnings", []):
            messages.notify(self.iface, warning, Qgis.MessageLevel.Warning)
        self.form.progress_bar.setValue(100)
        self._add(task.outcome.done or {}, job)

    def _add(self, done: dict[str, Any], job: RunningSegmentation) -> None:
        """Adds the class raster (styled where styling works), then the confidence raster and
        the polygons the worker wrote. A complete class raster is always loaded: an optional
        output that is missing or cannot be styled is reported in one line of its own."""
        request, model = job.request, job.model
        name = styling.result_layer_name(job.layer_name, model.name)
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
        stack = _AboveInput(job.layer_id, self.ids)
        if request.confidence and "confidence" not in failed:
            _add_optional(
                lambda: styling.confidence_layer(request.confidence, f"{name} confidence"),
                problems,
                stack,
            )
        stack.add(result)
        if request.polygons and "polygons" not in failed:
            _add_optional(
                lambda: styling.polygon_layer(request.polygons, f"{name} polygons", classes),
                problems,
                stack,
            )
        for problem in problems:
            messages.notify(self.iface, problem, Qgis.MessageLevel.Warning)
        for warning in done.get("warnings", []):
            messages.notify(self.iface, warning, Qgis.MessageLevel.Warning)
        summary = (
            f"Segmented '{job.layer_name}' with {model.name} in "
            f"{done.get('seconds', 0):.1f} s on {done.get('device', '?')} "
            f"({done.get('tiles', '?')} tiles): {Path(request.output).name}"
        )
        self.form.status_label.setText(summary)
        self.form.status_label.setToolTip(request.output)
        pixels = ", ".join(f"{k} {v:,}" for k, v in done.get("classes", {}).items())
        details = "\n".join(str(p) for p in request.outputs()) + f"\npixels per class: {pixels}"
        messages.notify(self.iface, summary, Qgis.MessageLevel.Success, details)


def _add_optional(make: Callable[[], Any], problems: list[str], stack: _AboveInput) -> None:
    """Adds a layer of an optional output; one that QGIS cannot open becomes a problem line,
    never a reason to drop the class raster."""
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
