"""docs/plugin_screenshot.png: QGIS with the dock and a segmented layer, drawn under Xvfb."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from qgis.PyQt.QtGui import QImage

from .conftest import HERE, REPO, fresh_qgis_config

SCREENSHOT = REPO / "docs" / "plugin_screenshot.png"


def test_screenshot_of_the_dock_and_a_segmented_layer(tmp_path):
    assert shutil.which("xvfb-run"), "xvfb-run is missing (Debian package xvfb, see setup.sh)"
    env = dict(os.environ)
    env["QT_QPA_PLATFORM"] = "xcb"  # a real X server (Xvfb), not Qt's offscreen platform
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(fresh_qgis_config(tmp_path / "config"))
    done = subprocess.run(
        [
            "xvfb-run",
            "--auto-servernum",
            "--server-args=-screen 0 1600x1000x24",
            sys.executable,  # QGIS's Python: the app is a QGIS window (the engine is apart)
            str(HERE / "screenshot_app.py"),
            str(SCREENSHOT),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["layer"] == f"landsat7_olinda – {summary['model']}"
    assert summary["legend"] == summary["classes"]
    assert summary["status"].startswith("Segmented 'landsat7_olinda'")

    image = QImage(str(SCREENSHOT))
    assert (image.width(), image.height()) == tuple(summary["size"]) == (1400, 940)
    # The map shows the class colours: count them on a grid of pixels over the canvas.
    counts = {tuple(c): 0 for c in summary["colors"]}
    for x in range(300, 1000, 4):
        for y in range(120, 800, 4):
            rgb = image.pixelColor(x, y).getRgb()[:3]
            if rgb in counts:
                counts[rgb] += 1
    assert sum(1 for n in counts.values() if n > 200) >= 2, counts
