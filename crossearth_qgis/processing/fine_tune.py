"""crossearth:finetune: a model package fine-tuned on an image and its labels (raster or
polygons), written as a new package into the user models folder (or a folder you choose)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterDefinition,
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
from ..layers.inputs import InputProblem, local_raster_source, parse_bands
from ..worker.client import EngineOutcome, run_engine_json
from ..worker.engine_errors import EngineError
from ..worker.models import package_folder
from ..worker.requests import FineTuneRequest
from .base import CrossEarthAlgorithm, Feedback, Parameters

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


def _recipe_number(
    name: str, label: str, number_type: Any, **limits: float
) -> QgsProcessingParameterNumber:
    """An optional number of the training recipe; left empty, the recipe's default holds."""
    return QgsProcessingParameterNumber(
        name, f"{label} {RECIPE_DEFAULT}", number_type, optional=True, **limits
    )


@dataclass(frozen=True)
class _TrainingData:
    """The files and values the worker trains on."""

    image: str
    labels: str | None
    polygons: str | None
    class_field: str | None
    mask: str | None
    bands: list[int] | None


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

    ALGORITHM_ID = "finetune"
    DISPLAY_NAME = "Fine-tune model"
    HELP_TEXT = (
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
        self.add_parameters(self._data_parameters() + self._class_parameters())
        self.add_parameters(self._training_parameters())
        self.add_parameters(self._advanced_parameters(), advanced=True)
        self.add_parameters(self._output_parameters())
        self.addOutput(QgsProcessingOutputString(self.MODEL_NAME, "Model name"))
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, "Validation mIoU"))

    def prepare(
        self, parameters: Parameters, context: QgsProcessingContext, feedback: Feedback
    ) -> FineTuneRequest:
        data = self._training_data(parameters, context)
        catalog = run_engine_json(["models", "--json"])
        base = self.parameter_text(parameters, self.BASE, context) or catalog.get("default") or ""
        if not base:
            raise QgsProcessingException(
                "No model to fine-tune: no default model is installed; give a model name or folder."
            )
        name = self.parameter_text(parameters, self.NAME, context)
        name = name or f"{Path(base).name}-{Path(data.image).stem}"
        chosen = self.parameter_text(parameters, self.OUTPUT, context)
        try:
            default = package_folder(Path(catalog["user_dir"]), name)
        except EngineError as exc:
            raise QgsProcessingException(str(exc)) from None
        destination = _destination(chosen, default, name)
        feedback.pushInfo(f"fine-tuning {base} on {Path(data.image).name}")
        return self._request(parameters, context, data, base, name, destination)

    def results(
        self,
        job: FineTuneRequest,
        outcome: EngineOutcome,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        miou = _report(outcome.done or {}, feedback)
        catalog_events.package_added.emit(job.output)
        return {
            self.OUTPUT: job.output,
            self.MODEL_NAME: job.name,
            self.MIOU: float(miou) if miou is not None else float("nan"),
        }

    def _data_parameters(self) -> list[QgsProcessingParameterDefinition]:
        """The model to start from, the image and its labels (a raster or polygons)."""
        return [
            QgsProcessingParameterString(
                self.BASE,
                "Model to fine-tune (name or package folder; empty = default)",
                optional=True,
            ),
            QgsProcessingParameterRasterLayer(self.INPUT, "Training image"),
            QgsProcessingParameterRasterLayer(self.LABELS, "Label raster", optional=True),
            QgsProcessingParameterVectorLayer(
                self.POLYGONS, "or label polygons", [qgis_enums.VECTOR_POLYGON], optional=True
            ),
            QgsProcessingParameterField(
                self.CLASS_FIELD,
                "Class field of the polygons",
                parentLayerParameterName=self.POLYGONS,
                optional=True,
            ),
            QgsProcessingParameterVectorLayer(
                self.MASK,
                "Labelled area (polygons)",
                [qgis_enums.VECTOR_POLYGON],
                optional=True,
            ),
        ]

    def _class_parameters(self) -> list[QgsProcessingParameterDefinition]:
        """How label values become classes, and the image's bands in the model's order."""
        return [
            QgsProcessingParameterString(
                self.CLASSES,
                "Class names in order, comma-separated (empty = from the labels)",
                optional=True,
            ),
            QgsProcessingParameterString(
                self.LABEL_MAP,
                "Label values to classes, e.g. 1=forest,2=water,9=ignore",
                optional=True,
            ),
            QgsProcessingParameterString(
                self.BANDS,
                "Image bands in the model's order, e.g. 3,2,1 (empty = by name)",
                optional=True,
            ),
        ]

    def _training_parameters(self) -> list[QgsProcessingParameterDefinition]:
        """What trains, and for how long."""
        return [
            QgsProcessingParameterEnum(self.MODE, "What trains", MODES, defaultValue=0),
            _recipe_number(self.STEPS, "Training steps", qgis_enums.NUMBER_INTEGER, minValue=1),
        ]

    def _advanced_parameters(self) -> list[QgsProcessingParameterDefinition]:
        """The rest of the training recipe, distillation from a teacher, and the device."""
        integer, double = qgis_enums.NUMBER_INTEGER, qgis_enums.NUMBER_DOUBLE
        return [
            _recipe_number(self.BATCH_SIZE, "Windows per step", integer, minValue=1),
            _recipe_number(self.LEARNING_RATE, "Learning rate", double, minValue=0.0),
            _recipe_number(
                self.VAL_FRACTION,
                "Share of labelled pixels held out for validation",
                double,
                minValue=0.01,
                maxValue=0.9,
            ),
            QgsProcessingParameterString(
                self.TEACHER,
                "Teacher model with the same classes, for knowledge distillation (name or "
                "package folder; empty = none)",
                optional=True,
            ),
            _recipe_number(
                self.DISTILL_WEIGHT, "Weight of the teacher's loss", double, minValue=0.0
            ),
            QgsProcessingParameterString(self.DEVICE, "Device (auto, cpu, cuda, cuda:N)", "auto"),
        ]

    def _output_parameters(self) -> list[QgsProcessingParameterDefinition]:
        """The new model's name and package folder."""
        return [
            QgsProcessingParameterString(self.NAME, "Name of the new model", optional=True),
            QgsProcessingParameterFolderDestination(
                self.OUTPUT,
                "Model package folder (empty = user models folder)",
                optional=True,
                createByDefault=False,
            ),
        ]

    def _training_data(
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> _TrainingData:
        """The image, its labels (a raster or polygons with their class field), the labelled
        area and the bands, as files and values for the worker; plain errors otherwise."""
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
        class_field = self.parameter_text(parameters, self.CLASS_FIELD, context)
        if polygons and not class_field:
            raise QgsProcessingException("Choose the class field of the label polygons.")
        try:
            bands = parse_bands(self.parameter_text(parameters, self.BANDS, context))
        except InputProblem as exc:
            raise QgsProcessingException(str(exc)) from None
        return _TrainingData(image, labels, polygons, class_field or None, mask, bands)

    def _request(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        data: _TrainingData,
        base: str,
        name: str,
        destination: Path,
    ) -> FineTuneRequest:
        """The worker's command: the training data, the classes and the training recipe."""

        def text(key: str) -> str:
            return self.parameter_text(parameters, key, context)

        def number(key: str, read: Any) -> Any:
            return _given(parameters, key, read, context)

        classes = text(self.CLASSES)
        return FineTuneRequest(
            image=data.image,
            output=str(destination),
            base=base,
            labels=data.labels,
            polygons=data.polygons,
            class_field=data.class_field,
            mask=data.mask,
            classes=[c.strip() for c in classes.split(",")] if classes else None,
            label_map=text(self.LABEL_MAP) or None,
            bands=data.bands,
            mode=MODES[self.parameterAsEnum(parameters, self.MODE, context)],
            steps=number(self.STEPS, self.parameterAsInt),
            batch=number(self.BATCH_SIZE, self.parameterAsInt),
            lr=number(self.LEARNING_RATE, self.parameterAsDouble),
            val_fraction=number(self.VAL_FRACTION, self.parameterAsDouble),
            teacher=text(self.TEACHER) or None,
            distill_weight=number(self.DISTILL_WEIGHT, self.parameterAsDouble),
            device=text(self.DEVICE) or "auto",
            name=name,
            # A folder given as the destination parameter comes with QGIS's overwrite
            # confirmation; the engine still replaces only a model package it wrote itself.
            overwrite=bool(text(self.OUTPUT)),
        )


def _destination(chosen: str, default: Path, name: str) -> Path:
    """The new package's folder: the one chosen as the output, else `default` in the user
    models folder, which must not exist yet (nobody confirmed replacing it). An empty folder
    Processing made up front is removed: the engine creates the package folder itself."""
    destination = Path(chosen) if chosen else default
    if not chosen and destination.exists():
        raise QgsProcessingException(
            f"A model named '{name}' already exists in the user models folder "
            f"({destination}); give the new model another name, or choose that folder as "
            "the output to replace it."
        )
    if destination.is_dir() and not any(destination.iterdir()):
        destination.rmdir()  # an empty folder Processing made up front
    destination.parent.mkdir(parents=True, exist_ok=True)
    return destination


def _report(done: dict[str, Any], feedback: QgsProcessingFeedback) -> float | None:
    """Logs the training's warnings and its validation mIoU; returns the mIoU (None if none)."""
    for warning in done.get("warnings", []):
        feedback.pushWarning(warning)
    miou = done.get("mIoU")
    if miou is not None:
        feedback.pushInfo(f"validation mIoU on held-out blocks: {100 * miou:.1f}%")
    return miou
