"""QGIS enum values that later releases moved into the `Qgis` namespace, each taken from where
the running QGIS has it: the new name (QGIS 3.30-3.38 and every QGIS 4) first, the 3.22 one
otherwise. The old names survive in 3.x only as compatibility aliases, so the plugin does not
rely on them for QGIS 4 (Qt6)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsMapLayerProxyModel,
    QgsProcessing,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterNumber,
    QgsRasterDataProvider,
    QgsUnitTypes,
)


def _first(*candidates: Callable[[], Any]) -> Any:
    for candidate in candidates:
        try:
            return candidate()
        except AttributeError:
            continue
    raise AttributeError("none of the enum names exists in this QGIS")


# Processing (moved in QGIS 3.36)
VECTOR_POLYGON = _first(
    lambda: Qgis.ProcessingSourceType.VectorPolygon,
    lambda: QgsProcessing.SourceType.TypeVectorPolygon,
)
NUMBER_INTEGER = _first(
    lambda: Qgis.ProcessingNumberParameterType.Integer,
    lambda: QgsProcessingParameterNumber.Type.Integer,
)
NUMBER_DOUBLE = _first(
    lambda: Qgis.ProcessingNumberParameterType.Double,
    lambda: QgsProcessingParameterNumber.Type.Double,
)
ADVANCED_PARAMETER = _first(
    lambda: Qgis.ProcessingParameterFlag.Advanced,
    lambda: QgsProcessingParameterDefinition.Flag.FlagAdvanced,
)
# Layer pickers (moved in QGIS 3.34)
RASTER_LAYERS = _first(
    lambda: Qgis.LayerFilter.RasterLayer, lambda: QgsMapLayerProxyModel.Filter.RasterLayer
)
POLYGON_LAYERS = _first(
    lambda: Qgis.LayerFilter.PolygonLayer, lambda: QgsMapLayerProxyModel.Filter.PolygonLayer
)
# Rasters, units and CRSs (moved in QGIS 3.38, 3.30 and 3.36)
RASTER_SIZE_CAPABILITY = _first(
    lambda: Qgis.RasterInterfaceCapability.Size,
    lambda: QgsRasterDataProvider.Capability.Size,
)
METERS = _first(lambda: Qgis.DistanceUnit.Meters, lambda: QgsUnitTypes.DistanceUnit.DistanceMeters)
WKT_PREFERRED_GDAL = _first(
    lambda: Qgis.CrsWktVariant.PreferredGdal,
    lambda: QgsCoordinateReferenceSystem.WktVariant.WKT_PREFERRED_GDAL,
)
