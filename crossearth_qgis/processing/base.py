"""What every CrossEarth Processing algorithm shares: the icon and how Processing copies it."""

from __future__ import annotations

from qgis.core import QgsProcessingAlgorithm
from qgis.PyQt.QtGui import QIcon

from ..engine_env import PLUGIN_DIR

ICON = PLUGIN_DIR / "icons" / "crossearth.svg"


class CrossEarthAlgorithm(QgsProcessingAlgorithm):
    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def createInstance(self) -> CrossEarthAlgorithm:
        # Processing runs copies (batch mode, models, background tasks); none holds state.
        return type(self)()


# The engine's --runtime values, in the order the choice lists them.
RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")


def installed_runtimes() -> list[str]:
    """auto and the runtimes the selected engine environment has, as its last probe found
    (after set-up, or Check in the options page); all of them when it was never probed."""
    from ..engine_env import EngineEnvironmentError, resolve_interpreter
    from ..engine_setup_task import known_capabilities

    try:
        report = known_capabilities(resolve_interpreter().python)
    except EngineEnvironmentError:
        report = None
    found = report.get("runtimes") if report is not None else None
    if not isinstance(found, dict):
        return list(RUNTIMES)
    return [r for r in RUNTIMES if r == "auto" or r in found]
