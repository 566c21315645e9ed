"""Running an engine command from a Processing algorithm: feedback progress, cancel, errors.

Every CrossEarth algorithm (and the later "Fine-tune model") starts its worker through
`run_engine_for_feedback`, so progress, the ETA, cancel and plain error messages behave the
same in the Processing dialog, batch mode, graphical models and qgis_process.
"""

from __future__ import annotations

from collections.abc import Sequence

from qgis.core import QgsProcessingException, QgsProcessingFeedback

from .. import settings
from ..environment.engine_env import EngineEnvironmentError, Interpreter
from ..worker.client import EngineOutcome, run_engine
from ..worker.engine_errors import CLI_PREFIX, EngineCancelled, EngineError
from ..worker.eta import EtaEstimator, status_text


def run_engine_for_feedback(
    args: Sequence[str],
    feedback: QgsProcessingFeedback | None,
    interpreter: Interpreter | None = None,
) -> EngineOutcome:
    """Runs `<engine python> -m engine.cli ARGS` and waits, reporting through `feedback`.

    Progress events set the progress bar and a "42% · tile 12/40 · about 20 s left" text;
    the worker's stderr goes to the log as console output. Cancel terminates the worker (no
    partial outputs remain: run_engine removes what a killed worker announced as temporary).
    Problems raise QgsProcessingException with one plain sentence.
    """
    feedback = feedback or QgsProcessingFeedback()
    eta = EtaEstimator()

    def progress(fraction: float, message: str) -> None:
        feedback.setProgress(fraction * 100)
        feedback.setProgressText(status_text(fraction, message, eta.update(fraction)))

    def console(line: str) -> None:
        # The engine's own "crossearth: ..." error line becomes the algorithm's error (or its
        # warning, for a missing optional output): the log shows each sentence once.
        if not line.startswith(CLI_PREFIX):
            feedback.pushConsoleInfo(line)

    try:
        return run_engine(
            args,
            interpreter=interpreter,
            on_progress=progress,
            on_log=console,
            is_cancelled=feedback.isCanceled,
            warm_idle_s=settings.worker_idle_s(),
        )
    except EngineCancelled as exc:
        raise QgsProcessingException(str(exc)) from None
    except EngineError as exc:
        # stderr reached the log line by line while the worker ran (see `console`)
        raise QgsProcessingException(str(exc)) from None
    except EngineEnvironmentError as exc:
        raise QgsProcessingException(str(exc)) from None
