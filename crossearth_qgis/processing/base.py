"""What every CrossEarth Processing algorithm shares: its names and help, the icon, how
Processing copies it, how it adds its parameters and how it runs (one engine command)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterNumber,
)
from qgis.PyQt.QtGui import QIcon

from .. import qgis_enums
from ..environment.engine_env import PLUGIN_DIR
from ..worker.client import EngineOutcome
from ..worker.requests import RUNTIMES
from .engine_run import run_engine_for_feedback

ICON = PLUGIN_DIR / "icons" / "crossearth.svg"
# The types of processAlgorithm's first and last arguments, named once for the subclasses.
Parameters = dict[str, Any]
Feedback = QgsProcessingFeedback


class EngineJob(Protocol):
    """What an algorithm asks the engine to do: a worker request, or one that carries more."""

    def args(self) -> list[str]: ...


class CrossEarthAlgorithm(QgsProcessingAlgorithm):
    """A subclass states ALGORITHM_ID (its id after "crossearth:"), DISPLAY_NAME and HELP_TEXT
    (the help beside the dialog) and adds its parameters in initAlgorithm.

    Each algorithm is one engine command, in three steps a subclass gives: `prepare` reads the
    parameters into the job, `run_job` runs it with the dialog's progress and cancel (the
    engine command as it is, unless overridden), `results` turns its outcome into outputs.
    """

    ALGORITHM_ID = ""
    DISPLAY_NAME = ""
    HELP_TEXT = ""

    def name(self) -> str:
        return self.ALGORITHM_ID

    def displayName(self) -> str:
        return self.DISPLAY_NAME

    def shortHelpString(self) -> str:
        return self.HELP_TEXT

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def createInstance(self) -> CrossEarthAlgorithm:
        # Processing runs copies (batch mode, models, background tasks); none holds state.
        return type(self)()

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        job = self.prepare(parameters, context, feedback)
        outcome = self.run_job(job, feedback)
        return self.results(job, outcome, context, feedback)

    def prepare(
        self, parameters: Parameters, context: QgsProcessingContext, feedback: Feedback
    ) -> Any:
        raise NotImplementedError(f"{type(self).__name__} states no engine job")

    def run_job(self, job: EngineJob, feedback: QgsProcessingFeedback) -> EngineOutcome:
        return run_engine_for_feedback(job.args(), feedback)

    def results(
        self,
        job: Any,
        outcome: EngineOutcome,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} states no outputs")

    def add_parameters(
        self,
        parameters: Iterable[QgsProcessingParameterDefinition],
        *,
        advanced: bool = False,
        help_texts: Mapping[str, str] | None = None,
    ) -> None:
        """Adds `parameters` in order: flagged advanced (folded away in the dialog) when
        `advanced`; with `help_texts`, each gets its entry as its help ("" when it has none)."""
        for parameter in parameters:
            if advanced:
                parameter.setFlags(parameter.flags() | qgis_enums.ADVANCED_PARAMETER)
            if help_texts is not None:
                parameter.setHelp(help_texts.get(parameter.name(), ""))
            self.addParameter(parameter)

    def parameter_text(
        self, parameters: dict[str, Any], name: str, context: QgsProcessingContext
    ) -> str:
        """A string parameter's value, stripped ("" when empty)."""
        return self.parameterAsString(parameters, name, context).strip()


def optional_number(
    name: str, label: str, minimum: float = 0, *, integer: bool = False
) -> QgsProcessingParameterNumber:
    """A number the algorithm may be given (empty: the engine's own choice), at least `minimum`."""
    kind = qgis_enums.NUMBER_INTEGER if integer else qgis_enums.NUMBER_DOUBLE
    return QgsProcessingParameterNumber(name, label, kind, optional=True, minValue=minimum)


def installed_runtimes() -> list[str]:
    """auto and the runtimes the selected engine environment has, as its last probe found
    (after set-up, or Check in the options page); all of them when it was never probed."""
    from ..environment import capabilities
    from ..environment.engine_env import EngineEnvironmentError, resolve_interpreter

    try:
        report = capabilities.known(resolve_interpreter().python)
    except EngineEnvironmentError:
        report = None
    found = report.get("runtimes") if report is not None else None
    if not isinstance(found, dict):
        return list(RUNTIMES)
    return [r for r in RUNTIMES if r == "auto" or r in found]
