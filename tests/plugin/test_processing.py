"""The Processing provider: processing.run, qgis_process, graphical models, feedback, cancel."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterRasterLayer,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)

from .conftest import (
    CLASSES,
    ENGINE_PYTHON,
    MODEL_NAME,
    TINY_MMSEG_CONFIG,
    fresh_qgis_config,
    qgis_process,
    qgis_process_env,
)

SEGMENT = "crossearth:segmentraster"


def raster_values(path: Path) -> tuple[np.ndarray, tuple, str, list]:
    dataset = gdal.Open(str(path))
    band = dataset.GetRasterBand(1)
    table = band.GetColorTable()
    colours = [table.GetColorEntry(i)[:3] for i in range(3)]
    return (band.ReadAsArray(), dataset.GetGeoTransform(), dataset.GetProjection(), colours)


class RecordingFeedback(QgsProcessingFeedback):
    def __init__(self, cancel_at_tile: bool = False) -> None:
        super().__init__()
        self.progress: list[float] = []
        self.texts: list[str] = []
        self.cancel_at_tile = cancel_at_tile
        self.progressChanged.connect(self.progress.append)

    def setProgressText(self, text: str) -> None:
        self.texts.append(text)
        if self.cancel_at_tile and "tile " in text:
            self.cancel()
        super().setProgressText(text)


def test_provider_lists_its_algorithms_with_conventional_parameters(provider):
    assert provider.id() == "crossearth" and provider.name() == "CrossEarth"
    ids = sorted(a.id() for a in provider.algorithms())
    assert ids == [
        "crossearth:convertcheckpoint",
        "crossearth:downloadmodel",
        "crossearth:finetune",
        "crossearth:segmentraster",
    ]
    segment = QgsApplication.processingRegistry().algorithmById(SEGMENT)
    names = [p.name() for p in segment.parameterDefinitions()]
    for expected in (
        "INPUT", "MODEL", "DEVICE", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "BANDS", "OUTPUT",
        "CONFIDENCE", "POLYGONS", "GSD", "OUTPUT_GRID", "MIN_REGION", "MIN_REGION_UNIT",
        "KEEP_CLASSES", "SIMPLIFY", "WORKERS", "CLUSTER",
    ):  # fmt: skip
        assert expected in names
    advanced = QgsProcessingParameterDefinition.FlagAdvanced
    for name in ("GSD", "OUTPUT_GRID", "WORKERS", "CLUSTER"):
        assert segment.parameterDefinition(name).flags() & advanced, name
    assert segment.flags() & segment.FlagSupportsBatch
    assert segment.flags() & segment.FlagCanCancel
    optional = QgsProcessingParameterDefinition.FlagOptional
    for name in (
        "MODEL", "TILE_SIZE", "OVERLAP", "BANDS", "CONFIDENCE", "POLYGONS", "MIN_REGION",
        "KEEP_CLASSES", "SIMPLIFY", "WORKERS", "CLUSTER",
    ):  # fmt: skip
        assert segment.parameterDefinition(name).flags() & optional, name
    assert not segment.parameterDefinition("INPUT").flags() & optional


def test_processing_run_and_qgis_process_produce_the_same_raster(
    provider, rasters, tmp_path, caplog
):
    import processing

    caplog.set_level(logging.INFO, logger="crossearth_qgis.worker.client")
    feedback = RecordingFeedback()
    first = tmp_path / "processing_run.tif"
    result = processing.run(
        SEGMENT,
        {
            "INPUT": str(rasters["six_band"]),
            "MODEL": MODEL_NAME,
            "BANDS": [3, 2, 1],
            "OUTPUT": str(first),
            "POLYGONS": str(tmp_path / "processing_run.gpkg"),
        },
        feedback=feedback,
    )
    assert result["OUTPUT"] == str(first)
    assert result["POLYGONS"] == str(tmp_path / "processing_run.gpkg")
    assert Path(result["POLYGONS"]).is_file()
    assert feedback.progress[-1] == pytest.approx(100.0)
    assert any("tile " in t for t in feedback.texts)
    assert first.with_suffix(".qml").is_file()
    [command] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("running")]
    assert "--bands=3,2,1" in command  # BANDS keeps the order given: red, green, blue

    # The same through qgis_process, with the plugin found on QGIS_PLUGINPATH in a fresh
    # profile: it is loaded once `plugins enable` has recorded it in the profile's QGIS3.ini.
    env = qgis_process_env(fresh_qgis_config(tmp_path / "profile"))
    qgis_process(["plugins", "enable", "crossearth_qgis"], env)
    listing = qgis_process(["list"], env)
    assert "crossearth:segmentraster" in listing and "crossearth:convertcheckpoint" in listing
    second = tmp_path / "qgis_process.tif"
    output = qgis_process(
        [
            "run",
            SEGMENT,
            "--json",
            "--",
            f"INPUT={rasters['six_band']}",
            f"MODEL={MODEL_NAME}",
            "BANDS=3",
            "BANDS=2",
            "BANDS=1",
            f"OUTPUT={second}",
        ],
        env,
    )
    answer = json.loads(output[output.index("{") :])
    assert answer["results"]["OUTPUT"] == str(second)

    a, b = raster_values(first), raster_values(second)
    assert np.array_equal(a[0], b[0])
    assert len(np.unique(a[0])) > 1  # a real result, not one class everywhere
    assert a[1:] == b[1:]  # georeferencing and colour table
    assert a[3] == [rgb for _, rgb in CLASSES]
    assert second.with_suffix(".qml").is_file()


def test_workers_and_cluster_reach_the_engine(provider, rasters, tmp_path, monkeypatch):
    import processing

    from crossearth_qgis.processing import segment_raster

    seen: list[list[str]] = []

    def engine(args, feedback):
        seen.append(list(args))
        raise QgsProcessingException("stopped by the test")

    monkeypatch.setattr(segment_raster, "run_engine_for_feedback", engine)
    base = {"INPUT": str(rasters["rgb"]), "MODEL": MODEL_NAME, "OUTPUT": str(tmp_path / "x.tif")}
    for extra in (
        {"WORKERS": "auto", "CLUSTER": " ray://head:10001 "},
        {"WORKERS": 3},
        {"WORKERS": "0"},
        {},
    ):
        with pytest.raises(QgsProcessingException, match="stopped by the test"):
            processing.run(SEGMENT, {**base, **extra})
    sharded = [[a for a in args if a.startswith(("--workers", "--cluster"))] for args in seen]
    assert sharded == [["--workers=auto", "--cluster=ray://head:10001"], ["--workers=3"], [], []]
    with pytest.raises(QgsProcessingException, match="Workers must be 0 .* not 'many'"):
        processing.run(SEGMENT, {**base, "WORKERS": "many"})
    assert len(seen) == 4  # refused before the engine ran
    # Compiling reaches the engine with PyTorch and is refused with ONNX Runtime.
    with pytest.raises(QgsProcessingException, match="stopped by the test"):
        processing.run(SEGMENT, {**base, "RUNTIME": "torch", "COMPILE": True})
    assert "--compile" in seen[-1] and "--runtime=torch" in seen[-1]
    with pytest.raises(QgsProcessingException, match="Compiling applies to the PyTorch runtime"):
        processing.run(SEGMENT, {**base, "RUNTIME": "onnxruntime", "COMPILE": True})
    assert len(seen) == 5


def test_qgis_process_with_two_ray_workers(provider, rasters, tmp_path, engine_check):
    """WORKERS=2 through qgis_process: the engine shards the raster on a local Ray instance
    and the result equals the single-process one."""
    import processing

    if not engine_check.get("ray"):
        pytest.skip("Ray is not installed in the engine environment")

    single = tmp_path / "single.tif"
    processing.run(
        SEGMENT, {"INPUT": str(rasters["rgb"]), "MODEL": MODEL_NAME, "OUTPUT": str(single)}
    )
    env = qgis_process_env(fresh_qgis_config(tmp_path / "profile"))
    qgis_process(["plugins", "enable", "crossearth_qgis"], env)
    sharded = tmp_path / "sharded.tif"
    output = qgis_process(
        [
            "run",
            SEGMENT,
            "--json",
            "--",
            f"INPUT={rasters['rgb']}",
            f"MODEL={MODEL_NAME}",
            "WORKERS=2",
            f"OUTPUT={sharded}",
        ],
        env,
    )
    answer = json.loads(output[output.index("{") :])
    assert answer["results"]["OUTPUT"] == str(sharded)
    # The algorithm's summary names where the tiles ran.
    assert "on ray: 2 worker(s)" in " ".join(answer["log"]["info"])
    a, b = raster_values(single), raster_values(sharded)
    assert np.array_equal(a[0], b[0]) and a[1:] == b[1:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "profile", "sharded.qml", "sharded.tif", "sharded.tif.aux.xml", "single.qml", "single.tif",
        "single.tif.aux.xml",
    ]  # fmt: skip


def test_feedback_cancel_stops_the_worker(provider, rasters, tmp_path):
    import processing

    output = tmp_path / "cancelled.tif"
    feedback = RecordingFeedback(cancel_at_tile=True)
    with pytest.raises(QgsProcessingException, match="Cancelled; no output was written"):
        processing.run(
            SEGMENT,
            {
                "INPUT": str(rasters["rgb"]),
                "MODEL": MODEL_NAME,
                "OVERLAP": 120,
                "BATCH_SIZE": 1,
                "OUTPUT": str(output),
            },
            feedback=feedback,
        )
    assert any("tile " in t for t in feedback.texts)
    assert list(tmp_path.iterdir()) == []


def test_engine_errors_become_processing_errors(provider, rasters, tmp_path):
    import processing

    with pytest.raises(QgsProcessingException) as caught:
        processing.run(
            SEGMENT,
            {
                "INPUT": str(rasters["two_band"]),
                "MODEL": MODEL_NAME,
                "OUTPUT": str(tmp_path / "x.tif"),
            },
        )
    assert "The raster has 2 band(s) but the model needs 3 (red, green, blue)" in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_segment_raster_inside_a_graphical_model(provider, rasters, tmp_path):
    model = QgsProcessingModelAlgorithm("segment in a model", "tests")
    model.addModelParameter(
        QgsProcessingParameterRasterLayer("image", "Image"),
        QgsProcessingModelParameter("image"),
    )
    child = QgsProcessingModelChildAlgorithm(SEGMENT)
    child.setChildId("segment")
    child.addParameterSources(
        "INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("image")]
    )
    child.addParameterSources(
        "MODEL", [QgsProcessingModelChildParameterSource.fromStaticValue(MODEL_NAME)]
    )
    # Only part of the raster, given in another CRS (WGS 84) than the raster's (UTM 25S).
    source = QgsRasterLayer(str(rasters["rgb"]), "rgb")
    full = source.extent()
    part = QgsRectangle(full.xMinimum(), full.yMinimum(), full.center().x(), full.center().y())
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    box = QgsCoordinateTransform(source.crs(), wgs84, QgsProject.instance()).transformBoundingBox(
        part
    )
    extent = (
        f"{box.xMinimum()!r},{box.xMaximum()!r},{box.yMinimum()!r},{box.yMaximum()!r} [EPSG:4326]"
    )
    child.addParameterSources(
        "EXTENT", [QgsProcessingModelChildParameterSource.fromStaticValue(extent)]
    )
    output = QgsProcessingModelOutput("classes", "Classes")
    output.setChildOutputName("OUTPUT")
    child.setModelOutputs({"classes": output})
    model.addChildAlgorithm(child)
    model.updateDestinationParameters()

    context = QgsProcessingContext()
    destination = tmp_path / "model_classes.tif"
    results, ok = model.run(
        {"image": str(rasters["rgb"]), "segment:classes": str(destination)},
        context,
        QgsProcessingFeedback(),
    )
    assert ok
    # QGIS 3.22 names a model's outputs child:output; later versions by the output's name.
    assert results.get("segment:classes", results.get("classes")) == str(destination)
    values = gdal.Open(str(destination)).ReadAsArray()
    # The lower-left quarter (100 x 85 px), grown by the round trip through WGS 84.
    assert 100 <= values.shape[1] <= 103 and 85 <= values.shape[0] <= 88
    assert values.max() < 3


@pytest.mark.full_engine
def test_convert_checkpoint_algorithm(provider, engine_fixtures, tmp_path):
    import processing

    result = processing.run(
        "crossearth:convertcheckpoint",
        {
            "CHECKPOINT": str(engine_fixtures / "tiny.pth"),
            "MMSEG_CONFIG": str(TINY_MMSEG_CONFIG),
            "CLASSES": "sea,town,forest",
            "NAME": "from-processing",
            "DTYPE": 1,
            "OUTPUT": str(tmp_path / "package"),
        },
    )
    package = Path(result["OUTPUT"])
    assert result["MODEL_NAME"] == "from-processing"
    card = json.loads((package / "model.json").read_text())
    assert [c["name"] for c in card["classes"]] == ["sea", "town", "forest"]
    assert card["provenance"]["weights_dtype"] == "float16"
    assert (package / "weights.safetensors").stat().st_size > 0

    with pytest.raises(QgsProcessingException, match="either the checkpoint's preset or"):
        processing.run(
            "crossearth:convertcheckpoint",
            {"CHECKPOINT": str(engine_fixtures / "tiny.pth"), "OUTPUT": str(tmp_path / "p2")},
        )
    assert os.path.exists(engine_fixtures / "tiny.pth")


def test_results_loaded_by_processing_are_named_and_styled(
    provider, rasters, tmp_path, project, qgis_iface, monkeypatch
):
    """What the Processing dialog does with 'Open output file after running'."""
    import processing
    from qgis.core import QgsLayerTreeModel
    from qgis.gui import QgsLayerTreeView

    # QGIS 3.44 hands the layer tree view to C++, which the test interface's stand-in is not.
    view, model = QgsLayerTreeView(), QgsLayerTreeModel(project.layerTreeRoot())
    view.setModel(model)
    monkeypatch.setattr(qgis_iface, "layerTreeView", lambda: view, raising=False)

    processing.runAndLoadResults(
        SEGMENT,
        {
            "INPUT": str(rasters["rgb"]),
            "MODEL": MODEL_NAME,
            "OUTPUT": str(tmp_path / "loaded.tif"),
            "POLYGONS": str(tmp_path / "loaded.gpkg"),
        },
    )
    layers = {layer.name(): layer for layer in project.mapLayers().values()}
    name = f"olinda_rgb – {MODEL_NAME}"
    classes = layers[name]
    assert isinstance(classes.renderer(), QgsPalettedRasterRenderer)
    assert [c.label for c in classes.renderer().classes()] == [n for n, _ in CLASSES]
    polygons = layers[f"{name} polygons"]
    assert isinstance(polygons.renderer(), QgsCategorizedSymbolRenderer)
    assert polygons.renderer().classAttribute() == "class"
    assert [c.value() for c in polygons.renderer().categories()] == [n for n, _ in CLASSES]


RALEIGH_SAMPLE = Path(__file__).resolve().parents[2] / "resources" / "samples"


@pytest.mark.full_engine
def test_fine_tune_algorithm_writes_a_listed_model(provider, engine_fixtures, tmp_path):
    import processing

    from crossearth_qgis.catalog_events import catalog_events

    added = []
    catalog_events.package_added.connect(added.append)
    feedback = RecordingFeedback()
    image = str(RALEIGH_SAMPLE / "raleigh_landsat7_sample.tif")
    labels = str(RALEIGH_SAMPLE / "raleigh_landcover_sample.tif")
    try:
        result = processing.run(
            "crossearth:finetune",
            {
                "BASE": MODEL_NAME,
                "INPUT": image,
                "LABELS": labels,
                "LABEL_MAP": "0=built-up,1=vegetation,2=vegetation,3=vegetation,4=water",
                "BANDS": "3,2,1",
                "STEPS": 3,
                "BATCH_SIZE": 2,
                "DEVICE": "cpu",
                "NAME": "tiny-raleigh",
            },
            feedback=feedback,
        )
    finally:
        catalog_events.package_added.disconnect(added.append)
    package = Path(result["OUTPUT"])
    # No folder given: the new model goes to the user models folder, where the lists find it.
    assert package == engine_fixtures / "models" / "tiny-raleigh"
    assert added == [str(package)]
    card = json.loads((package / "model.json").read_text())
    assert [c["name"] for c in card["classes"]] == ["built-up", "vegetation", "water"]
    assert card["provenance"]["base"]["model"] == MODEL_NAME
    assert "built-up<-built-up" in card["provenance"]["head"]
    assert 0.0 <= result["MIOU"] <= 1.0
    assert card["metrics"]["validation"]["mIoU"] == pytest.approx(result["MIOU"])
    assert feedback.progress and max(feedback.progress) == pytest.approx(100.0)
    listing = subprocess.run(
        [ENGINE_PYTHON, "-m", "engine.cli", "models", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "tiny-raleigh" in [m["name"] for m in json.loads(listing.stdout)["models"]]

    with pytest.raises(QgsProcessingException, match="either a label raster or label polygons"):
        processing.run("crossearth:finetune", {"INPUT": image, "BASE": MODEL_NAME})


@pytest.mark.full_engine
def test_fine_tune_with_a_teacher_of_other_classes_is_refused(provider, engine_fixtures, tmp_path):
    import processing

    with pytest.raises(QgsProcessingException, match="same classes in the same order"):
        processing.run(
            "crossearth:finetune",
            {
                "BASE": MODEL_NAME,
                "TEACHER": MODEL_NAME,  # its classes are not the relabelled ones
                "DISTILL_WEIGHT": 2.0,
                "INPUT": str(RALEIGH_SAMPLE / "raleigh_landsat7_sample.tif"),
                "LABELS": str(RALEIGH_SAMPLE / "raleigh_landcover_sample.tif"),
                "LABEL_MAP": "0=built-up,1=vegetation,2=vegetation,3=vegetation,4=water",
                "BANDS": "3,2,1",
                "STEPS": 2,
                "DEVICE": "cpu",
                "OUTPUT": str(tmp_path / "distilled"),
            },
        )
    assert not (tmp_path / "distilled").exists()


def test_a_band_error_names_the_models_that_take_the_raster(provider, rasters, tmp_path):
    """Processing's error carries the engine's advice, the text the dock and the CLI show."""
    import processing

    feedback = RecordingFeedback()
    logged: list[str] = []
    feedback.pushConsoleInfo = logged.append
    with pytest.raises(QgsProcessingException) as caught:
        processing.run(
            SEGMENT,
            {
                "INPUT": str(rasters["rgb"]),
                "MODEL": "crossearth-landsat-lc-fast",
                "OUTPUT": str(tmp_path / "x.tif"),
            },
            feedback=feedback,
        )
    message = str(caught.value)
    assert message.startswith("The raster has 3 band(s) but the model needs 5")
    assert f"Installed models that take it: {MODEL_NAME} (installed;" in message
    assert " --" not in message  # the analyst's words, not the command line's
    # Said once: the engine's error line is not repeated in the log.
    assert not [line for line in logged if "band(s)" in line]


def test_model_is_a_choice_of_installed_models_and_runtime_of_installed_runtimes(
    provider, engine_fixtures
):
    from processing.gui.wrappers import DIALOG_STANDARD

    from crossearth_qgis.environment import capabilities
    from crossearth_qgis.environment.engine_env import resolve_interpreter
    from crossearth_qgis.processing.model_choice import DEFAULT_TEXT, model_choice_wrapper
    from crossearth_qgis.processing.segment_raster import HELP, SegmentRasterAlgorithm

    algorithm = SegmentRasterAlgorithm()
    algorithm.initAlgorithm()
    model = algorithm.parameterDefinition("MODEL")
    assert model.metadata()["widget_wrapper"]["class"] is model_choice_wrapper()
    wrapper = model_choice_wrapper()(model, DIALOG_STANDARD)
    combo = wrapper.widget
    names = [combo.itemData(i) for i in range(combo.count())]
    assert combo.itemText(0) == DEFAULT_TEXT and names[0] == ""
    assert MODEL_NAME in names and "crossearth-landsat-lc-fast" in names
    combo.setCurrentIndex(names.index(MODEL_NAME))
    assert wrapper.value() == MODEL_NAME
    wrapper.setValue("/some/package/folder")  # a path still goes through, for scripts
    assert wrapper.value() == "/some/package/folder"

    # RUNTIME lists what the selected environment has, once it was probed.
    python = resolve_interpreter().python
    capabilities.remember(python, {"runtimes": {"onnxruntime": "1.32"}})
    narrowed = SegmentRasterAlgorithm()
    narrowed.initAlgorithm()
    assert narrowed.parameterDefinition("RUNTIME").options() == ["auto", "onnxruntime"]
    assert narrowed.parameterDefinition("RUNTIME").defaultValue() == "auto"
    # Every parameter's help is written once: its tooltip, and the algorithm's help.
    help_text = narrowed.shortHelpString()
    for parameter in narrowed.parameterDefinitions():
        assert parameter.help() == HELP[parameter.name()], parameter.name()
        entry = f"<b>{parameter.description()}</b>: {HELP[parameter.name()]}"
        assert help_text.count(entry) == 1, parameter.name()
