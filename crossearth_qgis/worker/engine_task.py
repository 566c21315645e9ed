"""An engine command as a QgsTask: the dock's way to run a worker in the background."""

from __future__ import annotations

import traceback
from collections.abc import Sequence

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .. import settings
from ..environment.engine_env import EngineEnvironmentError, Interpreter
from .client import EngineOutcome, run_engine
from .engine_errors import EngineCancelled, EngineError
from .eta import EtaEstimator, status_text


class EngineTask(QgsTask):
    """An engine command as a background task: progress, ETA, cancel, result or error.

    Connect to `statusChanged(str)` for "42% · tile 12/40 · about 20 s left" and to
    `completed()`; afterwards `outcome` holds the worker's answer, or `error` the problem
    (None for both after a cancel).
    """

    statusChanged = pyqtSignal(str)
    completed = pyqtSignal()

    def __init__(
        self,
        description: str,
        args: Sequence[str],
        interpreter: Interpreter,
        cancelable: bool = True,
        timeout_s: float | None = None,
        warm: bool = False,
    ) -> None:
        flags = QgsTask.Flag.CanCancel if cancelable else QgsTask.Flags()
        super().__init__(description, flags)
        self.args = list(args)
        self.interpreter = interpreter
        self.timeout_s = timeout_s
        # the warm worker's idle time (settings), read here on the main thread
        self.warm_idle_s = settings.worker_idle_s() if warm else 0.0
        self.outcome: EngineOutcome | None = None
        self.error: Exception | None = None
        self.cancelled = False
        self.stderr_lines: list[str] = []
        self._eta = EtaEstimator()

    def _progress(self, fraction: float, message: str) -> None:
        self.setProgress(max(0.0, min(100.0, fraction * 100)))
        self.statusChanged.emit(status_text(fraction, message, self._eta.update(fraction)))

    def run(self) -> bool:
        try:
            self.outcome = run_engine(
                self.args,
                interpreter=self.interpreter,
                on_progress=self._progress,
                on_log=self.stderr_lines.append,
                is_cancelled=self.isCanceled,
                timeout_s=self.timeout_s,
                warm_idle_s=self.warm_idle_s,
            )
            return True
        except EngineCancelled:
            self.cancelled = True
        except (EngineError, EngineEnvironmentError) as exc:
            self.error = exc
        except Exception as exc:  # a bug must reach the log, not vanish in the task thread
            self.error = EngineError(
                f"Unexpected problem in the CrossEarth task: {exc}", traceback.format_exc()
            )
        return False

    def finished(self, result: bool) -> None:  # runs on the main thread
        if self.isCanceled() and self.error is None and self.outcome is None:
            self.cancelled = True
        self.completed.emit()
