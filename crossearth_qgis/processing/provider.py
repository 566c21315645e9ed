"""Processing provider "CrossEarth" (id `crossearth`): registers the classes in ALGORITHMS."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..engine_env import PLUGIN_DIR
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

    def longName(self) -> str:  # noqa: N802
        return "CrossEarth remote-sensing segmentation"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def svgIconPath(self) -> str:  # noqa: N802
        return str(ICON)

    def versionInfo(self) -> str:  # noqa: N802
        return _plugin_version()

    def loadAlgorithms(self) -> None:  # noqa: N802
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())

    # The engine writes GeoTIFF rasters and GeoPackage polygons, always to files.
    def supportsNonFileBasedOutput(self) -> bool:  # noqa: N802
        return False

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["tif"]

    def supportedOutputVectorLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["gpkg"]

    def defaultRasterFileExtension(self) -> str:  # noqa: N802
        return "tif"

    def defaultVectorFileExtension(self, hasGeometry: bool = True) -> str:  # noqa: N802, N803
        return "gpkg"
