"""crossearth:finetune: a model package fine-tuned on an image and its labels (raster or
polygons), written as a new package into the user models folder (or a folder you choose)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
    QgsProviderRegistry,
    QgsVectorLayer,
)

from .. import qgis_enums
from ..catalog_events import catalog_events
from ..inputs import InputProblem, local_raster_source, parse_bands
from ..requests import FineTuneRequest
from ..worker import run_engine_json
from .base import CrossEarthAlgorithm
from .engine_run import run_engine_for_feedback

MODES = ["reins", "full"]
# The numbers of a training run have one default, the engine's training recipe
# (training/config.py); left empty here, they are not passed, so that default holds.
RECIPE_DEFAULT = "(empty = the training recipe's default)"


def _given(parameters: dict[str, Any], name: str, read: Any, context: Any) -> Any:
    """A number the analyst gave, or None when the parameter was left empty."""
    if parameters.get(name) in (None, ""):
        return None
    return read(parameters, name, context)


def _vector_file(layer: QgsVectorLayer | None, what: str) -> str | None:
    """The file (and layer) of a vector layer read from a local file, for the worker."""
    if layer is None:
        return None
    parts = QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source())
    path = parts.get("path")
    if layer.providerType() != "ogr" or not path or not Path(path).is_file():
        raise QgsProcessingException(
            f"{what} '{layer.name()}' is not a vector file on this computer; save it as a "
            "GeoPackage first (right-click > Export > Save Features As...)."
        )
    if parts.get("layerName") and str(path).lower().endswith(".gpkg"):
        # A multi-layer GeoPackage: the engine reads the first layer unless told otherwise.
        first = QgsVectorLayer(str(path), "first", "ogr")
        if first.isValid() and first.name() != parts["layerName"]:
            raise QgsProcessingException(
                f"{what} '{layer.name()}' is one of several layers of {Path(path).name}; save it "
                "to a GeoPackage of its own first."
            )
    return str(path)


class FineTuneAlgorithm(CrossEarthAlgorithm):
    BASE = "BASE"
    INPUT = "INPUT"
    LABELS = "LABELS"
    POLYGONS = "POLYGONS"
    CLASS_FIELD = "CLASS_FIELD"
    MASK = "MASK"
    CLASSES = "CLASSES"
    LABEL_MAP = "LABEL_MAP"
    BANDS = "BANDS"
    MODE = "MODE"
    STEPS = "STEPS"
    BATCH_SIZE = "BATCH_SIZE"
    LEARNING_RATE = "LEARNING_RATE"
    VAL_FRACTION = "VAL_FRACTION"
    TEACHER = "TEACHER"
    DISTILL_WEIGHT = "DISTILL_WEIGHT"
    DEVICE = "DEVICE"
    NAME = "NAME"
    OUTPUT = "OUTPUT"
    MODEL_NAME = "MODEL_NAME"
    MIOU = "MIOU"

    def name(self) -> str:
        return "finetune"

    def displayName(self) -> str:
        return "Fine-tune model"

    def shortHelpString(self) -> str:
        return (
            "Fine-tunes a CrossEarth model package on your imagery and labels: a label raster "
            "(class ids, on any grid; resampled by nearest neighbour) or polygons with a class "
            "field. Optionally a layer of polygons marks the labelled area (elsewhere pixels "
            "are ignored; label value 255 always is). Label values map to classes with "
            "'1=forest,2=water,9=ignore'; without a map, numbers are class indices and text "
            "values class names. Training holds out spatial blocks for validation and writes "
            "a new model package with its validation mIoU in the card; by default into the "
            "user models folder, so it appears in the model lists. 'reins' trains the Rein "
            "tokens and the head on a frozen backbone (the CrossEarth setting); 'full' trains "
            "everything. Training runs in the engine's worker; cancel keeps the last checkpoint."
        )

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.addParameter(
            QgsProcessingParameterString(
                self.BASE,
                "Model to fine-tune (name or package folder; empty = default)",
                optional=True,
            )
        )
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Training image"))
        self.addParameter(
            QgsProcessingParameterRasterLayer(self.LABELS, "Label raster", optional=True)
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.POLYGONS,
                "or label polygons",
                [qgis_enums.VECTOR_POLYGON],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.CLASS_FIELD,
                "Class field of the polygons",
                parentLayerParameterName=self.POLYGONS,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.MASK,
                "Labelled area (polygons)",
                [qgis_enums.VECTOR_POLYGON],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.CLASSES,
                "Class names in order, comma-separated (empty = from the labels)",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.LABEL_MAP,
                "Label values to classes, e.g. 1=forest,2=water,9=ignore",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.BANDS,
                "Image bands in the model's order, e.g. 3,2,1 (empty = by name)",
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(self.MODE, "What trains", MODES, defaultValue=0)
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.STEPS,
                f"Training steps {RECIPE_DEFAULT}",
                qgis_enums.NUMBER_INTEGER,
                optional=True,
                minValue=1,
            )
        )
        advanced = [
            QgsProcessingParameterNumber(
                self.BATCH_SIZE,
                f"Windows per step {RECIPE_DEFAULT}",
                qgis_enums.NUMBER_INTEGER,
                optional=True,
                minValue=1,
            ),
            QgsProcessingParameterNumber(
                self.LEARNING_RATE,
                f"Learning rate {RECIPE_DEFAULT}",
                qgis_enums.NUMBER_DOUBLE,
                optional=True,
                minValue=0.0,
            ),
            QgsProcessingParameterNumber(
                self.VAL_FRACTION,
                f"Share of labelled pixels held out for validation {RECIPE_DEFAULT}",
                qgis_enums.NUMBER_DOUBLE,
                optional=True,
                minValue=0.01,
                maxValue=0.9,
            ),
            QgsProcessingParameterString(
                self.TEACHER,
                "Teacher model with the same classes, for knowledge distillation (name or "
                "package folder; empty = none)",
                optional=True,
            ),
            QgsProcessingParameterNumber(
                self.DISTILL_WEIGHT,
                f"Weight of the teacher's loss {RECIPE_DEFAULT}",
                qgis_enums.NUMBER_DOUBLE,
                optional=True,
                minValue=0.0,
            ),
            QgsProcessingParameterString(self.DEVICE, "Device (auto, cpu, cuda, cuda:N)", "auto"),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | qgis_enums.ADVANCED_PARAMETER)
            self.addParameter(parameter)
        self.addParameter(
            QgsProcessingParameterString(self.NAME, "Name of the new model", optional=True)
        )
        self.addParameter(
            QgsProcessingParameterFolderDestination(
                self.OUTPUT,
                "Model package folder (empty = user models folder)",
                optional=True,
                createByDefault=False,
            )
        )
        self.addOutput(QgsProcessingOutputString(self.MODEL_NAME, "Model name"))
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, "Validation mIoU"))

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        def text(name: str) -> str:
            return self.parameterAsString(parameters, name, context).strip()

        try:
            image = local_raster_source(
                self.parameterAsRasterLayer(parameters, self.INPUT, context)
            )
            label_layer = self.parameterAsRasterLayer(parameters, self.LABELS, context)
            labels = local_raster_source(label_layer) if label_layer is not None else None
        except InputProblem as exc:
            raise QgsProcessingException(str(exc)) from None
        polygons = _vector_file(
            self.parameterAsVectorLayer(parameters, self.POLYGONS, context), "Label polygons"
        )
        mask = _vector_file(
            self.parameterAsVectorLayer(parameters, self.MASK, context), "Labelled area"
        )
        if (labels is None) == (polygons is None):
            raise QgsProcessingException(
                "Give either a label raster or label polygons (one of the two)."
            )
        class_field = text(self.CLASS_FIELD)
        if polygons and not class_field:
            raise QgsProcessingException("Choose the class field of the label polygons.")
        try:
            bands = parse_bands(text(self.BANDS))
        except InputProblem as exc:
            raise QgsProcessingException(str(exc)) from None

        catalog = run_engine_json(["models", "--json"])
        base = text(self.BASE) or catalog.get("default") or ""
        if not base:
            raise QgsProcessingException(
                "No model to fine-tune: no default model is installed; give a model name or folder."
            )
        name = text(self.NAME) or f"{Path(base).name}-{Path(image).stem}"
        output = self.parameterAsString(parameters, self.OUTPUT, context).strip()
        destination = Path(output) if output else Path(catalog["user_dir"]) / name
        if not output and destination.exists():
            # Nobody chose this folder, so nobody confirmed replacing it.
            raise QgsProcessingException(
                f"A model named '{name}' already exists in the user models folder "
                f"({destination}); give the new model another name, or choose that folder as "
                "the output to replace it."
            )
        if destination.is_dir() and not any(destination.iterdir()):
            destination.rmdir()  # an empty folder Processing made up front
        destination.parent.mkdir(parents=True, exist_ok=True)
        classes = text(self.CLASSES)
        request = FineTuneRequest(
            image=image,
            output=str(destination),
            base=base,
            labels=labels,
            polygons=polygons,
            class_field=class_field or None,
            mask=mask,
            classes=[c.strip() for c in classes.split(",")] if classes else None,
            label_map=text(self.LABEL_MAP) or None,
            bands=bands,
            mode=MODES[self.parameterAsEnum(parameters, self.MODE, context)],
            steps=_given(parameters, self.STEPS, self.parameterAsInt, context),
            batch=_given(parameters, self.BATCH_SIZE, self.parameterAsInt, context),
            lr=_given(parameters, self.LEARNING_RATE, self.parameterAsDouble, context),
            val_fraction=_given(parameters, self.VAL_FRACTION, self.parameterAsDouble, context),
            teacher=text(self.TEACHER) or None,
            distill_weight=_given(parameters, self.DISTILL_WEIGHT, self.parameterAsDouble, context),
            device=text(self.DEVICE) or "auto",
            name=name,
            # A folder given as the destination parameter comes with QGIS's overwrite
            # confirmation; the engine still replaces only a model package it wrote itself.
            overwrite=bool(output),
        )
        feedback.pushInfo(f"fine-tuning {base} on {Path(image).name}")
        outcome = run_engine_for_feedback(request.args(), feedback)
        done = outcome.done or {}
        for warning in done.get("warnings", []):
            feedback.pushWarning(warning)
        miou = done.get("mIoU")
        if miou is not None:
            feedback.pushInfo(f"validation mIoU on held-out blocks: {100 * miou:.1f}%")
        catalog_events.package_added.emit(str(destination))
        return {
            self.OUTPUT: str(destination),
            self.MODEL_NAME: name,
            self.MIOU: float(miou) if miou is not None else float("nan"),
        }
