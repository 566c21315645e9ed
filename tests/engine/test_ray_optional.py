"""Ray is an optional extra (`pip install .[scale]`): the engine imports it only for
--workers/--cluster, and `crossearth check --json` says whether it is installed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

from osgeo import gdal

REPO = Path(__file__).resolve().parents[2]
RALEIGH = REPO / "resources" / "samples" / "raleigh_landsat7_sample.tif"
BUNDLED = REPO / "resources" / "models" / "crossearth-landsat-lc"


def test_segment_and_batch_without_workers_never_import_ray(tmp_path):
    small = tmp_path / "small.tif"
    gdal.Translate(str(small), str(RALEIGH), srcWin=[0, 0, 48, 40])
    common = ["--model", str(BUNDLED), "--device", "cpu", "--progress", "none"]
    script = textwrap.dedent(
        f"""
        import json, sys
        from engine.cli import main
        codes = [
            main(["segment", {str(small)!r}, {str(tmp_path / "one.tif")!r}, *{common!r}]),
            main(["segment-batch", {str(small)!r}, "--output-dir", {str(tmp_path / "b")!r},
                  *{common!r}]),
            main(["check", "--json"]),
        ]
        print(json.dumps({{"codes": codes, "ray imported": "ray" in sys.modules}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    outcome = json.loads(lines[-1])
    assert outcome == {"codes": [0, 0, 0], "ray imported": False}
    check = json.loads(lines[-2])
    assert check["ray"] == version("ray") and check["cpu_count"] >= 1
    assert (tmp_path / "one.tif").exists() and (tmp_path / "b" / "small_classes.tif").exists()
