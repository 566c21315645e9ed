"""Speed of the bundled models, side by side in one run.

1. The machine: fp32 matmul GFLOP/s (2048 x 2048, best of several), the ceiling a CPU model
   can approach.
2. Each runtime's forward: FLOPs of one batch of tiles (counted by torch's FlopCounterMode:
   matmuls and convolutions), the time of that batch on PyTorch (eager), ONNX Runtime and
   OpenVINO, as GFLOP/s and % of the matmul speed.
3. End to end: output Mpx/s of `engine.segment` on a 1024 x 1024 Landsat raster (the
   training scene mirrored to that size) for the old and the new bundled model, with each
   runtime, and the old model as it ran before the model-code changes (query masks resampled
   to the upsampled input and pooled back). Ratios are against the old model before.

Usage: .venv/bin/python benchmarks/speed.py [--threads N] [--repeat N] [--skip-before]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.models.export import export_onnx, reference_input  # noqa: E402
from engine.models.loading import load_package_model  # noqa: E402
from engine.models.packages import find_package, open_package  # noqa: E402
from engine.run.pipeline import SegmentOptions, segment  # noqa: E402
from engine.run.runtimes import LoadedModel, OnnxModel, installed  # noqa: E402

OLD = REPO / "resources" / "models" / "crossearth-landsat-lc"
NEW = REPO / "resources" / "models" / "crossearth-landsat-lc-fast"
SCENE = REPO / "resources" / "data" / "raleigh" / "landsat7_2000.tif"
SIDE = 1024


def best_time(function: Callable[[], object], repeat: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(repeat: int) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    seconds = best_time(lambda: a @ b, repeat)
    return 2 * 2048**3 / seconds / 1e9


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(x)
    return int(counter.get_total_flops())


class PooledScores(torch.nn.Module):
    """The model as it ran before: scores on the upsampled input, averaged back."""

    def __init__(self, scaled: torch.nn.Module) -> None:
        super().__init__()
        self.network, self.scale = scaled.network, scaled.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return F.avg_pool2d(self.network(up), self.scale)


def with_graph(folder: Path, scratch: Path) -> Path:
    """The package, with an ONNX graph (exported into a copy when it has none)."""
    package = find_package(str(folder))
    if package.card.onnx is not None:
        return folder
    copy = scratch / folder.name
    shutil.copytree(folder, copy)
    export_onnx(str(copy))
    return copy


def mirrored_scene(target: Path) -> None:
    """The training scene mirrored to SIDE x SIDE: real Landsat values, no blank areas."""
    with rasterio.open(SCENE) as source:
        data = source.read()
        profile = source.profile
    reps = (1, -(-SIDE // data.shape[1]) + 1, -(-SIDE // data.shape[2]) + 1)
    tiled = np.tile(np.concatenate([data, data[:, ::-1]], axis=1), (1, 1, 2))
    tiled = np.tile(tiled, reps)[:, :SIDE, :SIDE]
    profile.update(height=SIDE, width=SIDE, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(target, "w", **profile) as out:
        out.write(np.ascontiguousarray(tiled))


def runtime_rows(
    name: str, folder: Path, threads: int, repeat: int, matmul: float
) -> list[tuple[str, str, float, float]]:
    package = find_package(str(folder))
    x = reference_input(package.card, batch=4)
    model = load_package_model(package).float()
    flops = forward_flops(model, torch.from_numpy(x))
    rows = []
    with torch.inference_mode():
        seconds = best_time(lambda: model(torch.from_numpy(x)), repeat)
    rows.append((name, "torch", flops / seconds / 1e9, flops))
    for runtime in ("onnxruntime", "openvino"):
        if installed(runtime) and package.card.onnx is not None:
            graph = OnnxModel(package, runtime, threads)
            seconds = best_time(lambda graph=graph: graph(x), repeat)
            rows.append((name, runtime, flops / seconds / 1e9, flops))
    for row in rows:
        print(
            f"  {row[0]:<28} {row[1]:<12} {row[3] / 1e9:7.1f} GFLOP/batch of 4  "
            f"{row[2]:6.1f} GFLOP/s  {100 * row[2] / matmul:5.1f} %"
        )
    return rows


def end_to_end(
    raster: Path, scratch: Path, label: str, model: object, runtime: str, threads: int
) -> float:
    output = scratch / f"{label.replace(' ', '_')}.tif"
    options = SegmentOptions(threads=threads, runtime=runtime, overwrite=True)
    result = segment(raster, output, model, options)  # type: ignore[arg-type]
    rate = SIDE * SIDE / result.seconds / 1e6
    print(f"  {label:<46} {result.seconds:7.1f} s  {rate:7.4f} Mpx/s  ({result.tiles} tiles)")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-before", action="store_true", help="skip the slowest row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    matmul = matmul_gflops(args.repeat * 3)
    print(f"fp32 matmul 2048^3: {matmul:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory(prefix="crossearth-speed-") as folder:
        scratch = Path(folder)
        old, new = with_graph(OLD, scratch), with_graph(NEW, scratch)
        print("forward of a batch of 4 tiles (counted FLOPs / time; % of matmul):")
        for name, path in (("old " + OLD.name, old), ("new " + NEW.name, new)):
            runtime_rows(name, path, args.threads, args.repeat, matmul)
        raster = scratch / "landsat_1024.tif"
        mirrored_scene(raster)
        print(f"end to end, {SIDE} x {SIDE} px:")
        rates = {}
        if not args.skip_before:
            package = open_package(old)
            scaled = load_package_model(package)
            before = LoadedModel(package.card, PooledScores(scaled).eval())
            rates["before"] = end_to_end(
                raster, scratch, "old model, before (torch)", before, "torch", args.threads
            )
        rates["old"] = end_to_end(raster, scratch, "old model (torch)", old, "torch", args.threads)
        for runtime in ("torch", "onnxruntime", "openvino"):
            if runtime == "torch" or installed(runtime):
                rates[runtime] = end_to_end(
                    raster, scratch, f"new model ({runtime})", new, runtime, args.threads
                )
        baseline = rates.get("before", rates["old"])
        print("ratios against the old model before:")
        for key, rate in rates.items():
            print(f"  {key:<12} {rate / baseline:6.2f}x")


if __name__ == "__main__":
    main()
