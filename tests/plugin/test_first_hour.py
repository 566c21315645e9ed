"""The first hour in the real QGIS application under Xvfb (scripts/first_hour.sh): the plugin
zip into a fresh profile, a Light engine set up from the Options page with a real click, a
first styled result from the dock, the model suggestion and the greyed downloads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from qgis.PyQt.QtGui import QImage

from .conftest import REPO

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("CROSSEARTH_TEST_ENGINE")),
    reason="the QGIS-version matrix checks qgis_process; the real window runs on the host",
)


def test_from_the_plugin_zip_to_a_first_styled_result_in_a_real_window(tmp_path):
    assert shutil.which("qgis") and shutil.which("xvfb-run"), "setup.sh installs qgis and xvfb"
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "first_hour.sh"), str(tmp_path)],
        env={**os.environ, "FIRST_HOUR_OFFLINE": "1"},  # the Light wheels `make setup` keeps
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads((tmp_path / "first_hour.json").read_text())
    assert report.get("ok"), report.get("error") or done.stdout + done.stderr
    steps = ["QGIS up", "plugin installed", "engine set up", "first styled result"]
    assert [report[s] for s in steps] == sorted(report[s] for s in steps)
    assert report["fit text"].startswith(
        "'orthophoto rgb' does not fit the model 'crossearth-landsat-lc-fast': it has 3 band(s)"
    )
    for name in ("setup_in_progress", "finished_run", "model_suggestion", "greyed_download"):
        image = QImage(str(tmp_path / f"{name}.png"))
        assert image.width() >= 800 and image.height() >= 600, name
