"""Fixtures of the plugin tests: real rasters (crops of the Landsat sample), real tiny model
packages, the real engine worker, and QGIS settings kept out of the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from osgeo import gdal
from qgis.core import Qgis, QgsProject, QgsRasterLayer, QgsSettings
from qgis.PyQt.QtCore import QCoreApplication, QEventLoop, QSettings

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LANDSAT = REPO / "resources" / "samples" / "landsat7_olinda_6band.tif"
TINY_MMSEG_CONFIG = REPO / "tests" / "fixtures" / "tiny_mmseg_config.py"
# The tests run in the engine's venv, so its interpreter is the engine interpreter. The
# QGIS-version matrix (scripts/matrix.sh) runs them in another QGIS with a Light engine made
# the plugin's way (CROSSEARTH_TEST_ENGINE) and fixtures a Full engine made beforehand
# (CROSSEARTH_TEST_FIXTURES); tests marked full_engine then skip, saying why.
ENGINE_PYTHON = os.environ.get("CROSSEARTH_TEST_ENGINE") or sys.executable
PREMADE_FIXTURES = os.environ.get("CROSSEARTH_TEST_FIXTURES")
MODEL_NAME = "tiny-landcover"
CLASSES = [
    ("water", (30, 100, 220)),
    ("built-up", (220, 60, 50)),
    ("vegetation", (60, 170, 70)),
]

gdal.UseExceptions()


def _engine_has_torch() -> bool:
    found = subprocess.run(
        [
            ENGINE_PYTHON,
            "-c",
            "import importlib.util as u; print(u.find_spec('torch') is not None)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return found.stdout.strip() == "True"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of what only a Full engine does (fine-tuning, converting, downloading) skip, with
    the reason, when the tests' engine is a Light one (the QGIS-version matrix)."""
    marked = [item for item in items if item.get_closest_marker("full_engine")]
    if marked and not _engine_has_torch():
        skip = pytest.mark.skip(reason=f"needs a Full engine; {ENGINE_PYTHON} is a Light one")
        for item in marked:
            item.add_marker(skip)


def wait_for(condition: Callable[[], Any], timeout: float = 180.0, what: str = "") -> None:
    """Runs the Qt event loop until condition() is true (QgsTask results arrive through it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        QCoreApplication.processEvents(QEventLoop.AllEvents, 50)
        time.sleep(0.01)


def qgis_process_env(config_dir: Path, plugin_path: Path | None = REPO) -> dict[str, str]:
    env = dict(os.environ)
    env["QGIS_CUSTOM_CONFIG_PATH"] = str(config_dir)
    env["QT_QPA_PLATFORM"] = "offscreen"
    if plugin_path is None:
        env.pop("QGIS_PLUGINPATH", None)
    else:
        env["QGIS_PLUGINPATH"] = str(plugin_path)
    return env


def qgis_process(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    """Runs Debian's qgis_process binary (the /usr/bin/qgis_process wrapper passes an option
    this version rejects) and returns stdout; fails the test with its output otherwise."""
    done = subprocess.run(
        ["/usr/bin/qgis_process.bin", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"qgis_process {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def fresh_qgis_config(target: Path) -> Path:
    """A temporary copy of the repository's QGIS profile folder (never modified by tests)."""
    shutil.copytree(REPO / "tests" / "fixtures" / "qgis-settings", target)
    return target


def _restore_environ(saved: dict[str, str | None]) -> None:
    """Puts back environment variables as they were (None: the variable was not set)."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session", autouse=True)
def isolated_qgis_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """pytest-qgis points QSettings at REPO/.qgis-settings (a name it fixes; ignored by git);
    the plugin saves its choices there, so these tests write to a temporary copy of
    tests/fixtures/qgis-settings instead."""
    config = fresh_qgis_config(tmp_path_factory.mktemp("qgis") / "config")
    QSettings.setPath(
        QSettings.IniFormat, QSettings.UserScope, str(config / "profiles" / "default")
    )
    # Child processes (qgis_process, the screenshot program) read these variables.
    saved = {k: os.environ.get(k) for k in ("QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH")}
    os.environ["QGIS_CUSTOM_CONFIG_PATH"] = os.environ["QGIS_OPTIONS_PATH"] = str(config)
    yield config
    _restore_environ(saved)


@pytest.fixture(autouse=True)
def own_plugin_settings(isolated_qgis_settings: Path) -> Iterator[None]:
    """Every test starts from the plugin's settings as the session found them: choices one
    test saves (the dock's model and device, the options page's interpreter) must not steer
    the next one, whatever order the tests run in."""
    from crossearth_qgis import settings

    group = settings.PREFIX.rstrip("/")
    stored = QgsSettings()
    stored.beginGroup(group)
    before = {key: stored.value(key) for key in stored.allKeys()}
    stored.endGroup()
    yield
    stored.remove(group)
    for key, value in before.items():
        stored.setValue(settings.PREFIX + key, value)
    stored.sync()


@pytest.fixture(autouse=True)
def no_warm_worker_after_the_test() -> Iterator[None]:
    """The dock and the algorithms keep a warm engine worker between runs; each test ends it,
    so that no test talks to a worker started with another test's environment or models."""
    yield
    from crossearth_qgis.worker import warm_worker

    warm_worker.stop_all()


