"""The dock's model, device, workers and runtime lists, filled by asking the engine (quick
background tasks), and adding models: packages, converted checkpoints, official downloads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtCore import QObject, Qt, pyqtSignal
from qgis.PyQt.QtGui import QBrush, QPalette
from qgis.PyQt.QtWidgets import QMessageBox

from .. import messages, settings
from ..environment.engine_env import EngineEnvironmentError, Interpreter, resolve_interpreter
from ..worker.engine_errors import EngineError
from ..worker.engine_task import EngineTask
from ..worker.models import (
    LIST_MODELS_ARGS,
    AvailableModel,
    ModelCatalog,
    ModelEntry,
    catalog_from_json,
)
from ..worker.models import install_package as copy_package
from ..worker.models import preset_names as engine_preset_names
from ..worker.requests import ConvertRequest, DownloadRequest
from .add_model import AddModelDialog
from .fit_panel import NEEDS_FULL
from .run import JobSlot
from .widgets import DockForm

# Item data of the model list's last entry, which opens the "add model" dialog.
ADD_MODEL = "__add_model__"
ADD_MODEL_TEXT = "Add model package or official checkpoint..."
# Item data of an official model that can be downloaded: this prefix + its catalog name.
DOWNLOAD_PREFIX = "__download__:"
CHECK_ARGS = ["check", "--json"]


class ModelChoices(QObject):
    """What the engine environment offers, in the form's lists: models (with the official
    downloads), devices, workers and runtimes. Downloads run in the dock's job slot; a
    conversion asks `confirm_replace` before replacing a package."""

    modelChanged = pyqtSignal()  # the form shows another model (or none)
    environmentChecked = pyqtSignal()  # `check --json` answered: features, devices, runtimes

    def __init__(
        self,
        form: DockForm,
        iface: Any,
        jobs: JobSlot,
        confirm_replace: Callable[[list[Path]], bool],
    ) -> None:
        super().__init__(form)
        self.form = form
        self.iface = iface
        self.jobs = jobs
        self.confirm_replace = confirm_replace
        self.catalog: ModelCatalog | None = None
        self.devices: list[dict[str, Any]] | None = None
        self.cuda_available: bool | None = None
        self.features: dict[str, bool] | None = None  # `check --json`: what the engine can do
        self.ray_version: str | None = None
        self.query_tasks: list[EngineTask] = []
        self._last_model_index = -1
        form.model_combo.currentIndexChanged.connect(self._model_changed)
        form.refresh_button.clicked.connect(self.refresh_engine_info)
        self._fill_devices()

    # --- asked from the engine in background tasks

    def refresh_engine_info(self) -> None:
        """Lists the models and the devices again (two quick worker runs in the background)."""
        try:
            interpreter = resolve_interpreter()
        except EngineEnvironmentError as exc:
            self.form.model_info.setText(str(exc))
            return
        self.form.model_info.setText("Looking for models...")
        self.query("CrossEarth: listing models", LIST_MODELS_ARGS, interpreter, self._models_listed)
        self.query("CrossEarth: checking devices", CHECK_ARGS, interpreter, self._devices_checked)

    def query(
        self,
        description: str,
        args: list[str],
        interpreter: Interpreter,
        done: Callable[[Any], None],
        quiet: bool = False,
    ) -> None:
        """Runs a quick engine question in the background (in the warm worker when it is
        free); a failure goes to the log, and unless `quiet` also under the model list."""
        task = EngineTask(
            description, args, interpreter, cancelable=False, timeout_s=300, warm=True
        )
        task.completed.connect(lambda: self._query_done(task, done, quiet))
        self.query_tasks.append(task)
        QgsApplication.taskManager().addTask(task)

    def stop_queries(self) -> None:
        """Cancels the questions still out without calling back (the dock is going away)."""
        for task in self.query_tasks:
            with contextlib.suppress(TypeError, RuntimeError):
                task.completed.disconnect()
            task.cancel()
        self.query_tasks.clear()

    def _query_done(self, task: EngineTask, done: Callable[[Any], None], quiet: bool) -> None:
        if task in self.query_tasks:
            self.query_tasks.remove(task)
        if task.error is not None:
            details = getattr(task.error, "details", "")
            messages.log(
                f"{task.description()}: {task.error}\n{details}", Qgis.MessageLevel.Warning
            )
            if not quiet:
                self.form.model_info.setText(str(task.error))
            return
        try:
            done(task.outcome.json())
        except EngineError as exc:
            messages.log(f"{task.description()}: {exc}\n{exc.details}", Qgis.MessageLevel.Warning)

    def _models_listed(self, data: dict[str, Any]) -> None:
        self.set_catalog(catalog_from_json(data))

    def _devices_checked(self, report: dict[str, Any]) -> None:
        self.cuda_available = bool(report.get("cuda_available"))
        self.devices = list(report.get("devices", []))
        features = report.get("features")
        self.features = dict(features) if isinstance(features, dict) else None
        self._fill_devices()
        self._fill_workers(report)
        runtimes = report.get("runtimes")
        self.form.fill_runtimes(dict(runtimes) if isinstance(runtimes, dict) else None)
        self._grey_downloads()
        self.environmentChecked.emit()

    def _fill_workers(self, report: dict[str, Any]) -> None:
        """Workers is offered only when the engine environment has Ray (`check --json`)."""
        self.ray_version = report.get("ray") or None
        gpus = sum(1 for d in report.get("devices", []) if d.get("id") != "cpu")
        most = min(64, max(2, gpus, int(report.get("cpu_count") or 2)))
        self.form.fill_workers(most if self.ray_version is not None else None)

    def set_catalog(self, catalog: ModelCatalog, select: str | None = None) -> None:
        """Fills the model picker; keeps the current, else the saved, else the default model."""
        wanted = select or self.form.model_combo.currentData() or settings.get(settings.MODEL)
        self.catalog = catalog
        self.form.model_combo.blockSignals(True)
        self.form.model_combo.clear()
        for entry in catalog.models:
            self.form.model_combo.addItem(entry.label(), entry.path)
            self.form.model_combo.setItemData(
                self.form.model_combo.count() - 1, entry.summary(), Qt.ItemDataRole.ToolTipRole
            )
        self._add_downloadable(catalog.downloadable())
        self._grey_downloads()
        self.form.model_combo.insertSeparator(self.form.model_combo.count())
        self.form.model_combo.addItem(ADD_MODEL_TEXT, ADD_MODEL)
        chosen = catalog.find(wanted) if wanted else None
        chosen = chosen or next((m for m in catalog.models if m.default), None)
        chosen = chosen or (catalog.models[0] if catalog.models else None)
        self.form.model_combo.setCurrentIndex(
            self.form.model_combo.findData(chosen.path) if chosen else -1
        )
        self.form.model_combo.blockSignals(False)
        self._model_changed()
        for problem in catalog.problems:
            messages.log(f"broken model package: {problem}", Qgis.MessageLevel.Warning)

    def current_model(self) -> ModelEntry | None:
        if self.catalog is None:
            return None
        key = self.form.model_combo.currentData()
        return self.catalog.find(key) if key and key != ADD_MODEL else None

    def _model_changed(self) -> None:
        data = self.form.model_combo.currentData()
        if data == ADD_MODEL or (isinstance(data, str) and data.startswith(DOWNLOAD_PREFIX)):
            # An action, not a model: the choice returns to the model chosen before.
            self.form.model_combo.blockSignals(True)
            self.form.model_combo.setCurrentIndex(self._last_model_index)
            self.form.model_combo.blockSignals(False)
            if data == ADD_MODEL:
                self.add_model()
            else:
                self.offer_download(data[len(DOWNLOAD_PREFIX) :])
            return
        self._last_model_index = self.form.model_combo.currentIndex()
        entry = self.current_model()
        if entry is not None:
            self.form.model_info.setText(entry.summary())
        elif self.catalog is not None and not self.catalog.models:
            self.form.model_info.setText(
                f"No model package is installed yet: choose '{ADD_MODEL_TEXT}' above."
            )
        self.modelChanged.emit()

    def _fill_devices(self) -> None:
        wanted = self.form.device_combo.currentData() or settings.get(settings.DEVICE) or "auto"
        self.form.fill_devices(self.devices or [], wanted)

    # --- adding models

    def add_model(self) -> None:
        """Asks for a package folder or a checkpoint, then installs or converts it."""
        try:
            interpreter = resolve_interpreter()
            presets = engine_preset_names(interpreter)
        except (EngineEnvironmentError, EngineError) as exc:
            messages.error(self.iface, str(exc), getattr(exc, "details", None))
            return
        can_convert = self.features.get("convert") if self.features is not None else None
        dialog = AddModelDialog(presets, self._user_models_dir(), self.form, can_convert)
        if not dialog.exec():
            return
        if dialog.is_conversion():
            try:
                request = dialog.convert_request()
            except EngineError as exc:
                messages.error(self.iface, str(exc))
                return
            self.convert_checkpoint(request)
        else:
            self.install_package(dialog.package_folder())

    def _user_models_dir(self) -> str:
        if self.catalog is not None and self.catalog.user_dir:
            return self.catalog.user_dir
        from ..environment.engine_env import user_data_dir

        return str(user_data_dir() / "crossearth" / "models")

    def install_package(self, folder: str) -> Path | None:
        """Copies a model package into the user models folder and selects it."""
        try:
            target = copy_package(Path(folder), Path(self._user_models_dir()))
        except (EngineError, OSError) as exc:
            messages.error(self.iface, f"The model package was not added: {exc}")
            return None
        messages.notify(self.iface, f"Model package added: {target}", Qgis.MessageLevel.Success)
        self._refresh_models(select=str(target))
        return target

    def _interpreter(self) -> Interpreter | None:
        """The engine's interpreter, or None after saying in the message bar why none is set."""
        try:
            return resolve_interpreter()
        except EngineEnvironmentError as exc:
            messages.error(self.iface, str(exc))
            return None

    def convert_checkpoint(self, request: ConvertRequest) -> EngineTask | None:
        """Converts an official checkpoint into a package (background task), then selects it."""
        if not request.checkpoint or not Path(request.checkpoint).is_file():
            messages.error(
                self.iface, f"Choose the checkpoint file (.pth) to convert ({request.checkpoint})."
            )
            return None
        interpreter = self._interpreter()
        if interpreter is None:
            return None
        if Path(request.output).exists():
            if not self.confirm_replace([Path(request.output)]):
                self.form.status_label.setText("Not converted: the existing model was kept.")
                return None
            request.overwrite = True  # the engine still replaces only a package it wrote
        Path(request.output).parent.mkdir(parents=True, exist_ok=True)
        task = EngineTask(
            f"CrossEarth: converting {Path(request.checkpoint).name}",
            request.args(),
            interpreter,
        )
        task.completed.connect(lambda: self._converted(task, request))
        self.query_tasks.append(task)
        self.form.status_label.setText(f"Converting {Path(request.checkpoint).name}...")
        QgsApplication.taskManager().addTask(task)
        return task

    def _converted(self, task: EngineTask, request: ConvertRequest) -> None:
        if task in self.query_tasks:
            self.query_tasks.remove(task)
        self.form.status_label.setText("")
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
            messages.notify(self.iface, f"Conversion: {warning}", Qgis.MessageLevel.Warning)
        messages.notify(
            self.iface, f"Checkpoint converted into {request.output}", Qgis.MessageLevel.Success
        )
        self._refresh_models(select=request.output)

    # --- downloading official models

    def _add_downloadable(self, available: list[AvailableModel]) -> None:
        """The official models not installed yet, greyed, with their size."""
        if not available:
            return
        self.form.model_combo.insertSeparator(self.form.model_combo.count())
        grey = QBrush(
            self.form.palette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
        )
        for model in available:
            self.form.model_combo.addItem(model.label(), f"{DOWNLOAD_PREFIX}{model.name}")
            index = self.form.model_combo.count() - 1
            self.form.model_combo.setItemData(index, grey, Qt.ItemDataRole.ForegroundRole)
            self.form.model_combo.setItemData(
                index,
                f"Not installed; choose it to download. {model.summary()}",
                Qt.ItemDataRole.ToolTipRole,
            )

    def _grey_downloads(self) -> None:
        """In an environment that cannot download (Light), the downloads stay listed but
        cannot be chosen; their tooltip says why and what adds it."""
        if self.features is None or self.features.get("download"):
            return
        items = self.form.model_combo.model()
        for index in range(self.form.model_combo.count()):
            data = self.form.model_combo.itemData(index)
            if isinstance(data, str) and data.startswith(DOWNLOAD_PREFIX):
                items.item(index).setEnabled(False)
                self.form.model_combo.setItemData(index, NEEDS_FULL, Qt.ItemDataRole.ToolTipRole)

    def offer_download(self, name: str) -> EngineTask | None:
        """Asks whether to download an official model, then downloads it (background task)."""
        model = self.catalog.find_available(name) if self.catalog is not None else None
        if model is None:
            return None
        if self.features is not None and not self.features.get("download"):
            messages.error(self.iface, f"{model.name} cannot be downloaded here. {NEEDS_FULL}")
            return None
        answer = QMessageBox.question(
            self.form,
            "CrossEarth",
            f"Download {model.name} ({model.size_text}) and install it in "
            f"{self._user_models_dir()}?\n\n{model.summary()}\n\nLicense: {model.license}",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.Yes,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return None
        return self.download_model(model.name)

    def download_model(self, name: str) -> EngineTask | None:
        """Downloads and installs an official model; selects it when it is ready."""
        if self.jobs.task is not None:
            messages.error(self.iface, "Wait for the running job to finish, or cancel it first.")
            return None
        interpreter = self._interpreter()
        if interpreter is None:
            return None
        task = EngineTask(
            f"CrossEarth: downloading {name}", DownloadRequest(name).args(), interpreter
        )
        self.jobs.start(task, f"Downloading {name}...", lambda: self._downloaded(task, name))
        return task

    def _downloaded(self, task: EngineTask, name: str) -> None:
        if task.cancelled:
            self.form.status_label.setText("Download cancelled; nothing was installed.")
            messages.notify(self.iface, f"Download of {name} cancelled; nothing was installed.")
            return
        if task.error is not None:
            self.form.status_label.setText("Download failed; see the message bar.")
            messages.error(
                self.iface,
                f"{name} was not downloaded: {task.error}",
                getattr(task.error, "details", None),
            )
            return
        done = task.outcome.done or {}
        package = str(done.get("package", ""))
        self.form.progress_bar.setValue(100)
        self.form.status_label.setText(f"Installed {name}.")
        for warning in done.get("warnings", []):
            messages.notify(self.iface, f"Download: {warning}", Qgis.MessageLevel.Warning)
        messages.notify(
            self.iface,
            f"Model {name} downloaded and installed: {package}",
            Qgis.MessageLevel.Success,
        )
        self._refresh_models(select=package)

    def package_added(self, path: str) -> None:
        """A package was written elsewhere (e.g. by "Fine-tune model"): list it."""
        if self.catalog is not None:
            self._refresh_models(select=path)

    def _refresh_models(self, select: str | None = None) -> None:
        try:
            interpreter = resolve_interpreter()
        except EngineEnvironmentError as exc:
            messages.error(self.iface, str(exc))
            return
        self.query(
            "CrossEarth: listing models",
            LIST_MODELS_ARGS,
            interpreter,
            lambda data: self.set_catalog(catalog_from_json(data), select=select),
        )
