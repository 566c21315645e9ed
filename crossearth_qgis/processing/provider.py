"""Processing provider "CrossEarth" (id `crossearth`): registers the classes in ALGORITHMS."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..environment import capabilities
from ..environment.engine_env import PLUGIN_DIR
from . import ALGORITHMS
from .base import ICON

PROVIDER_ID = "crossearth"


def _plugin_version() -> str:
    for line in (PLUGIN_DIR / "metadata.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("version="):
            return line.split("=", 1)[1].strip()
    return ""


class CrossEarthProvider(QgsProcessingProvider):
    def id(self) -> str:
        return PROVIDER_ID

    def name(self) -> str:
        return "CrossEarth"

    def longName(self) -> str:
        return "CrossEarth remote-sensing segmentation"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def svgIconPath(self) -> str:
        return str(ICON)

    def versionInfo(self) -> str:
        return _plugin_version()

    def load(self) -> bool:
        # Runtime choices follow what the engine can do: a new probe lists them again.
        capabilities.on_change(self.refreshAlgorithms)
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        capabilities.forget_listener(self.refreshAlgorithms)

    def loadAlgorithms(self) -> None:
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())

    # The engine writes GeoTIFF rasters and GeoPackage polygons, always to files.
    def supportsNonFileBasedOutput(self) -> bool:
        return False

    def supportedOutputRasterLayerExtensions(self) -> list[str]:
        return ["tif"]

    def supportedOutputVectorLayerExtensions(self) -> list[str]:
        return ["gpkg"]

    def defaultRasterFileExtension(self) -> str:
        return "tif"

    def defaultVectorFileExtension(self, hasGeometry: bool = True) -> str:
        return "gpkg"
