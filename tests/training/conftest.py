"""The real Raleigh (NC) Landsat 7 scene and its 1996 land-cover map, as training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from training.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
RALEIGH = REPO / "resources" / "data" / "raleigh"
IMAGE = RALEIGH / "landsat7_2000.tif"
LABELS = RALEIGH / "landclass96.tif"  # EPSG:3358, the image is EPSG:32119: resampled
AREA = RALEIGH / "training_area.geojson"
LABEL_MAP = {
    1: "developed",
    2: "herbaceous",
    3: "herbaceous",
    4: "shrubland",
    5: "forest",
    6: "water",
    7: "ignore",
}


def recipe(tmp_path: Path, **settings) -> TrainConfig:
    values = {
        "images": [{"image": IMAGE, "labels": LABELS, "mask": AREA}],
        "output": tmp_path / "model",
        "architecture": "tiny",
        "label_map": LABEL_MAP,
        "block_size": 64,
        "window": 128,
        "batch": 2,
        "steps": 4,
        "eval_every": 2,
        "checkpoint_every": 2,
        "warmup": 1,
        "num_points": 512,
        "threads": 2,
    }
    values.update(settings)
    return TrainConfig(**values)


@pytest.fixture
def aligned_labels(tmp_path) -> Path:
    """landclass96 written on the image's own grid and CRS (no resampling needed)."""
    with rasterio.open(LABELS) as src:
        codes = src.read(1)
    with rasterio.open(IMAGE) as image:
        profile = {
            "driver": "GTiff",
            "height": image.height,
            "width": image.width,
            "count": 1,
            "dtype": "uint8",
            "crs": image.crs,
            "transform": image.transform,
            "nodata": 0,
        }
    path = tmp_path / "aligned_labels.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(codes[None])
    assert np.isin(codes, [0, 1, 2, 3, 4, 5, 6, 7]).all()
    return path
