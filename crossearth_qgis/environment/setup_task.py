"""Setting up the engine environment as a task in QGIS's task manager.

The task belongs to the plugin, not to the page that started it: closing Settings > Options
(which deletes the page) leaves it running, its progress stays in the task manager, and when
it completes the new environment is selected (QgsSettings) wherever the user is. A page opened
later finds the running task with `running()` and follows it again.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .. import messages, settings
from ..worker.process import ProcessCancelled
from . import base_python, capabilities
from .engine_setup import EngineSetupError, read_record, requirements_file, setup_environment

# The task the plugin runs now (at most one): kept here so that its Python object lives as
# long as the task does, whatever happens to the page that started it.
_current: EngineSetupTask | None = None


def running() -> EngineSetupTask | None:
    """The set-up task in progress, if any."""
    return _current if _current is not None and not _current.done else None


def start(
    venv_dir: Path, kind: str, base: base_python.BasePython, requirements: Path | None = None
) -> EngineSetupTask:
    """Adds a set-up task to QGIS's task manager (refused while one runs)."""
    global _current
    if running() is not None:
        raise EngineSetupError("an engine set-up is already running; wait for it or cancel it")
    task = EngineSetupTask(venv_dir, kind, base, requirements or requirements_file(kind))
    _current = task
    QgsApplication.taskManager().addTask(task)
    return task


class EngineSetupTask(QgsTask):
    """Creates, completes or grows an engine environment (engine_setup.setup_environment)."""

    statusChanged = pyqtSignal(str)
    outputLine = pyqtSignal(str)
    completed = pyqtSignal()

    def __init__(
        self, venv_dir: Path, kind: str, base: base_python.BasePython, requirements: Path
    ) -> None:
        words = {"light": "Light", "full": "Full"}[kind]
        super().__init__(
            f"CrossEarth: setting up the {words} engine environment", QgsTask.Flag.CanCancel
        )
        self.venv_dir = Path(venv_dir)
        self.kind = kind
        self.base = base
        self.requirements = requirements
        self.python: Path | None = None
        self.error: Exception | None = None
        self.cancelled = False
        self.done = False
        self.output: list[str] = []
        self.status = ""

    def _progress(self, fraction: float, message: str) -> None:
        self.setProgress(fraction * 100)
        self.status = message
        self.statusChanged.emit(message)

    def _line(self, line: str) -> None:
        self.output.append(line)
        self.outputLine.emit(line)

    def run(self) -> bool:
        try:
            self.python = setup_environment(
                self.venv_dir,
                self.kind,
                self.base,
                self._progress,
                self._line,
                self.isCanceled,
                requirements=self.requirements,
            )
            return True
        except ProcessCancelled:
            self.cancelled = True
        except EngineSetupError as exc:
            self.error = exc
        except Exception as exc:  # shown, not lost in the task thread
            self.error = EngineSetupError(f"unexpected problem: {exc}")
            self.output.append(traceback.format_exc())
        return False

    def finished(self, result: bool) -> None:  # the main thread, page or no page
        self.done = True
        messages.log("\n".join(self.output))
        if self.isCanceled() and self.python is None:
            self.cancelled = True
        if result and self.python is not None:
            record = read_record(self.venv_dir)
            settings.set_value(settings.PYTHON, str(self.python))
            settings.set_value(settings.VENV_DIR, str(self.venv_dir))
            settings.set_value(settings.ENGINE_KIND, record.kind if record else self.kind)
            capabilities.remember(self.python, record.capabilities if record else {})
            messages.log(
                f"The engine environment is ready: {self.python}", Qgis.MessageLevel.Success
            )
        elif self.error is not None:
            messages.log(f"The engine set-up failed: {self.error}", Qgis.MessageLevel.Warning)
        self.completed.emit()
