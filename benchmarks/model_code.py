"""The model code's wasted work, each change measured side by side with what it replaced.

1. Scores at the output grid: a model with an input scale (the bundled models see tiles
   upsampled 2x or 4x) used to resample its 50 query masks to the upsampled input and
   average-pool the class scores back to the source grid; now the masks are resampled straight
   to the source grid. Measured on the bundled models' real weights and the sample raster:
   time per batch, max |difference| of the scores and the share of pixels whose class changes.
2. Contiguous feature maps before resampling: the backbone's feature maps are a transposed view
   of its tokens; `F.interpolate` of such a view is a slow strided copy on CPU. Measured at
   ViT-L/16 shapes of a 512 px tile (1024 channels, 32 x 32 tokens, resampled 4x and 2x).

Usage: .venv/bin/python benchmarks/model_code.py [--repeat N] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.models.loading import load_package_model  # noqa: E402
from engine.models.packages import find_package  # noqa: E402

SAMPLE = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"
MODELS = REPO / "resources" / "models"


def best_of(function: Callable[[], object], repeat: int) -> float:
    function()  # warm-up: allocator, thread pool, lazy initialisation
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sample_batch(card: object, tile: int, count: int = 4) -> torch.Tensor:
    """`count` tiles along the sample raster's diagonal, normalized as the card says (its
    bands 1-5 are the models' five Landsat bands, already in their 0-255 range)."""
    spec = card.input  # type: ignore[attr-defined]
    mean = np.asarray(spec.mean, np.float32)[:, None, None]
    std = np.asarray(spec.std, np.float32)[:, None, None]
    with rasterio.open(SAMPLE) as dataset:
        image = dataset.read([1, 2, 3, 4, 5], out_dtype=np.float32)
    step = max(1, (min(image.shape[1:]) - tile) // max(1, count - 1))
    tiles = [image[:, i * step : i * step + tile, i * step : i * step + tile] for i in range(count)]
    return torch.from_numpy((np.stack(tiles) - mean) / std)


def scores_at_output_grid(model_dir: Path, repeat: int) -> None:
    package = find_package(str(model_dir))
    scaled = load_package_model(package)
    scale = package.card.input_scale
    tile = package.card.tile_size
    x = sample_batch(package.card, tile)
    network = scaled.network

    def before() -> torch.Tensor:  # what ScaledModel did: to the input grid, then pooled
        up = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        return F.avg_pool2d(network(up), scale)

    def after() -> torch.Tensor:
        return scaled(x)

    with torch.inference_mode():
        old, new = before(), after()
        t_old, t_new = best_of(before, repeat), best_of(after, repeat)
    changed = (old.argmax(1) != new.argmax(1)).float().mean().item()
    print(
        f"{package.card.name} (input scale {scale}, batch {x.shape[0]} x {tile} px): "
        f"before {t_old * 1000:.0f} ms, after {t_new * 1000:.0f} ms, speed-up "
        f"{t_old / t_new:.2f}x; max |d score| {float((old - new).abs().max()):.2e}, "
        f"classes changed {changed * 100:.2f} % of pixels"
    )


def contiguous_resampling(repeat: int) -> None:
    """The backbone's four feature maps of one 512 px ViT-L/16 tile (1024 channels, 32 x 32
    tokens) resampled 4x, 2x, 1x and 0.5x, as a transposed view of the tokens and contiguous."""
    tokens = torch.randn(1, 1 + 32 * 32, 1024)
    view = tokens[:, 1:].transpose(1, 2).reshape(1, -1, 32, 32)  # as the backbone makes it

    def resample(maps: torch.Tensor) -> list[torch.Tensor]:
        return [
            F.interpolate(maps, scale_factor=s, mode="bilinear", align_corners=False)
            for s in (4.0, 2.0, 0.5)
        ]

    def before() -> list[torch.Tensor]:
        return resample(view)

    def after() -> list[torch.Tensor]:
        return resample(view.contiguous())

    with torch.inference_mode():
        difference = max(float((a - b).abs().max()) for a, b in zip(before(), after(), strict=True))
        t_old, t_new = best_of(before, repeat), best_of(after, repeat)
    print(
        f"ViT-L feature maps of one tile (1024 ch, 32 x 32 -> x4, x2, x0.5): transposed view "
        f"{t_old * 1000:.0f} ms, contiguous first {t_new * 1000:.0f} ms, speed-up "
        f"{t_old / t_new:.2f}x, max |d| {difference:.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for folder in sorted(p for p in MODELS.iterdir() if (p / "model.json").is_file()):
        scores_at_output_grid(folder, args.repeat)
    contiguous_resampling(args.repeat)


if __name__ == "__main__":
    main()
