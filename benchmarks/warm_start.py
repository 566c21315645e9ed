"""Warm worker: how soon a run starts after the click, one-shot worker against warm worker.

"Starts" is the moment the engine begins its first tile (its `segmenting N tiles` progress
event), timed from the call the dock makes (crossearth_qgis.worker.client.run_engine), so it holds
process start, imports, reading the model package and loading the model: everything the
analyst waits for before the progress bar moves. Each side segments the bundled sample with
each bundled model, in the engine environments given, the same number of times; the warm side's
first run starts its worker and is reported apart from the runs after it.

Usage: QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/warm_start.py
           [--engine build/engine-light/bin/python] [--engine .venv/bin/python] [--runs 4]
Writes build/bench/warm_start.json and prints a table (medians, seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLE = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"
MODELS = ("crossearth-landsat-lc-fast", "crossearth-landsat-lc")


def time_to_first_tile(args: list[str], warm_idle_s: float) -> float:
    from crossearth_qgis.worker.client import run_engine

    started = time.perf_counter()
    first: list[float] = []

    def progress(fraction: float, message: str) -> None:
        if not first and message.startswith("segmenting "):
            first.append(time.perf_counter() - started)

    run_engine(args, on_progress=progress, warm_idle_s=warm_idle_s)
    return first[0]


def measure(engine: Path, model: str, runs: int, folder: Path) -> dict[str, float]:
    from crossearth_qgis.worker import warm_worker

    os.environ["CROSSEARTH_PYTHON"] = str(engine)

    def args(tag: str) -> list[str]:
        output = folder / f"{tag}.tif"
        return [
            "segment",
            str(SAMPLE),
            str(output),
            "--model",
            model,
            "--overwrite",
            "--progress",
            "json",
        ]

    one_shot, warm = [], []
    for run in range(runs):  # interleaved, so both sides see the same machine state
        one_shot.append(time_to_first_tile(args(f"one-shot-{run}"), 0.0))
        warm.append(time_to_first_tile(args(f"warm-{run}"), 600.0))
    warm_worker.stop_all()
    return {
        "one_shot_s": statistics.median(one_shot),
        "warm_first_s": warm[0],
        "warm_s": statistics.median(warm[1:]),
        "runs": runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", action="append", type=Path)
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    engines = args.engine or [REPO / "build/engine-light/bin/python", REPO / ".venv/bin/python"]
    from qgis.core import QgsApplication

    from crossearth_qgis.worker.engine_errors import EngineError

    app = QgsApplication([], False)
    app.initQgis()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for engine in engines:
            for model in MODELS:
                try:
                    figures = measure(engine.absolute(), model, max(2, args.runs), Path(folder))
                except EngineError as exc:  # e.g. a model without an ONNX graph in Light
                    results.append({"engine": str(engine), "model": model, "skipped": str(exc)})
                    print(f"{engine}  {model:28s} skipped: {exc}", flush=True)
                    continue
                results.append({"engine": str(engine), "model": model, **figures})
                print(
                    f"{engine}  {model:28s} one-shot {figures['one_shot_s']:.3f} s  "
                    f"warm (first) {figures['warm_first_s']:.3f} s  warm {figures['warm_s']:.3f} s"
                    f"  ratio {figures['one_shot_s'] / figures['warm_s']:.0f}x",
                    flush=True,
                )
    out = REPO / "build" / "bench" / "warm_start.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
