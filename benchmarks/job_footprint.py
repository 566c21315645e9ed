"""What one ONNX job costs as a whole process: wall time and peak RSS of `crossearth segment`
with the bundled fast model, in a Full environment (PyTorch installed, `--runtime onnxruntime`)
and in a Light one (no PyTorch), side by side, for the bundled sample and a 4048 x 4048 raster.

A job on an ONNX runtime should cost the same in both environments: it imports neither torch
nor timm. The Full environment's `--runtime torch` run of the same job is the baseline that
shows what PyTorch costs when it is used. Each run is its own child process, measured by a
wrapper that only waits for it (RUSAGE_CHILDREN is then that one process's peak).

Usage: .venv/bin/python benchmarks/job_footprint.py [--full .venv/bin/python]
           [--light build/engine-light/bin/python] [--runs 3]
Writes build/bench/job_footprint.json and prints a table (medians).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"
MODEL = REPO / "resources" / "models" / "crossearth-landsat-lc-fast"
LARGE_SIDE = 4048

# Runs the command, then prints its wall time and peak RSS (kB) as JSON.
MEASURE = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": code, "seconds": seconds, "peak_kb": peak}))
"""


def large_raster(folder: Path) -> Path:
    """The sample repeated (mirrored, so tiles meet without seams) to LARGE_SIDE px a side."""
    with rasterio.open(SAMPLE) as src:
        data, profile = src.read(), src.profile
    height, width = data.shape[1:]
    rows = -(-LARGE_SIDE // height)
    cols = -(-LARGE_SIDE // width)
    tiles = [
        [data[:, :: 1 - 2 * (r % 2), :: 1 - 2 * (c % 2)] for c in range(cols)] for r in range(rows)
    ]
    mosaic = np.block(tiles)[:, :LARGE_SIDE, :LARGE_SIDE]
    profile.update(height=LARGE_SIDE, width=LARGE_SIDE, tiled=True, blockxsize=256, blockysize=256)
    path = folder / "large.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mosaic)
    return path


def measure(python: str, raster: Path, output: Path, runtime: str) -> dict:
    output.unlink(missing_ok=True)
    Path(f"{output}.aux.xml").unlink(missing_ok=True)
    command = [python, "-m", "engine.cli", "segment", str(raster), str(output)]
    command += ["--model", str(MODEL), "--runtime", runtime, "--device", "cpu"]
    command += ["--progress", "none"]
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *command],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    result = json.loads(done.stdout)
    if result["code"] != 0:
        raise SystemExit(f"{' '.join(command)} exited with {result['code']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", default=str(REPO / ".venv" / "bin" / "python"))
    parser.add_argument("--light", default=str(REPO / "build" / "engine-light" / "bin" / "python"))
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sides = [
        ("Full, --runtime onnxruntime", args.full, "onnxruntime"),
        ("Light, --runtime onnxruntime", args.light, "onnxruntime"),
        ("Full, --runtime torch (baseline)", args.full, "torch"),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for raster in (SAMPLE, large_raster(folder)):
            with rasterio.open(raster) as src:
                size = f"{src.width} x {src.height}"
            for name, python, runtime in sides:
                runs = [
                    measure(python, raster, folder / "out.tif", runtime) for _ in range(args.runs)
                ]
                rows.append(
                    {
                        "raster": size,
                        "environment": name,
                        "seconds": statistics.median(r["seconds"] for r in runs),
                        "peak_rss_mb": statistics.median(r["peak_kb"] for r in runs) / 1024,
                    }
                )
    out = REPO / "build" / "bench" / "job_footprint.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(f"{'raster':>12}  {'environment':34} {'seconds':>8} {'peak RSS MB':>12}")
    for row in rows:
        print(
            f"{row['raster']:>12}  {row['environment']:34} {row['seconds']:8.2f} "
            f"{row['peak_rss_mb']:12.0f}"
        )


if __name__ == "__main__":
    main()