@pytest.fixture(scope="session", autouse=True)
def engine_fixtures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Real tiny model packages (made by make_fixtures.py in a child process) in a user models
    folder the engine workers see through CROSSEARTH_MODELS_DIR."""
    out = tmp_path_factory.mktemp("engine")
    if PREMADE_FIXTURES:
        shutil.copytree(PREMADE_FIXTURES, out, dirs_exist_ok=True)
    else:
        subprocess.run(
            [ENGINE_PYTHON, str(HERE / "make_fixtures.py"), str(out)],
            check=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=300,
        )
    saved = {k: os.environ.get(k) for k in ("CROSSEARTH_MODELS_DIR", "CROSSEARTH_PYTHON")}
    os.environ["CROSSEARTH_MODELS_DIR"] = str(out / "models")
    os.environ["CROSSEARTH_PYTHON"] = ENGINE_PYTHON
    yield out
    _restore_environ(saved)


@pytest.fixture(scope="session")
def model_path(engine_fixtures: Path) -> Path:
    return engine_fixtures / "models" / MODEL_NAME


def _crop(
    target: Path,
    window: tuple[int, int, int, int],
    bands: list[int],
    names: list[str] | None = None,
    nodata_block: int = 0,
) -> Path:
    """A crop of the Landsat sample (x, y, width, height) with the given bands, as GeoTIFF."""
    gdal.Translate(str(target), str(LANDSAT), srcWin=list(window), bandList=bands, format="GTiff")
    dataset = gdal.Open(str(target), gdal.GA_Update)
    for index, name in enumerate(names or []):
        dataset.GetRasterBand(index + 1).SetDescription(name)
    if nodata_block:
        for index in range(dataset.RasterCount):
            band = dataset.GetRasterBand(index + 1)
            band.SetNoDataValue(0)
            block = band.ReadAsArray()
            block[:nodata_block, :nodata_block] = 0
            band.WriteArray(block)
    dataset = None
    return target


@pytest.fixture(scope="session")
def rasters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("rasters")
    rgb = ["red", "green", "blue"]
    return {
        # 200 x 170 px of real Landsat 7 at 28.5 m, UTM 25S: 4 tiles of 128 px.
        "rgb": _crop(folder / "olinda_rgb.tif", (60, 80, 200, 170), [3, 2, 1], rgb),
        "rgb_nodata": _crop(
            folder / "olinda_nodata.tif", (60, 80, 200, 170), [3, 2, 1], rgb, nodata_block=48
        ),
        "two_band": _crop(folder / "olinda_2band.tif", (60, 80, 200, 170), [3, 2], rgb[:2]),
        # All six bands, no band names: the bands must be chosen (BANDS / Bands).
        "six_band": _crop(folder / "olinda_6band.tif", (100, 120, 150, 140), [1, 2, 3, 4, 5, 6]),
    }


def engine_json(command: str) -> dict[str, Any]:
    """What `crossearth COMMAND --json` prints, run with the engine's interpreter."""
    done = subprocess.run(
        [ENGINE_PYTHON, "-m", "engine.cli", command, "--json"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def engine_check() -> dict[str, Any]:
    """The engine's own report (torch, CUDA, devices), asked once."""
    return engine_json("check")


@pytest.fixture(scope="session")
def catalog_json(engine_fixtures: Path) -> dict[str, Any]:
    return engine_json("models")


@pytest.fixture(scope="module")
def provider():
    """The plugin's Processing provider, registered for one test module. Without pytest-qgis's
    qgis_processing: Processing.initialize() would create folders in the .qgis-settings profile
    pytest-qgis starts QGIS with. processing.run needs only the registry."""
    from qgis.core import QgsApplication

    from crossearth_qgis.processing.provider import CrossEarthProvider

    registry = QgsApplication.processingRegistry()
    added = CrossEarthProvider()
    assert registry.addProvider(added)
    yield added
    registry.removeProvider(added)


@pytest.fixture
def project(qgis_new_project: QgsProject) -> QgsProject:
    return qgis_new_project


@pytest.fixture
def add_raster(project: QgsProject) -> Callable[[Path], QgsRasterLayer]:
    def add(path: Path, name: str | None = None) -> QgsRasterLayer:
        layer = QgsRasterLayer(str(path), name or path.stem, "gdal")
        assert layer.isValid(), path
        project.addMapLayer(layer)
        return layer

    return add


@pytest.fixture
def dock(qgis_iface, project, catalog_json, engine_check):
    """The real dock, with the model list and devices the engine reported (asked once per
    session; test_dock_asks_the_engine_for_models_and_devices covers the asking itself)."""
    from crossearth_qgis.dock.panel import CrossEarthDock
    from crossearth_qgis.worker.models import catalog_from_json

    widget = CrossEarthDock(qgis_iface, qgis_iface.mainWindow())
    widget.models.set_catalog(catalog_from_json(catalog_json), select=MODEL_NAME)
    widget.models._devices_checked(engine_check)
    yield widget
    widget.shutdown()
    widget.deleteLater()


def bar_messages(iface, level: Qgis.MessageLevel) -> list[str]:
    """The texts pushed to the message bar at `level` (the test bar records "title:text")."""
    prefix = "CrossEarth:"
    found = iface.messageBar().get_messages(level)
    assert all(m.startswith(prefix) for m in found), found
    return [m[len(prefix) :] for m in found]


def assert_plain(message: str) -> None:
    """A message for the analyst: no traceback, no command-line flags."""
    assert "Traceback" not in message
    assert " --" not in message, message


@pytest.fixture
def no_engine_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither CROSSEARTH_PYTHON nor a saved choice: the automatic order applies (the plugin
    settings come back after the test, see own_plugin_settings)."""
    from crossearth_qgis import settings

    monkeypatch.delenv("CROSSEARTH_PYTHON", raising=False)
    settings.remove(settings.PYTHON)
