"""Scale-out on Ray, measured side by side in one run.

1. Single process vs sharded with 1 worker, with the same threads (--threads, default all
   cores): the overhead of going through Ray (start, worker start-up, part files, assembly).
   Ratio = sharded Mpx/s / single Mpx/s (goal >= 0.95 on a job long enough that start-up is
   amortised).
2. Sharded with N workers x 1 thread vs a single process with 1 thread: speedup, and
   efficiency per core = speedup / N (N = the machine's cores, 2 on the CI machine).
3. Where CUDA GPUs are present: single process on one GPU, then sharded with 1..G workers (one
   GPU each): Mpx/s per GPU count.

Every run is timed end to end (what the user waits for, Ray start-up included) and "steady"
(from the first tile to the end: the model work plus writing, without start-up and model
loading), taken from the runs' own progress events.

Usage: .venv/bin/python benchmarks/scale_out.py [--repeat N] [--model M] [--batch B] [--rounds R]
       [--threads T]
The raster is the Raleigh Landsat 7 sample tiled N x N times (default 4: 704 x 768 px).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.distributed import segment_sharded  # noqa: E402
from engine.distributed.session import local_cores  # noqa: E402
from engine.run.pipeline import SegmentOptions, segment  # noqa: E402

SAMPLE = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"


def make_raster(path: Path, repeat: int) -> Path:
    with rasterio.open(SAMPLE) as src:
        data = np.tile(src.read(), (1, repeat, repeat))
        profile = {
            "driver": "GTiff",
            "count": src.count,
            "dtype": "uint8",
            "crs": src.crs,
            "transform": src.transform,
            "height": data.shape[1],
            "width": data.shape[2],
            "tiled": True,
            "compress": "deflate",
        }
        names = src.descriptions
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for index, name in enumerate(names):
            dst.set_band_description(index + 1, name)
    return path


class Timing:
    """Wall time of one run and the moment its first tile was reported."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first_tile: float | None = None

    def progress(self, fraction: float, message: str) -> None:
        if self.first_tile is None and message.startswith(("tile ", "segmenting ")):
            self.first_tile = time.perf_counter()

    def done(self, pixels: int) -> dict[str, float]:
        end = time.perf_counter()
        total = end - self.start
        steady = end - (self.first_tile or self.start)
        return {
            "seconds": total,
            "steady_s": steady,
            "mpx_s": pixels / total / 1e6,
            "steady_mpx_s": pixels / steady / 1e6,
        }


def run(raster: Path, out: Path, model: str, options: SegmentOptions, **sharded) -> dict:
    for path in out.parent.glob(out.name + "*"):
        path.unlink()
    with rasterio.open(raster) as src:
        pixels = src.height * src.width
    timing = Timing()
    if sharded:
        result = segment_sharded(raster, out, model, options, progress=timing.progress, **sharded)
    else:
        result = segment(raster, out, model, options, progress=timing.progress)
    figures = timing.done(pixels)
    figures["tiles"] = getattr(result, "tiles_computed", 0) or result.tiles
    return figures


def line(label: str, figures: dict, extra: str = "") -> None:
    print(
        f"{label:<34} {figures['seconds']:7.1f} s  {figures['mpx_s']:7.4f} Mpx/s   steady "
        f"{figures['steady_s']:7.1f} s  {figures['steady_mpx_s']:7.4f} Mpx/s  "
        f"{int(figures['tiles']):5d} tiles{extra}"
    )


def median(runs: list[dict]) -> dict:
    """Per figure, the median over the rounds (the machine may be shared: medians of
    interleaved rounds are what the comparison rests on)."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=4, help="tile the sample N x N times")
    parser.add_argument("--model", default="crossearth-landsat-lc")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of every configuration (median)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads of the single process and the 1 worker in comparison 1 (default: all "
        "cores; on a machine shared with other jobs, 1 gives steadier figures)",
    )
    args = parser.parse_args()
    cores = local_cores()
    threads = args.threads or cores

    def cpu(threads: int) -> SegmentOptions:
        return SegmentOptions(device="cpu", threads=threads, batch_size=args.batch)

    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    configs: dict[str, tuple[SegmentOptions, dict]] = {
        "single": (cpu(threads), {}),
        "one": (cpu(threads), {"workers": 1}),
    }
    if cores > 1:
        if threads != 1:
            configs["base"] = (cpu(1), {})
        configs["many"] = (cpu(1), {"workers": cores})
    if gpus:
        gpu = SegmentOptions(device="cuda", batch_size=args.batch)
        configs["gpu"] = (gpu, {})
        for count in range(1, gpus + 1):
            configs[f"gpu{count}"] = (gpu, {"workers": count})

    with tempfile.TemporaryDirectory(prefix="crossearth-scale-out-") as folder:
        folder_path = Path(folder)
        raster = make_raster(folder_path / "mosaic.tif", args.repeat)
        out = folder_path / "classes.tif"
        with rasterio.open(raster) as src:
            print(
                f"raster {src.height} x {src.width} px ({src.height * src.width / 1e6:.2f} Mpx), "
                f"model {args.model}, batch {args.batch}, {cores} cores, {args.rounds} round(s) "
                "(medians)"
            )
        runs: dict[str, list[dict]] = {name: [] for name in configs}
        for _ in range(args.rounds):
            for name, (options, sharded) in configs.items():
                runs[name].append(run(raster, out, args.model, options, **sharded))
    figures = {name: median(values) for name, values in runs.items()}

    single, one = figures["single"], figures["one"]
    line(f"single process, {threads} thread(s)", single)
    line(
        f"sharded, 1 worker x {threads} thread(s)",
        one,
        f"  ratio {one['mpx_s'] / single['mpx_s']:.3f} "
        f"(steady {one['steady_mpx_s'] / single['steady_mpx_s']:.3f})",
    )
    if cores > 1:
        base, many = figures.get("base", single), figures["many"]
        speedup = many["mpx_s"] / base["mpx_s"]
        steady = many["steady_mpx_s"] / base["steady_mpx_s"]
        if threads != 1:
            line("single process, 1 thread", base)
        line(
            f"sharded, {cores} workers x 1 thread",
            many,
            f"  speedup {speedup:.2f}, efficiency/core {speedup / cores:.2f} (steady "
            f"{steady:.2f}, {steady / cores:.2f})",
        )
    if gpus:
        reference = figures["gpu"]
        line("single process, 1 GPU", reference)
        for count in range(1, gpus + 1):
            current = figures[f"gpu{count}"]
            line(
                f"sharded, {count} GPU worker(s)",
                current,
                f"  per GPU {current['mpx_s'] / count:.4f} Mpx/s, vs single "
                f"{current['mpx_s'] / reference['mpx_s']:.2f}",
            )
    else:
        print("no CUDA GPU: GPU scaling not measured")


if __name__ == "__main__":
    main()
