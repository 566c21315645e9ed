"""The README's "Your imagery" picture: one scene at three ground sample distances, segmented
with the processing resolution chosen automatically (`--gsd auto`) and at the raster's own
pixels (`--gsd native`).

    .venv/bin/python scripts/imagery_figure.py [docs/your_imagery.png]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rasterio
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch
from osgeo import gdal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.run.pipeline import SegmentOptions, segment  # noqa: E402

MODEL = REPO / "resources" / "models" / "crossearth-landsat-lc"
SCENE = REPO / "resources" / "data" / "raleigh" / "landsat7_2000.tif"


def true_colour(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        rgb = src.read([3, 2, 1]).astype(np.float32)
    low, high = np.percentile(rgb, (2, 98))
    return np.clip((rgb - low) / (high - low), 0, 1).transpose(1, 2, 0)


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "your_imagery.png"
    gdal.UseExceptions()
    card = json.loads((MODEL / "model.json").read_text(encoding="utf-8"))
    names = [c["name"] for c in card["classes"]]
    colours = [np.array(c["color"]) / 255 for c in card["classes"]]
    with tempfile.TemporaryDirectory(prefix="crossearth-figure-") as scratch:
        folder = Path(scratch)
        scenes = {
            "14.25 m (2x finer)": folder / "fine.tif",
            "28.5 m (the model's GSD)": SCENE,
            "57 m (2x coarser)": folder / "coarse.tif",
        }
        gdal.Warp(str(scenes["14.25 m (2x finer)"]), str(SCENE), xRes=14.25, yRes=14.25,
                  resampleAlg="bilinear")  # fmt: skip
        gdal.Warp(str(scenes["57 m (2x coarser)"]), str(SCENE), xRes=57, yRes=57,
                  resampleAlg="average")  # fmt: skip
        figure, axes = plt.subplots(3, 3, figsize=(12, 12.6))
        cmap = ListedColormap(colours)
        for column, (title, raster) in enumerate(scenes.items()):
            axes[0, column].imshow(true_colour(raster))
            axes[0, column].set_title(f"input, {title}", fontsize=10)
            for row, gsd in ((1, "auto"), (2, "native")):
                out = folder / f"{column}_{gsd}.tif"
                segment(raster, out, MODEL, SegmentOptions(device="cpu", gsd=gsd))
                with rasterio.open(out) as src:
                    classes = np.ma.masked_equal(src.read(1), src.nodata)
                axes[row, column].imshow(classes, cmap=cmap, vmin=0, vmax=len(names) - 1,
                                         interpolation="nearest")  # fmt: skip
                axes[row, column].set_title(f"--gsd {gsd}", fontsize=10)
        for axis in axes.ravel():
            axis.set_xticks([])
            axis.set_yticks([])
        figure.legend(
            handles=[Patch(color=c, label=n) for c, n in zip(colours, names, strict=True)],
            loc="lower center",
            ncol=len(names),
            frameon=False,
        )
        figure.suptitle(
            "One Landsat 7 scene at three pixel sizes, crossearth-landsat-lc (trained at 28.5 m)"
        )
        figure.tight_layout(rect=(0, 0.04, 1, 0.97))
        partial = target.with_name(f".{target.name}.partial.png")
        figure.savefig(partial, dpi=80)
        partial.replace(target)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
