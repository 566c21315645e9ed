"""Settings > Options > CrossEarth: the engine's Python, setting it up, checking it.

"Set up engine environment" creates a venv and installs the pinned engine requirements in a
background task whose progress and pip output are shown on the page; "Check" asks the engine
which PyTorch, CUDA and GPUs it sees.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsTask
from qgis.gui import QgsFileWidget, QgsOptionsPageWidget, QgsOptionsWidgetFactory
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from . import messages, settings
from .engine_env import (
    ENV_VAR,
    PLUGIN_DIR,
    EngineEnvironmentError,
    Interpreter,
    auto_detect,
    default_venv_dir,
    requirements_file,
    resolve_interpreter,
    setup_environment,
)
from .engine_errors import EngineError
from .engine_task import EngineTask
from .process import ProcessCancelled

ICON = PLUGIN_DIR / "icons" / "crossearth.svg"
PAGE_TITLE = "CrossEarth"


# The two kinds of engine environment "Set up engine environment" creates.
ENVIRONMENT_CHOICES = (
    ("full", "Full (PyTorch, CUDA, fine-tuning; about 3 GB)"),
    ("light", "Light (CPU, ONNX Runtime, about 100 MB)"),
)


def check_summary(report: dict[str, Any]) -> str:
    """The answer of `check --json` in a few lines for the analyst."""
    runtimes = report.get("runtimes") or {}
    if report.get("torch"):
        first = f"PyTorch {report.get('torch')}"
    else:
        first = (
            f"Light engine: ONNX Runtime {runtimes.get('onnxruntime', '?')} (segments with "
            "models that have an ONNX graph; fine-tuning and conversion need the full engine)"
        )
    lines = [
        f"{first} with Python {report.get('python')} ({report.get('executable')})",
        f"rasterio {report.get('rasterio')}, GDAL {report.get('gdal')}"
        + (f", timm {report.get('timm')}" if report.get("timm") else ""),
    ]
    if report.get("torch") and runtimes.get("onnxruntime"):
        lines.append(f"ONNX Runtime {runtimes['onnxruntime']} (ONNX graphs on the CPU)")
    if report.get("cuda_available"):
        lines.append(f"CUDA available: yes (CUDA {report.get('cuda_version')})")
    else:
        lines.append("CUDA available: no; the engine runs on the CPU")
    for device in report.get("devices", []):
        memory = f", {device['memory_gib']} GiB" if "memory_gib" in device else ""
        lines.append(f"  {device['id']}: {device['name']}{memory}")
    return "\n".join(lines)


class EnvironmentSetupTask(QgsTask):
    """Creates the engine venv and installs the requirements (see engine_env.setup_environment)."""

    statusChanged = pyqtSignal(str)
    outputLine = pyqtSignal(str)
    completed = pyqtSignal()

    def __init__(self, venv_dir: Path, requirements: Path | None = None) -> None:
        super().__init__("CrossEarth: setting up the engine environment", QgsTask.CanCancel)
        self.venv_dir = Path(venv_dir)
        self.requirements = requirements
        self.python: Path | None = None
        self.error: Exception | None = None
        self.cancelled = False
        self.output: list[str] = []

    def _progress(self, fraction: float, message: str) -> None:
        self.setProgress(fraction * 100)
        self.statusChanged.emit(message)

    def _line(self, line: str) -> None:
        self.output.append(line)
        self.outputLine.emit(line)

    def run(self) -> bool:
        try:
            self.python = setup_environment(
                self.venv_dir,
                self._progress,
                self._line,
                self.isCanceled,
                requirements=self.requirements,
            )
            return True
        except ProcessCancelled:
            self.cancelled = True
        except EngineEnvironmentError as exc:
            self.error = exc
        except Exception as exc:  # shown, not lost in the task thread
            self.error = EngineEnvironmentError(f"Unexpected problem: {exc}")
            self.output.append(traceback.format_exc())
        return False

    def finished(self, result: bool) -> None:
        self.completed.emit()


class CrossEarthOptionsPage(QgsOptionsPageWidget):
    def __init__(self, parent: QWidget | None = None, iface: Any = None) -> None:
        super().__init__(parent)
        self.setObjectName(PAGE_TITLE)
        self.iface = iface
        self.setup_task: EnvironmentSetupTask | None = None
        self.check_task: EngineTask | None = None
        self.check_report: dict[str, Any] | None = None
        layout = QVBoxLayout(self)

        engine = QGroupBox("Engine Python interpreter")
        engine_layout = QVBoxLayout(engine)
        intro = QLabel(
            "CrossEarth runs its models in a separate Python with PyTorch, so QGIS never loads "
            f"PyTorch. Leave this empty to use the automatic choice; {ENV_VAR}, when set, "
            "overrides it."
        )
        intro.setWordWrap(True)
        engine_layout.addWidget(intro)
        row = QHBoxLayout()
        self.python_widget = QgsFileWidget()
        self.python_widget.setStorageMode(QgsFileWidget.GetFile)
        self.python_widget.setFilePath(settings.get(settings.PYTHON))
        self.python_widget.lineEdit().setPlaceholderText("automatic")
        self.python_widget.fileChanged.connect(self.update_status)
        self.detect_button = QPushButton("Auto-detect")
        self.detect_button.clicked.connect(self.detect)
        row.addWidget(self.python_widget, 1)
        row.addWidget(self.detect_button)
        engine_layout.addLayout(row)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        engine_layout.addWidget(self.status_label)
        check_row = QHBoxLayout()
        self.check_button = QPushButton("Check")
        self.check_button.setToolTip("Show PyTorch's version, CUDA and the GPUs the engine sees")
        self.check_button.clicked.connect(self.check)
        check_row.addWidget(self.check_button)
        check_row.addStretch(1)
        engine_layout.addLayout(check_row)
        self.check_label = QLabel()
        self.check_label.setWordWrap(True)
        self.check_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        engine_layout.addWidget(self.check_label)
        layout.addWidget(engine)

        setup = QGroupBox("Set up engine environment")
        setup_layout = QVBoxLayout(setup)
        note = QLabel(
            "Creates a Python environment in the folder below and installs the engine's pinned "
            "requirements with pip. Full: PyTorch, for GPUs, fine-tuning and converting "
            "checkpoints. Light: ONNX Runtime only, for segmenting on the CPU with models that "
            "carry an ONNX graph (the bundled model does; 'crossearth export' adds one)."
        )
        note.setWordWrap(True)
        setup_layout.addWidget(note)
        self.kind_combo = QComboBox()
        for kind, label in ENVIRONMENT_CHOICES:
            self.kind_combo.addItem(label, kind)
        setup_layout.addWidget(self.kind_combo)
        self.venv_widget = QgsFileWidget()
        self.venv_widget.setStorageMode(QgsFileWidget.GetDirectory)
        self.venv_widget.setFilePath(str(default_venv_dir()))
        setup_layout.addWidget(self.venv_widget)
        buttons = QHBoxLayout()
        self.setup_button = QPushButton("Set up engine environment")
        self.setup_button.clicked.connect(self.set_up)
        self.setup_cancel_button = QPushButton("Cancel")
        self.setup_cancel_button.setEnabled(False)
        self.setup_cancel_button.clicked.connect(self.cancel_setup)
        buttons.addWidget(self.setup_button)
        buttons.addWidget(self.setup_cancel_button)
        buttons.addStretch(1)
        setup_layout.addLayout(buttons)
        self.setup_progress = QProgressBar()
        self.setup_progress.setRange(0, 100)
        setup_layout.addWidget(self.setup_progress)
        self.setup_status = QLabel()
        self.setup_status.setWordWrap(True)
        setup_layout.addWidget(self.setup_status)
        self.setup_output = QPlainTextEdit()
        self.setup_output.setReadOnly(True)
        self.setup_output.setMaximumBlockCount(2000)
        setup_layout.addWidget(self.setup_output, 1)
        layout.addWidget(setup, 1)
        self.update_status()

    def configured_python(self) -> str:
        return self.python_widget.filePath().strip()

    def interpreter(self) -> Interpreter:
        return resolve_interpreter(self.configured_python())

    def update_status(self) -> None:
        try:
            self.status_label.setText(f"The engine runs with {self.interpreter().describe()}.")
        except EngineEnvironmentError as exc:
            self.status_label.setText(str(exc))

    def detect(self) -> None:
        found = auto_detect()
        if found is None:
            self.status_label.setText(
                "No Python with PyTorch and the engine's requirements was found; click "
                "'Set up engine environment' to create one."
            )
            return
        self.python_widget.setFilePath(str(found.python))
        self.update_status()

    def check(self) -> EngineTask | None:
        """Runs `check` with the chosen interpreter in the background; shows the report."""
        try:
            interpreter = self.interpreter()
        except EngineEnvironmentError as exc:
            self.check_label.setText(str(exc))
            return None
        self.check_button.setEnabled(False)
        self.check_label.setText(f"Checking {interpreter.python} ...")
        task = EngineTask(
            "CrossEarth: checking the engine", ["check", "--json"], interpreter, timeout_s=300
        )
        task.completed.connect(self._checked)
        self.check_task = task
        QgsApplication.taskManager().addTask(task)
        return task

    def _checked(self) -> None:
        task, self.check_task = self.check_task, None
        self.check_button.setEnabled(True)
        if task is None:
            return
        try:
            if task.error is not None:
                raise task.error
            self.check_report = task.outcome.json()
        except (EngineError, EngineEnvironmentError) as exc:
            self.check_label.setText(str(exc))
            messages.log(f"{exc}\n{getattr(exc, 'details', '')}", Qgis.Warning)
            return
        self.check_label.setText(check_summary(self.check_report))

    def set_up(self, requirements: Path | None = None) -> EnvironmentSetupTask:
        """Starts creating the environment in the chosen folder (a background task)."""
        venv_dir = Path(self.venv_widget.filePath().strip() or default_venv_dir())
        if requirements is None:
            try:
                requirements = requirements_file(self.kind_combo.currentData())
            except EngineEnvironmentError as exc:
                self.setup_status.setText(str(exc))
                raise
        task = EnvironmentSetupTask(venv_dir, requirements)
        task.progressChanged.connect(lambda value: self.setup_progress.setValue(int(value)))
        task.statusChanged.connect(self.setup_status.setText)
        task.outputLine.connect(self.setup_output.appendPlainText)
        task.completed.connect(self._set_up_done)
        self.setup_task = task
        self.setup_button.setEnabled(False)
        self.setup_cancel_button.setEnabled(True)
        self.setup_output.clear()
        self.setup_progress.setValue(0)
        QgsApplication.taskManager().addTask(task)
        return task

    def cancel_setup(self) -> None:
        if self.setup_task is not None:
            self.setup_task.cancel()

    def _set_up_done(self) -> None:
        task, self.setup_task = self.setup_task, None
        self.setup_button.setEnabled(True)
        self.setup_cancel_button.setEnabled(False)
        if task is None:
            return
        messages.log("\n".join(task.output))
        if task.cancelled:
            self.setup_status.setText("Set-up cancelled.")
            return
        if task.error is not None:
            self.setup_status.setText(str(task.error))
            messages.error(self.iface, str(task.error))
            return
        self.python_widget.setFilePath(str(task.python))
        settings.set_value(settings.VENV_DIR, str(task.venv_dir))
        settings.set_value(settings.PYTHON, str(task.python))
        self.setup_status.setText(f"Ready: the engine runs with {task.python}.")
        self.update_status()

    def apply(self) -> None:
        """Called by the Options dialog's OK: keep the chosen interpreter."""
        settings.set_value(settings.PYTHON, self.configured_python())
        settings.set_value(settings.VENV_DIR, self.venv_widget.filePath().strip())


class CrossEarthOptionsFactory(QgsOptionsWidgetFactory):
    def __init__(self, iface: Any = None) -> None:
        super().__init__()
        self.iface = iface
        self.setTitle(PAGE_TITLE)

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def createWidget(self, parent: QWidget | None) -> CrossEarthOptionsPage:
        return CrossEarthOptionsPage(parent, self.iface)
