"""crossearth:segmentraster: a raster in, a styled class raster (and optional extras) out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsMapLayer,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterBand,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterExtent,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsRasterLayer,
    QgsVectorLayer,
)

from .. import styling
from ..inputs import InputProblem, extent_in_layer_crs, local_raster_source
from ..worker import SegmentRequest
from .base import CrossEarthAlgorithm
from .engine_run import run_engine_for_feedback


class _StyleOnLoad(QgsProcessingLayerPostProcessorInterface):
    """Names and styles a result when the Processing dialog loads it into the project.

    QGIS keeps only a C++ pointer to post-processors, so the Python objects are held here
    until they have run (else Python would delete them first).
    """

    pending: dict[str, _StyleOnLoad] = {}

    def __init__(self, key: str, name: str, classes: list[styling.ClassStyle]) -> None:
        super().__init__()
        self.key = key
        self.name = name
        self.classes = classes

    @classmethod
    def create(cls, key: str, name: str, classes: list[styling.ClassStyle]) -> _StyleOnLoad:
        cls.pending[key] = cls(key, name, classes)
        return cls.pending[key]

    def postProcessLayer(  # noqa: N802
        self,
        layer: QgsMapLayer,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> None:
        layer.setName(self.name)
        if isinstance(layer, QgsRasterLayer):
            styling.apply_class_style(layer, self.classes)
        elif isinstance(layer, QgsVectorLayer):
            layer.setRenderer(styling.polygon_renderer(self.classes))
        self.pending.pop(self.key, None)


def _optional_int(parameters: dict[str, Any], name: str) -> int | None:
    """The integer given for an optional parameter, None when it was left empty."""
    value = parameters.get(name)
    if value is None or value == "" or (hasattr(value, "isNull") and value.isNull()):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise QgsProcessingException(f"{name} must be a whole number, not '{value}'.") from None


class SegmentRasterAlgorithm(CrossEarthAlgorithm):
    INPUT = "INPUT"
    MODEL = "MODEL"
    DEVICE = "DEVICE"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    BANDS = "BANDS"
    EXTENT = "EXTENT"
    OUTPUT = "OUTPUT"
    CONFIDENCE = "CONFIDENCE"
    POLYGONS = "POLYGONS"

    def name(self) -> str:
        return "segmentraster"

    def displayName(self) -> str:  # noqa: N802
        return "Segment raster"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Segments a raster into land-cover classes with a CrossEarth model package. The "
            "model runs in the engine's own Python process (see Settings > Options > "
            "CrossEarth); the result is a GeoTIFF of class numbers with the model's class "
            "names and colours, styled by a .qml saved beside it.\n\n"
            "Model: an installed model's name or a package folder (empty: the bundled "
            "default). Device: auto, cpu, cuda or cuda:N. Tile size and overlap default to "
            "the model's. Bands: the raster's bands in the model's input order (empty: "
            "matched by band names). Extent: segment only this area. Confidence: per-pixel "
            "confidence (0..1). Polygons: class polygons with class name and area (GeoPackage)."
        )

    def tags(self) -> list[str]:
        return ["segmentation", "classification", "land cover", "deep learning", "crossearth"]

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"))
        self.addParameter(
            QgsProcessingParameterString(
                self.MODEL, "Model (name or package folder; empty = default)", "", optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterString(self.DEVICE, "Device (auto, cpu, cuda, cuda:N)", "auto")
        )
        advanced = [
            QgsProcessingParameterNumber(
                self.TILE_SIZE,
                "Tile size in pixels (empty = the model's)",
                QgsProcessingParameterNumber.Integer,
                optional=True,
                minValue=16,
            ),
            QgsProcessingParameterNumber(
                self.OVERLAP,
                "Overlap of neighbouring tiles in pixels (empty = the model's)",
                QgsProcessingParameterNumber.Integer,
                optional=True,
                minValue=0,
            ),
            QgsProcessingParameterNumber(
                self.BATCH_SIZE,
                "Tiles per batch",
                QgsProcessingParameterNumber.Integer,
                4,
                minValue=1,
            ),
        ]
        self.addParameter(
            QgsProcessingParameterBand(
                self.BANDS,
                "Bands in the model's input order (empty = by band names)",
                None,
                self.INPUT,
                optional=True,
                allowMultiple=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterExtent(self.EXTENT, "Segment only this extent", optional=True)
        )
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Classes"))
        self.addParameter(
            QgsProcessingParameterRasterDestination(
                self.CONFIDENCE, "Confidence", optional=True, createByDefault=False
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.POLYGONS,
                "Class polygons",
                QgsProcessing.TypeVectorPolygon,
                optional=True,
                createByDefault=False,
            )
        )

    def processAlgorithm(  # noqa: N802
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        try:
            source = local_raster_source(layer)
            extent = None
            if parameters.get(self.EXTENT):
                box = self.parameterAsExtent(parameters, self.EXTENT, context)
                crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
                extent = extent_in_layer_crs(box, crs, layer, "The extent")
        except InputProblem as exc:
            raise QgsProcessingException(str(exc)) from None
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        confidence = self.parameterAsOutputLayer(parameters, self.CONFIDENCE, context) or None
        polygons = self.parameterAsOutputLayer(parameters, self.POLYGONS, context) or None
        if polygons and Path(polygons).suffix.lower() != ".gpkg":
            raise QgsProcessingException(
                f"Class polygons are written as a GeoPackage; give a .gpkg file ({polygons})."
            )
        request = SegmentRequest(
            input=source,
            output=output,
            model=self.parameterAsString(parameters, self.MODEL, context).strip(),
            device=self.parameterAsString(parameters, self.DEVICE, context).strip() or "auto",
            tile=_optional_int(parameters, self.TILE_SIZE),
            overlap=_optional_int(parameters, self.OVERLAP),
            batch=_optional_int(parameters, self.BATCH_SIZE) or 4,
            bands=self.parameterAsInts(parameters, self.BANDS, context) or None,
            confidence=confidence,
            polygons=polygons,
            extent=extent,
            # Destination parameters come with QGIS's own overwrite confirmation (a file picked
            # in the dialog was confirmed; in qgis_process and scripts it was named on purpose).
            overwrite=True,
        )
        outcome = run_engine_for_feedback(request.args(), feedback)
        done = outcome.done or {}
        for warning in outcome.warnings:
            feedback.pushWarning(warning)
        classes = styling.classes_from_raster(output)
        model_name = styling.model_name_of(output)
        name = styling.result_layer_name(layer.name(), model_name)
        styling.class_layer(output, name, classes)  # saves the .qml beside the output
        feedback.pushInfo(
            f"{model_name}: {done.get('tiles')} tiles in {done.get('seconds')} s on "
            f"{done.get('device')}; pixels per class: {done.get('classes')}"
        )
        for path, suffix in ((output, ""), (polygons, " polygons")):
            if path and context.willLoadLayerOnCompletion(path):
                details = context.layerToLoadOnCompletionDetails(path)
                details.name = name + suffix
                details.setPostProcessor(_StyleOnLoad.create(path, name + suffix, classes))
        return {self.OUTPUT: output, self.CONFIDENCE: confidence, self.POLYGONS: polygons}
