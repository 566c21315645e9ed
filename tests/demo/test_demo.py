"""`make demo`'s steps on a cropped sample: qgis_process runs the plugin's algorithm, QGIS
renders the picture, and the metrics against the labels are written."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from osgeo import ogr
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"
LABELS = REPO / "resources" / "samples" / "raleigh_landcover_sample.tif"


def crop(source, destination, rows, cols):
    with rasterio.open(source) as src:
        window = rasterio.windows.Window(
            cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start
        )
        data = src.read(window=window)
        profile = dict(
            src.profile,
            height=data.shape[1],
            width=data.shape[2],
            transform=src.window_transform(window),
        )
        descriptions = src.descriptions
    with rasterio.open(destination, "w", **profile) as dst:
        dst.write(data)
        for index, text in enumerate(descriptions):
            if text:
                dst.set_band_description(index + 1, text)
    return destination


def test_demo_steps_on_a_cropped_sample(tmp_path):
    rows, cols = slice(40, 136), slice(60, 156)  # 96 x 96 px with every class
    sample = crop(SAMPLE, tmp_path / "sample.tif", rows, cols)
    labels = crop(LABELS, tmp_path / "labels.tif", rows, cols)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--sample", str(sample),
         "--labels", str(labels), "--out", str(out), "--no-docs"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "qgis_process crossearth:segmentraster took" in done.stdout
    assert "mIoU" in done.stdout

    classes = out / "sample_classes.tif"
    with rasterio.open(classes) as dst, rasterio.open(sample) as src:
        assert dst.shape == src.shape and dst.crs == src.crs and dst.transform == src.transform
        values = dst.read(1)
        assert json.loads(dst.tags(1)["CLASS_NAMES"])[0] == "developed"
    assert len(np.unique(values)) >= 3
    with rasterio.open(out / "sample_classes_confidence.tif") as confidence:
        assert confidence.shape == (96, 96)
    polygons = ogr.Open(str(out / "sample_classes_polygons.gpkg"))
    assert polygons.GetLayer(0).GetFeatureCount() > 3
    assert "<paletteEntry" in classes.with_suffix(".qml").read_text()
    picture = Image.open(out / "sample_demo.png")
    assert picture.size[0] > 1000 and picture.size[1] > 500
    assert len(set(picture.convert("RGB").getdata())) > 50  # a real rendering, not a blank page
    scores = json.loads((out / "metrics.json").read_text())
    assert scores["pixels"] == int((rasterio.open(labels).read(1) != 255).sum())
    assert scores["mIoU"] > 0.2
