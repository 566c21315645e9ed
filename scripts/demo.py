"""`make demo`: the main job as a user runs it without a screen.

1. qgis_process runs the plugin's Processing algorithm crossearth:segmentraster on the bundled
   sample raster with the bundled default model (classes, confidence and polygons);
2. QGIS renders a PNG: the input (true colour) beside the styled result, with the legend;
3. it prints where the outputs are, how long it took and, where the sample has labels, the
   mIoU against them.

Usage: .venv/bin/python scripts/demo.py [--sample RASTER] [--labels RASTER] [--out FOLDER]
       [--model NAME_OR_PATH] [--no-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLE = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"
LABELS = REPO / "resources" / "samples" / "raleigh_landcover_sample.tif"
QGIS_PROCESS = "/usr/bin/qgis_process.bin"  # Debian's wrapper passes an option 3.22 rejects
ALGORITHM = "crossearth:segmentraster"


def qgis_environment(profile: Path) -> dict[str, str]:
    """qgis_process in a throw-away profile that has the plugin (from this checkout) enabled,
    with this checkout's engine environment as the worker's Python."""
    shutil.copytree(REPO / "tests" / "fixtures" / "qgis-settings", profile)
    env = dict(os.environ)
    env.update(
        QGIS_CUSTOM_CONFIG_PATH=str(profile),
        QGIS_PLUGINPATH=str(REPO),
        QT_QPA_PLATFORM="offscreen",
        CROSSEARTH_PYTHON=env.get("CROSSEARTH_PYTHON", str(REPO / ".venv" / "bin" / "python")),
    )
    return env


def run_algorithm(sample: Path, out: Path, model: str, env: dict[str, str]) -> dict[str, str]:
    subprocess.run(
        [QGIS_PROCESS, "plugins", "enable", "crossearth_qgis"],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    stem = f"{sample.stem}_classes"
    command = [
        QGIS_PROCESS, "--json", "run", ALGORITHM, "--",
        f"INPUT={sample}", f"MODEL={model}", "DEVICE=cpu",
        f"OUTPUT={out / f'{stem}.tif'}",
        f"CONFIDENCE={out / f'{stem}_confidence.tif'}",
        f"POLYGONS={out / f'{stem}_polygons.gpkg'}",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"qgis_process failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout[done.stdout.index("{") :])["results"]


def label_metrics(classes_path: Path, labels_path: Path) -> dict:
    import numpy as np
    import rasterio

    from training.metrics import metrics, update_confusion

    with rasterio.open(classes_path) as src:
        predicted = src.read(1, masked=True)
        names = json.loads(src.tags(1)["CLASS_NAMES"])
    with rasterio.open(labels_path) as src:
        reference = src.read(1)
    reference = np.where(np.ma.getmaskarray(predicted), 255, reference)
    confusion = np.zeros((len(names), len(names)), np.int64)
    update_confusion(confusion, reference, np.ma.getdata(predicted), 255)
    return metrics(confusion, names)


def render(sample: Path, classes_path: Path, png: Path, title: str) -> None:
    """Input (true colour) beside the styled result, legend and scale bar, as a PNG."""
    import rasterio
    from qgis.core import (
        QgsApplication,
        QgsContrastEnhancement,
        QgsLayoutExporter,
        QgsLayoutItemLabel,
        QgsLayoutItemLegend,
        QgsLayoutItemMap,
        QgsLayoutItemScaleBar,
        QgsLayoutPoint,
        QgsLayoutSize,
        QgsLegendRenderer,
        QgsLegendStyle,
        QgsMapLayerLegendUtils,
        QgsMultiBandColorRenderer,
        QgsPrintLayout,
        QgsProject,
        QgsRasterLayer,
        QgsRasterMinMaxOrigin,
        QgsUnitTypes,
    )
    from qgis.PyQt.QtGui import QFont

    from crossearth_qgis.layers import styling

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no screen needed
    app = QgsApplication([], False)
    app.initQgis()
    try:
        project = QgsProject.instance()
        image = QgsRasterLayer(str(sample), f"{sample.stem} (true colour)")
        with rasterio.open(sample) as dataset:  # QGIS 3.22 has no band descriptions API
            bands = [(d or "").lower() for d in dataset.descriptions]
        if {"red", "green", "blue"} <= set(bands):
            rgb = [bands.index(c) + 1 for c in ("red", "green", "blue")]
            image.setRenderer(QgsMultiBandColorRenderer(image.dataProvider(), *rgb))
        image.setContrastEnhancement(
            QgsContrastEnhancement.StretchToMinimumMaximum, QgsRasterMinMaxOrigin.CumulativeCut
        )
        result = styling.class_layer(
            classes_path,
            styling.result_layer_name(sample.stem, styling.model_name_of(classes_path)),
        )
        project.addMapLayers([image, result])
        project.setCrs(image.crs())  # a project without a screen gets no CRS by itself

        extent = image.extent()
        width = 120.0  # mm per map; heights follow the raster's aspect ratio
        height = width * extent.height() / extent.width()
        layout = QgsPrintLayout(project)
        layout.initializeDefaults()
        page = layout.pageCollection().page(0)
        page.setPageSize(QgsLayoutSize(2 * width + 88, height + 44, QgsUnitTypes.LayoutMillimeters))

        def label(text: str, x: float, y: float, size: int, w: float) -> None:
            item = QgsLayoutItemLabel(layout)
            item.setText(text)
            item.setFont(QFont("DejaVu Sans", size))
            item.attemptMove(QgsLayoutPoint(x, y))
            item.attemptResize(QgsLayoutSize(w, 8))
            layout.addLayoutItem(item)

        label(title, 8, 4, 13, 2 * width + 70)
        maps = []
        captions = ["Input: Landsat 7 ETM+, true colour", "CrossEarth classes"]
        for index, (layer, caption) in enumerate(zip([image, result], captions, strict=True)):
            x = 8 + index * (width + 6)
            label(caption, x, 13, 10, width)
            item = QgsLayoutItemMap(layout)
            item.attemptMove(QgsLayoutPoint(x, 20))
            item.attemptResize(QgsLayoutSize(width, height))
            item.setLayers([layer])
            item.setCrs(image.crs())
            item.setExtent(extent)
            item.setFrameEnabled(True)
            layout.addLayoutItem(item)
            maps.append(item)
        legend = QgsLayoutItemLegend(layout)
        legend.setTitle("Classes")
        legend.setLinkedMap(maps[1])
        legend.setAutoUpdateModel(False)
        root = legend.model().rootGroup()
        root.clear()
        node = root.addLayer(result)
        # Only the class entries: no layer title, no "Band 1" header.
        QgsLegendRenderer.setNodeLegendStyle(node, QgsLegendStyle.Hidden)
        entries = legend.model().layerOriginalLegendNodes(node)
        keep = [
            i
            for i, entry in enumerate(entries)
            if entry.data(0) in {c.name for c in styling.classes_from_raster(classes_path)}
        ]
        QgsMapLayerLegendUtils.setLegendNodeOrder(node, keep)
        legend.model().refreshLayerLegend(node)
        legend.attemptMove(QgsLayoutPoint(2 * width + 20, 20))
        layout.addLayoutItem(legend)
        scale = QgsLayoutItemScaleBar(layout)
        scale.setLinkedMap(maps[0])
        scale.setStyle("Single Box")
        scale.setUnits(QgsUnitTypes.DistanceKilometers)
        scale.setUnitLabel("km")
        scale.setUnitsPerSegment(1.0)
        scale.setNumberOfSegments(2)
        scale.setNumberOfSegmentsLeft(0)
        scale.setHeight(2.0)
        layout.addLayoutItem(scale)
        scale.update()
        scale.resizeToMinimumWidth()
        scale.attemptMove(QgsLayoutPoint(8, height + 24))
        settings = QgsLayoutExporter.ImageExportSettings()
        settings.dpi = 110
        settings.generateWorldFile = False
        settings.exportMetadata = False
        layout.setReferenceMap(None)  # a picture, not a georeferenced image
        status = QgsLayoutExporter(layout).exportToImage(str(png), settings)
        if status != QgsLayoutExporter.Success:
            raise SystemExit(f"rendering {png} failed (QGIS layout exporter status {status})")
        project.removeAllMapLayers()
    finally:
        app.exitQgis()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=SAMPLE)
    parser.add_argument("--labels", type=Path, default=LABELS, help="'' for none")
    parser.add_argument("--out", type=Path, default=REPO / "demo-output")
    parser.add_argument("--model", default="", help="model name or package (default: bundled)")
    parser.add_argument("--no-docs", action="store_true", help="do not copy the PNG into docs/")
    args = parser.parse_args(argv)

    from engine.errors import CrossEarthError
    from engine.models.packages import find_package

    try:
        package = find_package(args.model or None)
    except CrossEarthError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"model:  {package.card.name} ({package.path})")
    print(f"sample: {args.sample}")
    with tempfile.TemporaryDirectory(prefix="crossearth-demo-") as scratch:
        env = qgis_environment(Path(scratch) / "profile")
        started = time.perf_counter()
        results = run_algorithm(args.sample, args.out.absolute(), args.model, env)
        seconds = time.perf_counter() - started
    classes = Path(results["OUTPUT"])
    png = args.out / f"{args.sample.stem}_demo.png"
    title = f"CrossEarth '{package.card.name}' on {args.sample.name} (qgis_process {ALGORITHM})"
    render(args.sample, classes, png, title)
    print(f"qgis_process {ALGORITHM} took {seconds:.1f} s (QGIS start and model load included)")
    for key in ("OUTPUT", "CONFIDENCE", "POLYGONS"):
        if results.get(key):
            print(f"  {key.lower():<10} {results[key]}")
    print(f"  style      {classes.with_suffix('.qml')}")
    print(f"  picture    {png}")
    if args.labels and Path(args.labels).is_file():
        scores = label_metrics(classes, Path(args.labels))
        print(
            f"against {Path(args.labels).name}: mIoU {100 * scores['mIoU']:.1f} %, overall "
            f"accuracy {100 * scores['overall_accuracy']:.1f} % on {scores['pixels']:,} pixels"
        )
        for name, value in scores["iou"].items():
            print(f"  IoU {name:<24} {'-' if value is None else f'{100 * value:.1f} %'}")
        (args.out / "metrics.json").write_text(json.dumps(scores, indent=2) + "\n")
    if not args.no_docs:
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(png, REPO / "docs" / "demo.png")
        print(f"  copied to  {REPO / 'docs' / 'demo.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
