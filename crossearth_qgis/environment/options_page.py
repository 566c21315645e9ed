"""Settings > Options > CrossEarth: the engine environment in use, and setting one up.

"Set up engine environment" makes a self-contained environment of the chosen kind (Light or
Full) with the chosen base interpreter, as a task in QGIS's task manager
(engine_setup_task): the page only follows it, so closing the page or the Options dialog
never stops or breaks it, and the environment is selected when it completes. "Check" asks the
engine what the environment can do; the answer is kept, so the dock and Processing offer only
what the environment has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication
from qgis.gui import QgsFileWidget, QgsOptionsPageWidget, QgsOptionsWidgetFactory, QgsSpinBox
from qgis.PyQt import sip
from qgis.PyQt.QtCore import Qt
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

from .. import messages, settings
from ..worker.engine_errors import EngineError
from ..worker.engine_task import EngineTask
from . import base_python, capabilities
from . import setup_task as engine_setup_task
from .engine_env import (
    ENV_VAR,
    PLUGIN_DIR,
    EngineEnvironmentError,
    Interpreter,
    default_venv_dir,
    resolve_interpreter,
)
from .engine_setup import SIZE_TEXT, WHAT_IT_INSTALLS, EngineSetupError, read_record, venv_of

ICON = PLUGIN_DIR / "icons" / "crossearth.svg"
PAGE_TITLE = "CrossEarth"

ENVIRONMENT_CHOICES = tuple(
    (kind, f"{name} ({SIZE_TEXT[kind]})")
    for kind, name in (("light", "Light: CPU, ONNX Runtime"), ("full", "Full: PyTorch, GPU"))
)

# What each feature is called for the analyst, and what a Light environment lacks for it.
FEATURE_WORDS = {
    "segment": "segmenting",
    "polygons": "class polygons",
    "download": "official model downloads",
    "convert": "converting official checkpoints",
    "train": "fine-tuning",
    "export": "ONNX export",
    "sharded": "sharded runs on Ray",
}
UPGRADE_TEXT = "Add PyTorch (GPU, fine-tuning, official checkpoints)"


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
    features = report.get("features") or {}
    if features:
        missing = [FEATURE_WORDS.get(f, f) for f, ok in features.items() if not ok]
        if missing:
            lines.append(
                f"Not in this environment: {', '.join(missing)} (they need PyTorch: "
                f"'{UPGRADE_TEXT}')"
            )
    return "\n".join(lines)


class CrossEarthOptionsPage(QgsOptionsPageWidget):
    def __init__(self, parent: QWidget | None = None, iface: Any = None) -> None:
        super().__init__(parent)
        self.setObjectName(PAGE_TITLE)
        self.iface = iface
        self.setup_task: engine_setup_task.EngineSetupTask | None = None
        self.check_task: EngineTask | None = None
        self.check_report: dict[str, Any] | None = None
        layout = QVBoxLayout(self)
        layout.addWidget(self._engine_group())
        layout.addWidget(self._setup_group(), 1)
        self.update_status()
        self.update_base()
        self._show_kind()
        task = engine_setup_task.running()
        if task is not None:
            self._follow(task)

    # --- the environment in use ---------------------------------------------------------

    def _engine_group(self) -> QGroupBox:
        engine = QGroupBox("Engine environment in use")
        engine_layout = QVBoxLayout(engine)
        intro = QLabel(
            "CrossEarth runs its models in a separate Python environment, so QGIS never loads "
            "PyTorch or ONNX Runtime. Leave the field empty to use the environment set up below; "
            f"choose another engine Python to use that one. {ENV_VAR}, when set, overrides both."
        )
        intro.setWordWrap(True)
        engine_layout.addWidget(intro)
        row = QHBoxLayout()
        self.python_widget = QgsFileWidget()
        self.python_widget.setStorageMode(QgsFileWidget.StorageMode.GetFile)
        self.python_widget.setFilePath(settings.get(settings.PYTHON))
        self.python_widget.lineEdit().setPlaceholderText("the environment set up below")
        self.python_widget.fileChanged.connect(self.update_status)
        self.check_button = QPushButton("Check")
        self.check_button.setToolTip(
            "Ask the engine what it can do: runtimes, CUDA and GPUs, downloads, fine-tuning"
        )
        self.check_button.clicked.connect(self.check)
        row.addWidget(self.python_widget, 1)
        row.addWidget(self.check_button)
        engine_layout.addLayout(row)
        self.status_label = _note(engine_layout)
        self.check_label = _note(engine_layout)
        self.check_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        warm = QHBoxLayout()
        warm.addWidget(QLabel("Keep the engine and its model loaded between runs for"))
        self.idle_spin = QgsSpinBox()
        self.idle_spin.setRange(0, 24 * 60)
        self.idle_spin.setSuffix(" min")
        self.idle_spin.setSpecialValueText("off")
        self.idle_spin.setClearValue(int(settings.DEFAULT_WORKER_IDLE_MINUTES))
        self.idle_spin.setValue(round(settings.worker_idle_s() / 60))
        self.idle_spin.setToolTip(
            "A second run of the same model then starts at once; an idle engine exits after "
            "this time and gives its memory back (a full-size model holds over a gigabyte)"
        )
        warm.addWidget(self.idle_spin)
        warm.addStretch(1)
        engine_layout.addLayout(warm)
        return engine

    def configured_python(self) -> str:
        return self.python_widget.filePath().strip()

    def interpreter(self) -> Interpreter:
        return resolve_interpreter(self.configured_python())

    def update_status(self) -> None:
        try:
            interpreter = self.interpreter()
        except EngineEnvironmentError as exc:
            self.status_label.setText(str(exc))
            self._show_upgrade(None)
            return
        folder = venv_of(interpreter.python)
        record = read_record(folder) if folder is not None else None
        kind = f", {record.kind.capitalize()}" if record is not None else ""
        self.status_label.setText(f"The engine runs with {interpreter.describe()}{kind}.")
        self._show_upgrade(folder if record is not None and record.kind == "light" else None)

    def check(self, _checked: bool = False) -> EngineTask | None:
        """Runs `check --json` with the chosen interpreter in the background; shows the report
        and keeps it as what the selected environment can do."""
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
        if sip.isdeleted(self):
            return
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
            messages.log(f"{exc}\n{getattr(exc, 'details', '')}", Qgis.MessageLevel.Warning)
            return
        capabilities.remember(task.interpreter.python, self.check_report)
        self.check_label.setText(check_summary(self.check_report))

    # --- setting one up ------------------------------------------------------------------

    def _setup_group(self) -> QGroupBox:
        setup = QGroupBox("Set up engine environment")
        setup_layout = QVBoxLayout(setup)
        self.kind_combo = QComboBox()
        for kind, label in ENVIRONMENT_CHOICES:
            self.kind_combo.addItem(label, kind)
        saved = settings.get(settings.ENGINE_KIND) or "light"
        self.kind_combo.setCurrentIndex(max(0, self.kind_combo.findData(saved)))
        self.kind_combo.currentIndexChanged.connect(self._show_kind)
        setup_layout.addWidget(self.kind_combo)
        self.kind_label = _note(setup_layout)

        base_row = QHBoxLayout()
        base_row.addWidget(QLabel("Made with"))
        self.base_widget = QgsFileWidget()
        self.base_widget.setStorageMode(QgsFileWidget.StorageMode.GetFile)
        self.base_widget.setFilePath(settings.get(settings.BASE_PYTHON))
        self.base_widget.lineEdit().setPlaceholderText("QGIS's own Python")
        self.base_widget.fileChanged.connect(self.update_base)
        base_row.addWidget(self.base_widget, 1)
        setup_layout.addLayout(base_row)
        self.base_label = _note(setup_layout)

        folder_row = QHBoxLayout()
        folder_row.addWidget(QLabel("In the folder"))
        self.venv_widget = QgsFileWidget()
        self.venv_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.venv_widget.setFilePath(str(default_venv_dir()))
        folder_row.addWidget(self.venv_widget, 1)
        setup_layout.addLayout(folder_row)

        buttons = QHBoxLayout()
        self.setup_button = QPushButton("Set up engine environment")
        self.setup_button.clicked.connect(self.set_up)
        self.upgrade_button = QPushButton(UPGRADE_TEXT)
        self.upgrade_button.clicked.connect(self.upgrade)
        self.upgrade_button.setVisible(False)
        self.setup_cancel_button = QPushButton("Cancel")
        self.setup_cancel_button.setEnabled(False)
        self.setup_cancel_button.clicked.connect(self.cancel_setup)
        buttons.addWidget(self.setup_button)
        buttons.addWidget(self.upgrade_button)
        buttons.addWidget(self.setup_cancel_button)
        buttons.addStretch(1)
        setup_layout.addLayout(buttons)
        self.setup_progress = QProgressBar()
        self.setup_progress.setRange(0, 100)
        setup_layout.addWidget(self.setup_progress)
        self.setup_status = _note(setup_layout)
        self.setup_output = QPlainTextEdit()
        self.setup_output.setReadOnly(True)
        self.setup_output.setMaximumBlockCount(2000)
        setup_layout.addWidget(self.setup_output, 1)
        return setup

    def chosen_kind(self) -> str:
        return str(self.kind_combo.currentData())

    def _show_kind(self, _index: int = 0) -> None:
        kind = self.chosen_kind()
        self.kind_label.setText(f"Installs {WHAT_IT_INSTALLS[kind]}; {SIZE_TEXT[kind]} of disk.")
        settings.set_value(settings.ENGINE_KIND, kind)

    def base(self) -> base_python.BasePython:
        return base_python.choose(self.base_widget.filePath().strip())

    def update_base(self) -> None:
        try:
            self.base_label.setText(f"The environment is made with {self.base().describe()}.")
        except base_python.BasePythonError as exc:
            self.base_label.setText(str(exc))

    def _show_upgrade(self, light_folder: Path | None) -> None:
        self._light_folder = light_folder
        self.upgrade_button.setVisible(light_folder is not None)
        if light_folder is not None:
            self.upgrade_button.setToolTip(
                f"Installs PyTorch into {light_folder} ({SIZE_TEXT['full']} in all)"
            )

    def set_up(self, _checked: bool = False) -> engine_setup_task.EngineSetupTask | None:
        """The button: sets up the chosen kind in the chosen folder (clicked(bool) passes its
        checked state, which says nothing about the kind)."""
        folder = Path(self.venv_widget.filePath().strip() or default_venv_dir())
        return self.start_set_up(folder, self.chosen_kind())

    def upgrade(self, _checked: bool = False) -> engine_setup_task.EngineSetupTask | None:
        """Grows the selected Light environment into a Full one, in place."""
        if self._light_folder is None:
            return None
        return self.start_set_up(self._light_folder, "full")

    def start_set_up(
        self, folder: Path, kind: str, requirements: Path | None = None
    ) -> engine_setup_task.EngineSetupTask | None:
        try:
            base = self.base()
            task = engine_setup_task.start(folder, kind, base, requirements)
        except (base_python.BasePythonError, EngineSetupError) as exc:
            self.setup_status.setText(str(exc))
            return None
        settings.set_value(settings.BASE_PYTHON, self.base_widget.filePath().strip())
        self.setup_output.clear()
        self.setup_progress.setValue(0)
        self._follow(task)
        return task

    def _follow(self, task: engine_setup_task.EngineSetupTask) -> None:
        """Shows a set-up task's progress on this page; the task does not depend on it."""
        self.setup_task = task
        task.progressChanged.connect(self._progress)
        task.statusChanged.connect(self._status)
        task.outputLine.connect(self._output)
        task.completed.connect(self._set_up_done)
        self.setup_progress.setValue(int(task.progress()))
        self.setup_status.setText(task.status)
        for line in task.output[-200:]:
            self.setup_output.appendPlainText(line)
        self.setup_button.setEnabled(False)
        self.upgrade_button.setEnabled(False)
        self.setup_cancel_button.setEnabled(True)

    # Slots of the task's signals: the page may be gone when they arrive (the Options dialog
    # closed), which must never raise.
    def _progress(self, value: float) -> None:
        if not sip.isdeleted(self):
            self.setup_progress.setValue(int(value))

    def _status(self, text: str) -> None:
        if not sip.isdeleted(self):
            self.setup_status.setText(text)

    def _output(self, line: str) -> None:
        if not sip.isdeleted(self):
            self.setup_output.appendPlainText(line)

    def cancel_setup(self, _checked: bool = False) -> None:
        if self.setup_task is not None:
            self.setup_task.cancel()

    def _set_up_done(self) -> None:
        if sip.isdeleted(self):
            return
        task, self.setup_task = self.setup_task, None
        self.setup_button.setEnabled(True)
        self.upgrade_button.setEnabled(True)
        self.setup_cancel_button.setEnabled(False)
        if task is None:
            return
        if task.cancelled:
            self.setup_status.setText(
                "Set-up cancelled; the environment is not used until a set-up completes."
            )
            return
        if task.error is not None:
            self.setup_status.setText(str(task.error))
            messages.error(self.iface, f"The engine set-up failed: {task.error}")
            return
        self.python_widget.setFilePath(str(task.python))
        self.setup_progress.setValue(100)
        self.setup_status.setText(f"Ready: the engine runs with {task.python}.")
        self.update_status()

    def apply(self) -> None:
        """Called by the Options dialog's OK: keep the choices."""
        settings.set_value(settings.PYTHON, self.configured_python())
        settings.set_value(settings.VENV_DIR, self.venv_widget.filePath().strip())
        settings.set_value(settings.BASE_PYTHON, self.base_widget.filePath().strip())
        settings.set_value(settings.WORKER_IDLE_MINUTES, str(self.idle_spin.value()))


class CrossEarthOptionsFactory(QgsOptionsWidgetFactory):
    def __init__(self, iface: Any = None) -> None:
        super().__init__()
        self.iface = iface
        self.setTitle(PAGE_TITLE)

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def createWidget(self, parent: QWidget | None) -> CrossEarthOptionsPage:
        return CrossEarthOptionsPage(parent, self.iface)


def _note(layout: QVBoxLayout) -> QLabel:
    """An empty word-wrapped line of text at the end of `layout`, for the page to fill."""
    label = QLabel()
    label.setWordWrap(True)
    layout.addWidget(label)
    return label
