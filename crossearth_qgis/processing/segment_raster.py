"""crossearth:segmentraster: a raster in, a styled class raster (and optional extras) out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingMultiStepFeedback,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsRasterLayer,
)

from .. import qgis_enums
from ..environment.engine_env import EngineEnvironmentError
from ..layers.export import ExportError, export_layer, remove_export
from ..layers.export_plan import ExportPlan, check_rendered_bands, plan_export
from ..layers.grid import FILE, RENDERED, has_fixed_grid, layer_kind, native_units_per_pixel
from ..layers.inputs import InputProblem, extent_in_layer_crs, local_raster_source
from ..worker.client import EngineOutcome, run_engine_json
from ..worker.engine_errors import EngineError
from ..worker.models import list_models, model_card
from ..worker.requests import ONNX_RUNTIMES, SegmentRequest
from .base import CrossEarthAlgorithm, Feedback, Parameters, installed_runtimes, optional_number
from .engine_run import run_engine_for_feedback
from .model_choice import model_choice_wrapper
from .segment_results import (
    SegmentOutputs,
    drop_failed_outputs,
    name_on_load,
    style_result,
)


def _optional_number(
    parameters: dict[str, Any], name: str, convert: type[int] | type[float], what: str
) -> Any:
    """The number (`convert`ed) given for an optional parameter, None when it was left empty;
    `what` words the kind of number for the error."""
    value = parameters.get(name)
    if value is None or value == "" or (hasattr(value, "isNull") and value.isNull()):
        return None
    try:
        return convert(value)
    except (TypeError, ValueError):
        raise QgsProcessingException(f"{name} must be {what}, not '{value}'.") from None


def _optional_int(parameters: dict[str, Any], name: str) -> int | None:
    """The integer given for an optional parameter, None when it was left empty."""
    return _optional_number(parameters, name, int, "a whole number")


def _optional_float(parameters: dict[str, Any], name: str) -> float | None:
    """The number given for an optional parameter, None when it was left empty."""
    return _optional_number(parameters, name, float, "a number")


def gsd_text(value: str) -> str:
    """GSD as the engine takes it: auto, native or metres (checked here, said plainly)."""
    word = value.strip().lower()
    if word in ("", "auto", "native"):
        return word or "auto"
    try:
        metres = float(word.removesuffix("m"))
    except ValueError:
        metres = float("nan")
    if not metres > 0 or metres == float("inf"):
        raise QgsProcessingException(
            f"GSD must be auto, native or a pixel size in metres (e.g. 0.5), not '{value}'."
        )
    return f"{metres:g}"


def workers_text(value: object) -> str | None:
    """WORKERS as the engine takes it: None (one process, no Ray) for empty or 0, "auto", or
    a number of model workers on Ray."""
    word = str(value if value is not None else "").strip().lower()
    if word in ("", "0", "off", "none"):
        return None
    if word == "auto":
        return "auto"
    try:
        count = int(word)
    except ValueError:
        count = -1
    if count < 0:
        raise QgsProcessingException(
            f"Workers must be 0 (one process), auto or a number of workers, not '{value}'."
        )
    return str(count) if count else None


def _rendered_fit_text(layer_name: str, model: str) -> str:
    """The engine's advice for a web layer's red, green and blue and this model (the text the
    dock and the CLI show); "" when the engine cannot be asked."""
    args = ["fit", "--json", "--layer-bands", "red,green,blue", "--layer-name", layer_name]
    try:
        return str(run_engine_json(args + (["--model", model] if model else [])).get("text", ""))
    except (EngineError, EngineEnvironmentError):
        return ""


OUTPUT_GRIDS = ["source", "model"]
INTRO = (
    "Segments a raster into land-cover classes with a CrossEarth model package. The model runs "
    "in the engine's own Python process (Settings > Options > CrossEarth); the result is a "
    "GeoTIFF of class numbers with the model's class names and colours, styled by a .qml "
    "saved beside it."
)
# Each parameter's help, shown as its tooltip and, in order, as the algorithm's help.
HELP = {
    "INPUT": "a raster file; web map layers (WMS, WMTS, XYZ) and other layers that are not "
    "files are read over the extent (required for web layers) at the processing resolution "
    "into a temporary GeoTIFF first, as their red, green and blue.",
    "MODEL": "an installed model (the list) or, in scripts, a name or a package folder; empty "
    "is the default model.",
    "DEVICE": "auto, cpu, cuda or cuda:N.",
    "BANDS": "the raster's bands in the model's input order; empty matches them by band name.",
    "EXTENT": "segment only this area.",
    "MIN_REGION": "regions smaller than this are merged into the class around them; empty "
    "keeps all.",
    "MIN_REGION_UNIT": "pixels, m² or ha.",
    "KEEP_CLASSES": "class names, comma separated, whose small regions stay.",
    "SIMPLIFY": "tolerance for the class polygons; empty leaves them as traced.",
    "TILE_SIZE": "empty is the model's.",
    "OVERLAP": "overlap of neighbouring tiles; empty is the model's.",
    "BATCH_SIZE": "tiles the model runs at once.",
    "GSD": "auto runs the model at the resolution it was trained at (the model card's GSD), "
    "resampling on the fly; native runs it on the raster's own pixels; a number is metres per "
    "pixel.",
    "OUTPUT_GRID": "the result on the input raster's grid (source) or on the processing grid "
    "(model).",
    "WORKERS": "needs Ray in the engine environment: 0 runs the model in one process; a "
    "number or auto shards the raster over that many model workers (auto: one per GPU, or the "
    "CPU cores divided among them), with the same result.",
    "CLUSTER": "a Ray cluster's address (auto, host:port or ray://host:port) to run on "
    "instead of this computer; input and output must be reachable from every node. Empty is "
    "this computer.",
    "RUNTIME": "what runs the model, among those installed: auto is PyTorch on a GPU and ONNX "
    "Runtime on the CPU when the model has an ONNX graph.",
    "COMPILE": "torch.compile: the first run with a tile and batch size compiles for minutes, "
    "later runs start from the cache.",
    "OUTPUT": "class numbers as a GeoTIFF, with the model's class names and colours.",
    "CONFIDENCE": "per-pixel confidence (0..1).",
    "POLYGONS": "class polygons with class name and area (GeoPackage).",
}
REGION_UNITS = ["px", "m2", "ha"]


class _SegmentJob(NamedTuple):
    request: SegmentRequest
    export: ExportPlan | None  # a layer that is not a file is read into a GeoTIFF first
    outputs: SegmentOutputs
    layer_name: str

    def args(self) -> list[str]:
        return self.request.args()


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
    GSD = "GSD"
    OUTPUT_GRID = "OUTPUT_GRID"
    MIN_REGION = "MIN_REGION"
    MIN_REGION_UNIT = "MIN_REGION_UNIT"
    KEEP_CLASSES = "KEEP_CLASSES"
    SIMPLIFY = "SIMPLIFY"
    WORKERS = "WORKERS"
    CLUSTER = "CLUSTER"
    RUNTIME = "RUNTIME"
    COMPILE = "COMPILE"

    ALGORITHM_ID = "segmentraster"
    DISPLAY_NAME = "Segment raster"

    def shortHelpString(self) -> str:
        # The same words as each parameter's help (its tooltip): written once, in HELP.
        entries = [
            f"<b>{p.description()}</b>: {HELP[p.name()]}"
            for p in self.parameterDefinitions()
            if p.name() in HELP
        ]
        return "<br>".join([INTRO, *entries])

    def tags(self) -> list[str]:
        return ["segmentation", "classification", "land cover", "deep learning", "crossearth"]

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        self.add_parameters(self._source_parameters() + self._region_parameters(), help_texts=HELP)
        self.add_parameters(self._advanced_parameters(), advanced=True, help_texts=HELP)
        self.add_parameters(self._output_parameters(), help_texts=HELP)

    def prepare(
        self, parameters: Parameters, context: QgsProcessingContext, feedback: Feedback
    ) -> _SegmentJob:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        model = self.parameter_text(parameters, self.MODEL, context)
        gsd = gsd_text(self.parameterAsString(parameters, self.GSD, context))
        source, extent, export = self._source(layer, model, gsd, parameters, context)
        outputs = self._outputs(parameters, context)
        runtime, compile_model = self._runtime(parameters, context)
        request = SegmentRequest(
            input=source,
            output=outputs.classes,
            model=model,
            device=self.parameter_text(parameters, self.DEVICE, context) or "auto",
            tile=_optional_int(parameters, self.TILE_SIZE),
            overlap=_optional_int(parameters, self.OVERLAP),
            batch=_optional_int(parameters, self.BATCH_SIZE) or 4,
            bands=self.parameterAsInts(parameters, self.BANDS, context) or None,
            confidence=outputs.confidence,
            polygons=outputs.polygons,
            extent=extent,
            # Destination parameters come with QGIS's own overwrite confirmation (a file picked
            # in the dialog was confirmed; in qgis_process and scripts it was named on purpose).
            overwrite=True,
            workers=workers_text(self.parameterAsString(parameters, self.WORKERS, context)),
            cluster=self.parameter_text(parameters, self.CLUSTER, context) or None,
            runtime=runtime,
            compile=compile_model,
            **self._options(
                parameters, context, gsd, export is not None, bool(outputs.polygons), feedback
            ),
        )
        return _SegmentJob(request, export, outputs, layer.name())

    def results(
        self,
        job: _SegmentJob,
        outcome: EngineOutcome,
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        for warning in outcome.warnings:
            feedback.pushWarning(warning)
        written = drop_failed_outputs(outcome, job.outputs, context, feedback)
        name, classes = style_result(written.classes, job.layer_name, outcome.done or {}, feedback)
        name_on_load(written, name, classes, context)
        return {
            self.OUTPUT: written.classes,
            self.CONFIDENCE: written.confidence,
            self.POLYGONS: written.polygons,
        }

    def _source_parameters(self) -> list[QgsProcessingParameterDefinition]:
        """What to segment, with which model, on which device."""
        model = QgsProcessingParameterString(self.MODEL, "Model", "", optional=True)
        # A choice of the installed models in the dialogs; any name or folder in scripts.
        wrapper = model_choice_wrapper()
        if wrapper is not None:
            model.setMetadata({"widget_wrapper": {"class": wrapper}})
        return [
            QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"),
            model,
            QgsProcessingParameterString(self.DEVICE, "Device", "auto"),
            QgsProcessingParameterBand(
                self.BANDS, "Bands", None, self.INPUT, optional=True, allowMultiple=True
            ),
            QgsProcessingParameterExtent(self.EXTENT, "Segment only this extent", optional=True),
        ]

    def _region_parameters(self) -> list[QgsProcessingParameterDefinition]:
        """Post-processing: merging small regions and simplifying the polygons."""
        return [
            optional_number(self.MIN_REGION, "Minimum region size"),
            QgsProcessingParameterEnum(
                self.MIN_REGION_UNIT,
                "Unit of the minimum region size",
                ["pixels", "m²", "ha"],
                defaultValue=0,
            ),
            QgsProcessingParameterString(
                self.KEEP_CLASSES, "Keep small regions of classes", "", optional=True
            ),
            optional_number(self.SIMPLIFY, "Simplify polygons (metres)"),
        ]

    def _advanced_parameters(self) -> list[QgsProcessingParameterDefinition]:
        """Tiling, the processing resolution and grid, and scaling out on Ray."""
        return [
            optional_number(self.TILE_SIZE, "Tile size (pixels)", minimum=16, integer=True),
            optional_number(self.OVERLAP, "Tile overlap (pixels)", integer=True),
            QgsProcessingParameterNumber(
                self.BATCH_SIZE, "Tiles per batch", qgis_enums.NUMBER_INTEGER, 4, minValue=1
            ),
            QgsProcessingParameterString(self.GSD, "Processing resolution (GSD)", "auto"),
            QgsProcessingParameterEnum(
                self.OUTPUT_GRID,
                "Output grid",
                ["source: the input raster's grid", "model: the processing grid"],
                defaultValue=0,
            ),
            QgsProcessingParameterString(self.WORKERS, "Workers on Ray", "0", optional=True),
            QgsProcessingParameterString(self.CLUSTER, "Ray cluster address", "", optional=True),
            QgsProcessingParameterEnum(
                self.RUNTIME,
                "Runtime",
                installed_runtimes(),
                defaultValue="auto",
                usesStaticStrings=True,
            ),
            QgsProcessingParameterBoolean(
                self.COMPILE, "Compile the model (PyTorch)", defaultValue=False
            ),
        ]

    def _output_parameters(self) -> list[QgsProcessingParameterDefinition]:
        return [
            QgsProcessingParameterRasterDestination(self.OUTPUT, "Classes"),
            QgsProcessingParameterRasterDestination(
                self.CONFIDENCE, "Confidence", optional=True, createByDefault=False
            ),
            QgsProcessingParameterVectorDestination(
                self.POLYGONS,
                "Class polygons",
                qgis_enums.VECTOR_POLYGON,
                optional=True,
                createByDefault=False,
            ),
        ]

    def _source(
        self,
        layer: QgsRasterLayer,
        model: str,
        gsd: str,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
    ) -> tuple[str, tuple[float, float, float, float] | None, ExportPlan | None]:
        """The raster file the engine reads, the extent it segments (in the layer's CRS) and,
        for a layer that is not a file, the plan to read it into one first (over the extent,
        which the engine then needs no more)."""
        try:
            kind = layer_kind(layer)
            source = local_raster_source(layer) if kind == FILE else ""
            extent = None
            if parameters.get(self.EXTENT):
                box = self.parameterAsExtent(parameters, self.EXTENT, context)
                crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
                extent = extent_in_layer_crs(box, crs, layer, "The extent")
            if kind == FILE:
                return source, extent, None
            export = self._plan_export(layer, kind, extent, gsd, model, parameters, context)
            return str(export.destination), None, export
        except InputProblem as exc:
            raise QgsProcessingException(str(exc)) from None

    def _outputs(self, parameters: dict[str, Any], context: QgsProcessingContext) -> SegmentOutputs:
        """The class raster's file and those of the optional outputs that were asked."""
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        confidence = self.parameterAsOutputLayer(parameters, self.CONFIDENCE, context) or None
        polygons = self.parameterAsOutputLayer(parameters, self.POLYGONS, context) or None
        if polygons and Path(polygons).suffix.lower() != ".gpkg":
            raise QgsProcessingException(
                f"Class polygons are written as a GeoPackage; give a .gpkg file ({polygons})."
            )
        return SegmentOutputs(output, confidence, polygons)

    def _runtime(
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[str, bool]:
        """The runtime and whether to compile the model (which applies to PyTorch only)."""
        runtime = self.parameterAsEnumString(parameters, self.RUNTIME, context) or "auto"
        compile_model = self.parameterAsBoolean(parameters, self.COMPILE, context)
        if compile_model and runtime in ONNX_RUNTIMES:
            raise QgsProcessingException(
                f"Compiling applies to the PyTorch runtime, not {runtime}: choose the runtime "
                "auto or torch, or leave Compile off."
            )
        return runtime, compile_model

    def _plan_export(
        self,
        layer: QgsRasterLayer,
        kind: str,
        extent: tuple[float, float, float, float] | None,
        gsd: str,
        model: str,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
    ) -> ExportPlan:
        """How a layer that is not a raster file is read: over EXTENT (the layer's own extent
        only where it has a grid; web layers have none) at the processing resolution."""
        fixed = has_fixed_grid(layer)
        if extent is None:
            if not fixed:
                raise InputProblem(
                    f"'{layer.name()}' is a web map layer without an extent of its own; set "
                    "'Segment only this extent' to the area to read."
                )
            box = layer.extent()
            extent = (box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum())
        card = self._model_card(model) if kind == RENDERED or gsd == "auto" else {}
        if kind == RENDERED:
            bands = self.parameterAsInts(parameters, self.BANDS, context) or None
            needed = list(card.get("input", {}).get("bands", []))
            try:
                check_rendered_bands(layer.name(), card.get("name", model), needed, bands)
            except InputProblem as exc:
                raise InputProblem(_rendered_fit_text(layer.name(), model) or str(exc)) from None
        if gsd == "native":
            if native_units_per_pixel(layer) is None:
                raise InputProblem(
                    f"'{layer.name()}' has no pixel size of its own; set GSD to the pixel size "
                    "in metres to read it at."
                )
            metres = None
        elif gsd == "auto":
            metres = card.get("gsd_m")
            if not metres and not fixed:
                raise InputProblem(
                    f"The model states no GSD and '{layer.name()}' is a web map layer without "
                    "pixels of its own; set GSD to the pixel size in metres to read it at."
                )
        else:
            metres = float(gsd)
        return plan_export(layer, extent, float(metres) if metres else None)

    @staticmethod
    def _model_card(model: str) -> dict[str, Any]:
        """The card of the chosen model (the default one when empty), asked from the engine."""
        try:
            catalog = list_models()
            entry = catalog.find(model) if model else None
            if not model:
                entry = next((m for m in catalog.models if m.default), None)
            return entry.card if entry is not None else model_card(model)
        except (EngineError, EngineEnvironmentError) as exc:
            raise QgsProcessingException(str(exc)) from None

    def _options(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        gsd: str,
        exported: bool,
        polygons: bool,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        """--gsd, --output-grid, --min-region, --keep-classes and --simplify."""
        options: dict[str, Any] = {}
        if exported:
            options["gsd"] = "native"  # read at the processing resolution already
        else:
            options["gsd"] = gsd
            grid = self.parameterAsEnum(parameters, self.OUTPUT_GRID, context)
            options["output_grid"] = OUTPUT_GRIDS[grid]
        size = _optional_float(parameters, self.MIN_REGION)
        keep = self.parameterAsString(parameters, self.KEEP_CLASSES, context)
        names = [name.strip() for name in keep.split(",") if name.strip()]
        if size:
            unit = REGION_UNITS[self.parameterAsEnum(parameters, self.MIN_REGION_UNIT, context)]
            options["min_region"] = str(max(1, round(size))) if unit == "px" else f"{size:g}{unit}"
            options["keep_classes"] = names or None
        elif names:
            feedback.pushWarning(
                "Keep small regions of classes applies only with a minimum region size; "
                "nothing is merged."
            )
        simplify = _optional_float(parameters, self.SIMPLIFY)
        if simplify and polygons:
            options["simplify"] = simplify
        elif simplify:
            feedback.pushWarning("Simplify applies to the class polygons, which were not asked.")
        return options

    def run_job(self, job: _SegmentJob, feedback: QgsProcessingFeedback) -> EngineOutcome:
        """Runs the engine; for a layer that is not a file, reads it first (two steps of one
        progress bar, one cancel) and deletes the read copy afterwards."""
        request, export = job.request, job.export
        if export is None:
            return run_engine_for_feedback(request.args(), feedback)
        steps = QgsProcessingMultiStepFeedback(2, feedback)
        feedback.pushInfo(f"Reading '{export.layer_name}': {export.describe()}")

        def progress(fraction: float, message: str) -> None:
            steps.setProgress(fraction * 100)
            steps.setProgressText(message)

        try:
            export_layer(export, progress, steps.isCanceled, feedback.pushWarning)
        except ExportError as exc:
            raise QgsProcessingException(str(exc)) from None
        try:
            steps.setCurrentStep(1)
            return run_engine_for_feedback(request.args(), steps)
        finally:
            remove_export(export)
