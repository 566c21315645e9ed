"""Engine throughput and memory, measured side by side in one run.

1. Pipeline vs bare model: the same tiles of the same raster go (a) through `engine.segment`
   (read, normalize, batch, model, blend, argmax, write GeoTIFF + overviews) and (b) straight
   through the model from memory. Ratio = pipeline Mpx/s / bare Mpx/s (goal >= 0.9 on CPU),
   the median over paired rounds (each times both, back to back).
2. Memory: peak RSS of a child process segmenting a raster of 1x and 16x the area
   (goal: ratio <= 1.2).

Usage: .venv/bin/python benchmarks/engine_throughput.py [--model M] [--runtime R] [--device cpu]
       [--tile N] [--repeat N] [--rounds N] [--skip-memory]
The model is the bundled default (what a user runs) on the runtime the engine chooses for it
(`auto`: ONNX Runtime on a CPU when the package has a graph); the bare side calls the same
runtime's batch runner on tiles already in memory. `--model stand-in` uses a small
convolutional network instead: a worst case, not a typical one, since most of its cost is the
allocator (its largest activations, 32 MiB, are mapped fresh and faulted in at every layer:
about 580,000 page faults per 0.85 s job), which varies from process to process on a small
virtual machine by more than the engine's whole share.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.models.model_card import card_from_dict  # noqa: E402
from engine.models.packages import find_package  # noqa: E402
from engine.raster.raster_input import TileReader, choose_scaling, open_raster  # noqa: E402
from engine.run.pipeline import LoadedModel, SegmentOptions, segment, tile_geometry  # noqa: E402
from engine.run.runtimes import choose_runtime, load_model, make_runner  # noqa: E402
from engine.run.tiling import plan_tiles  # noqa: E402

SAMPLE = REPO / "resources" / "samples" / "landsat7_olinda_6band.tif"
STAND_IN = "stand-in"


class StandInNet(torch.nn.Module):
    """A small fully convolutional segmenter with a realistic per-pixel cost on CPU."""

    def __init__(self, classes: int = 6) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(32, 64, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(64, 64, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(64, classes, 1),
            torch.nn.Upsample(scale_factor=2, mode="bilinear"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).softmax(1)


def stand_in_model(tile: int, device: str) -> LoadedModel:
    card = card_from_dict(
        {
            "name": STAND_IN,
            "architecture": {"name": "stand-in"},
            "classes": [{"index": i, "name": f"c{i}", "color": [40 * i, 0, 0]} for i in range(6)],
            "input": {
                "bands": ["red", "green", "blue"],
                "mean": [123.675, 116.28, 103.53],
                "std": [58.395, 57.12, 57.375],
            },
            "tile": {"size": tile, "stride": tile * 2 // 3},
        }
    )
    torch.manual_seed(0)
    # The engine runs a LoadedModel on its recorded device: the module must be there too.
    return LoadedModel(card, StandInNet().eval().to(device), "torch", device)


def source_bands(loaded: LoadedModel) -> list[int]:
    """Bands of the Landsat 7 sample for the model: RGB for the stand-in, else the first N
    (blue, green, red, nir, swir1, swir2: the bundled model's order)."""
    count = len(loaded.card.input.bands)
    return [3, 2, 1] if loaded.card.name == STAND_IN else list(range(1, count + 1))


def make_raster(path: Path, repeat_y: int, repeat_x: int, bands: list[int]) -> Path:
    with rasterio.open(SAMPLE) as src:
        data = src.read(bands)
        profile = {
            "driver": "GTiff",
            "count": len(bands),
            "dtype": "uint8",
            "crs": src.crs,
            "transform": src.transform,
            "tiled": True,
            "compress": "deflate",
        }
    data = np.tile(data, (1, repeat_y, repeat_x))
    profile.update(height=data.shape[1], width=data.shape[2])
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def load(model_arg: str | None, tile: int | None, device: str, runtime: str) -> LoadedModel:
    """The stand-in on PyTorch, or a package (None: the bundled default) on `runtime`."""
    if model_arg == STAND_IN:
        return stand_in_model(tile or 256, device)
    package = find_package(model_arg)
    size = tile or package.card.tile_size
    return load_model(package, device, None, choose_runtime(runtime, package.card, device, size))


def engine_batches(
    loaded: LoadedModel, raster: Path, tile: int, stride: int, batch: int
) -> list[np.ndarray]:
    """The engine's tiles of `raster`, read, normalized and stacked in batches (once a run)."""
    bands = list(range(1, len(loaded.card.input.bands) + 1))
    with open_raster(raster) as ds:
        scaling = choose_scaling(ds, bands, loaded.card.input, "auto")
        reader = TileReader(ds, bands, scaling, loaded.card.input)
        tiles = [
            reader.read_tile(t.row, t.col, tile)[0]
            for t in plan_tiles(ds.height, ds.width, tile, stride)
        ]
    return [np.stack(tiles[i : i + batch]) for i in range(0, len(tiles), batch)]


def bare_forward_seconds(loaded: LoadedModel, batches: list[np.ndarray], batch: int) -> float:
    """Seconds for the model alone (the runtime's batch runner, as the engine calls it) on
    batches already in memory."""
    runner = make_runner(loaded, batch, amp=True, model_tile=None)
    runner(batches[0])  # warm-up
    start = time.perf_counter()
    for b in batches:
        runner(b)  # scores come back on the host, as the engine takes them
    return time.perf_counter() - start


def rss_child(args: argparse.Namespace) -> None:
    loaded = load(args.model, args.tile, args.device, args.runtime)
    raster = Path(args.rss_child)
    segment(
        raster,
        raster.with_suffix(".out.tif"),
        loaded,
        SegmentOptions(tile_size=args.tile, batch_size=args.batch, device=args.device),
    )
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile", type=int, default=None, help="default: the model's own")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--model", default=None, help=f"package or name (default: the bundled default), {STAND_IN}"
    )
    parser.add_argument("--runtime", default="auto", help="auto, torch, onnxruntime, openvino")
    parser.add_argument("--repeat", type=int, default=3, help="raster = sample tiled NxN")
    parser.add_argument("--rounds", type=int, default=9, help="paired timing rounds")
    parser.add_argument(
        "--skip-memory", action="store_true", help="no peak-RSS runs (slow with big models)"
    )
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args)
        return

    loaded = load(args.model, args.tile, args.device, args.runtime)
    # Every round writes the same output name: this run made it, so it may replace it.
    options = SegmentOptions(
        tile_size=args.tile, batch_size=args.batch, device=args.device, overwrite=True
    )
    tile, stride = tile_geometry(loaded.card, options)  # the tiles the engine will use
    with tempfile.TemporaryDirectory() as folder:
        bands = source_bands(loaded)
        raster = make_raster(Path(folder) / "bench.tif", args.repeat, args.repeat, bands)
        with rasterio.open(raster) as ds:
            mpx = ds.width * ds.height / 1e6
            n_tiles = len(plan_tiles(ds.height, ds.width, tile, stride))
        segment(raster, Path(folder) / "warm.tif", loaded, options)  # warm-up
        # Paired rounds: each round times the bare model and then the pipeline, back to back,
        # and the ratio is the median of the rounds' own ratios. On a small shared CPU a slow
        # spell of a few seconds slows both halves of a round alike, where medians taken
        # apart would pair a slow bare run with a fast pipeline run (or the reverse).
        batches = engine_batches(loaded, raster, tile, stride, args.batch)
        bare_runs, pipeline_runs = [], []
        for _ in range(args.rounds):
            bare_runs.append(bare_forward_seconds(loaded, batches, args.batch))
            start = time.perf_counter()
            segment(raster, Path(folder) / "out.tif", loaded, options)
            pipeline_runs.append(time.perf_counter() - start)
        bare, pipeline = statistics.median(bare_runs), statistics.median(pipeline_runs)
        ratios = [b / p for b, p in zip(bare_runs, pipeline_runs, strict=True)]
        print(
            f"model {loaded.card.name} ({loaded.runtime}), device {args.device}, torch threads "
            f"{torch.get_num_threads()}, raster {mpx:.2f} Mpx, {n_tiles} tiles of {tile} px, "
            f"{args.rounds} paired rounds"
        )
        print(f"bare model forward : {mpx / bare:8.3f} Mpx/s (median {bare:.2f} s)")
        print(f"engine pipeline    : {mpx / pipeline:8.3f} Mpx/s (median {pipeline:.2f} s)")
        print(
            f"pipeline / bare    : {statistics.median(ratios):8.3f}  (goal >= 0.9; median of the "
            f"rounds' ratios, which ranged {min(ratios):.3f}-{max(ratios):.3f})"
        )

        if args.skip_memory:
            return
        small = make_raster(Path(folder) / "small.tif", 2, 2, bands)
        large = make_raster(Path(folder) / "large.tif", 8, 8, bands)
        peaks = []
        for path in (small, large):
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--rss-child",
                    str(path),
                    "--device",
                    args.device,
                    "--tile",
                    str(tile),
                    "--batch",
                    str(args.batch),
                    "--runtime",
                    args.runtime,
                    *(["--model", args.model] if args.model else []),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            peaks.append(json.loads(child.stdout.strip().splitlines()[-1])["peak_rss_mb"])
        print(f"peak RSS 1x area   : {peaks[0]:8.1f} MB")
        print(f"peak RSS 16x area  : {peaks[1]:8.1f} MB")
        print(f"RSS ratio 16x / 1x : {peaks[1] / peaks[0]:8.3f}  (goal <= 1.2)")


if __name__ == "__main__":
    main()
