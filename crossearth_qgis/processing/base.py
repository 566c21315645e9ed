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
