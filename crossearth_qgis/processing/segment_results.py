"""What becomes of the results of crossearth:segmentraster: failed optional outputs dropped,
the class style saved beside the class raster, and the loaded layers named and styled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qgis.core import (
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsVectorLayer,
)

from ..layers import styling
from ..worker.client import EngineOutcome


class StyleOnLoad(QgsProcessingLayerPostProcessorInterface):
    """Names and styles a result when the Processing dialog loads it into the project.

    QGIS keeps only a C++ pointer to post-processors, so the Python objects are held here
    until they have run (else Python would delete them first).
    """

    pending: dict[str, StyleOnLoad] = {}

    def __init__(self, key: str, name: str, classes: list[styling.ClassStyle]) -> None:
        super().__init__()
        self.key = key
        self.name = name
        self.classes = classes

    @classmethod
    def create(cls, key: str, name: str, classes: list[styling.ClassStyle]) -> StyleOnLoad:
        cls.pending[key] = cls(key, name, classes)
        return cls.pending[key]

    def postProcessLayer(
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


@dataclass(frozen=True)
class SegmentOutputs:
    """The files the run writes: the class raster, and the optional outputs (None: not asked,
    or not written)."""

    classes: str
    confidence: str | None
    polygons: str | None


def drop_failed_outputs(
    outcome: EngineOutcome,
    outputs: SegmentOutputs,
    context: QgsProcessingContext,
    feedback: QgsProcessingFeedback,
) -> SegmentOutputs:
    """The outputs that were written. The class raster is complete even where an optional
    output failed: that is reported, and the missing file neither returned nor loaded."""
    written = {"confidence": outputs.confidence, "polygons": outputs.polygons}
    for kind, problem in outcome.failed.items():
        feedback.reportError(f"The {kind} could not be written: {problem}", fatalError=False)
        missing = written.pop(kind, None)
        if missing and context.willLoadLayerOnCompletion(missing):
            loading = context.layersToLoadOnCompletion()
            loading.pop(missing, None)
            context.setLayersToLoadOnCompletion(loading)
    return SegmentOutputs(outputs.classes, written.get("confidence"), written.get("polygons"))


def style_result(
    output: str, layer_name: str, done: dict[str, Any], feedback: QgsProcessingFeedback
) -> tuple[str, list[styling.ClassStyle]]:
    """Saves the class style beside the class raster (a .qml, so the result opens styled
    anywhere) and logs the run's figures; returns the result's layer name and its classes."""
    model_name = styling.model_name_of(output)
    name = styling.result_layer_name(layer_name, model_name)
    classes: list[styling.ClassStyle] = []
    try:
        classes = styling.classes_from_raster(output)
        _, style_problem = styling.class_layer_or_plain(output, name, classes)
    except styling.StyleError as exc:
        style_problem = str(exc)
    if style_problem:
        feedback.pushWarning(style_problem)
    feedback.pushInfo(
        f"{model_name}: {done.get('tiles')} tiles in {done.get('seconds')} s on "
        f"{done.get('device')}; pixels per class: {done.get('classes')}"
    )
    return name, classes


def name_on_load(
    written: SegmentOutputs,
    name: str,
    classes: list[styling.ClassStyle],
    context: QgsProcessingContext,
) -> None:
    """Names and styles the class raster and polygons that Processing loads when it is done."""
    for path, suffix in ((written.classes, ""), (written.polygons, " polygons")):
        if path and context.willLoadLayerOnCompletion(path):
            details = context.layerToLoadOnCompletionDetails(path)
            details.name = name + suffix
            details.setPostProcessor(StyleOnLoad.create(path, name + suffix, classes))
