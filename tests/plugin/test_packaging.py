"""`make plugin`: the zip holds real files, installs into a fresh QGIS profile and loads there."""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from osgeo import gdal
from qgis.core import QgsApplication

from .conftest import (
    ENGINE_PYTHON,
    MODEL_NAME,
    REPO,
    fresh_qgis_config,
    qgis_process,
    qgis_process_env,
)

PLUGIN = "crossearth_qgis"


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_plugin.py"), "--dist", str(dist)],
        check=True,
        timeout=120,
    )
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    built = dist / f"{PLUGIN}-{version}.zip"
    assert built.is_file()
    return built


def install_from_zip(archive: Path, profile: Path) -> Path:
    """What Plugins > Install from ZIP does: find <name>/metadata.txt, unzip into the
    profile's python/plugins folder with QGIS's own unzip."""
    share = Path(QgsApplication.pkgDataPath()) / "python"
    if str(share) not in sys.path:
        sys.path.append(str(share))
    from pyplugin_installer.unzip import unzip

    with zipfile.ZipFile(archive) as zf:
        metadata = sorted(n for n in zf.namelist() if n.endswith("metadata.txt"))
    name = os.path.split(metadata[0])[0]
    plugins = profile / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    unzip(str(archive), str(plugins))
    return plugins / name


def test_make_plugin_runs_the_build_script():
    dry_run = subprocess.run(
        ["make", "-n", "plugin"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "scripts/build_plugin.py" in dry_run.stdout


def test_zip_holds_real_files_with_the_engine_runtime(plugin_zip):
    with zipfile.ZipFile(plugin_zip) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        names = set(infos)
        for info in infos.values():
            assert not stat.S_ISLNK(info.external_attr >> 16), f"{info.filename} is a symlink"
        assert all(n.startswith(f"{PLUGIN}/") for n in names)
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        assert archive.read(f"{PLUGIN}/metadata.txt") == (REPO / "metadata.txt").read_bytes()
        for icon in ("crossearth.svg", "crossearth.png"):
            data = archive.read(f"{PLUGIN}/icons/{icon}")
            assert data == (REPO / "resources" / "icons" / icon).read_bytes()
        for module in ("engine/cli.py", "engine/run/pipeline.py", "engine/crossearth/model.py"):
            assert archive.read(f"{PLUGIN}/runtime/{module}") == (REPO / module).read_bytes()
        assert f"{PLUGIN}/runtime/training/__init__.py" in names
        assert f"{PLUGIN}/runtime/resources/models/" in names
        # The default model with its ONNX graph (a light engine runs it); not the baselines.
        bundled = f"{PLUGIN}/runtime/resources/models/"
        default = (REPO / "resources" / "models" / "DEFAULT").read_text().strip()
        assert archive.read(bundled + "DEFAULT").decode().strip() == default
        folders = {n.split("/")[4] for n in names if n.startswith(bundled) and n.count("/") > 4}
        assert folders == {default}
        assert bundled + f"{default}/model.onnx" in names
        assert archive.read(f"{PLUGIN}/LICENSE") == (REPO / "LICENSE").read_bytes()
        model_license = archive.read(f"{PLUGIN}/runtime/resources/LICENSE")
        assert model_license == (REPO / "resources" / "LICENSE").read_bytes()
        modules = ("plugin.py", "dock/panel.py", "worker/client.py", "processing/provider.py")
        for plugin_module in modules:
            assert f"{PLUGIN}/{plugin_module}" in names
        requirements = archive.read(f"{PLUGIN}/runtime/requirements.txt").decode().splitlines()
        light_requirements = (
            archive.read(f"{PLUGIN}/runtime/requirements-light.txt").decode().splitlines()
        )
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    expected = project["dependencies"] + extras["scale"] + extras["onnx"]
    assert [r for r in requirements if r and not r.startswith("#")] == expected
    light = [r for r in light_requirements if r and not r.startswith("#")]
    assert light == extras["light"]


def test_zip_installs_into_a_fresh_profile_and_runs_from_qgis_process(
    plugin_zip, rasters, tmp_path
):
    profile = fresh_qgis_config(tmp_path / "config")
    installed = install_from_zip(plugin_zip, profile)
    assert (installed / "metadata.txt").is_file() and not (installed / "metadata.txt").is_symlink()
    assert (installed / "runtime" / "engine" / "cli.py").is_file()

    # The worker must import the engine from the installed runtime/, not from this checkout:
    # a wrapper interpreter records the PYTHONPATH the plugin gives it.
    seen = tmp_path / "pythonpath.txt"
    wrapper = tmp_path / "engine-python"
    wrapper.write_text(
        f'#!/bin/sh\nprintf "%s" "$PYTHONPATH" > "{seen}"\nexec "{ENGINE_PYTHON}" "$@"\n'
    )
    wrapper.chmod(0o755)
    env = qgis_process_env(profile, plugin_path=None)
    env["CROSSEARTH_PYTHON"] = str(wrapper)
    qgis_process(["plugins", "enable", PLUGIN], env)
    assert "crossearth:segmentraster" in qgis_process(["list"], env)
    output = tmp_path / "installed.tif"
    qgis_process(
        [
            "run",
            "crossearth:segmentraster",
            "--",
            f"INPUT={rasters['rgb']}",
            f"MODEL={MODEL_NAME}",
            f"OUTPUT={output}",
        ],
        env,
    )
    assert seen.read_text() == str(installed / "runtime")
    dataset = gdal.Open(str(output))
    assert (dataset.RasterXSize, dataset.RasterYSize) == (200, 170)
    assert output.with_suffix(".qml").is_file()


def test_installed_copy_loads_its_gui_and_finds_its_runtime(plugin_zip, qgis_iface, tmp_path):
    profile = fresh_qgis_config(tmp_path / "config")
    installed = install_from_zip(plugin_zip, profile)
    # Imported under another name, so it cannot be confused with this checkout's package.
    alias = "crossearth_qgis_installed"
    spec = importlib.util.spec_from_file_location(
        alias, installed / "__init__.py", submodule_search_locations=[str(installed)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[alias] = package
    try:
        spec.loader.exec_module(package)
        plugin = package.classFactory(qgis_iface)
        plugin.initGui()
        registry = QgsApplication.processingRegistry()
        assert registry.algorithmById("crossearth:segmentraster") is not None
        engine_env = sys.modules[f"{alias}.environment.engine_env"]
        assert engine_env.engine_code_dir() == installed / "runtime"
        assert not engine_env.is_development_checkout()
        engine_setup = sys.modules[f"{alias}.environment.engine_setup"]
        assert engine_setup.requirements_file() == installed / "runtime" / "requirements.txt"
        catalog = sys.modules[f"{alias}.worker.models"].list_models()
        assert catalog.bundled_dir == str(installed / "runtime" / "resources" / "models")
        assert MODEL_NAME in [m.name for m in catalog.models]
        plugin.unload()
        assert registry.providerById("crossearth") is None
    finally:
        for name in [n for n in sys.modules if n == alias or n.startswith(f"{alias}.")]:
            del sys.modules[name]
