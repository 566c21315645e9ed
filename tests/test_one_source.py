"""Each fact of the project is stated once; where the QGIS plugin must keep its own copy (it may
not import the engine), a test here holds the copy equal to the source."""

from __future__ import annotations

import ast
import configparser
import importlib.util
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

import engine
from engine import project
from engine.cancel import cancel_check
from engine.errors import CrossEarthError
from engine.option_values import CONFIDENCE_NODATA, WEIGHTS_DTYPES, parse_band_numbers

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _plugin_constant(relative: str, name: str):
    """A module-level constant of a plugin file, read without importing the plugin (QGIS)."""
    tree = ast.parse((REPO / relative).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{relative} has no {name}")


def test_the_version_comes_from_pyproject():
    version = PYPROJECT["project"]["version"]
    plugin = configparser.ConfigParser()
    plugin.read(REPO / "metadata.txt", encoding="utf-8")
    assert plugin["general"]["version"] == version, "metadata.txt's version is not pyproject's"
    assert engine.__version__ == version
    assert metadata.version(project.DISTRIBUTION) == version, "reinstall: scripts/setup.sh"


def test_an_uninstalled_checkout_reads_version_and_commands_from_pyproject(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    monkeypatch.setattr(metadata, "distribution", not_installed)
    monkeypatch.setattr(metadata, "entry_points", lambda group: [])
    assert project.version() == PYPROJECT["project"]["version"]
    declared = PYPROJECT["project"]["entry-points"]["crossearth.commands"]
    found = project.entry_points("crossearth.commands")
    assert {p.name: p.value for p in found} == declared
    assert {"train", "evaluate"} <= set(declared)


def test_the_plugin_zip_carries_the_same_metadata(tmp_path):
    spec = importlib.util.spec_from_file_location("build_plugin", REPO / "scripts/build_plugin.py")
    build_plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_plugin)
    version = PYPROJECT["project"]["version"]
    info = tmp_path / f"crossearth_qgis-{version}.dist-info"
    info.mkdir()
    for name, text in build_plugin.dist_info(version).items():
        (info / name).write_text(text, encoding="utf-8")
    distribution = metadata.PathDistribution(info)
    assert distribution.version == version
    points = distribution.entry_points
    commands = {p.name: p.value for p in points.select(group="crossearth.commands")}
    assert commands == PYPROJECT["project"]["entry-points"]["crossearth.commands"]
    scripts = {p.name: p.value for p in points.select(group="console_scripts")}
    assert scripts == PYPROJECT["project"]["scripts"]


def test_the_plugins_weight_dtypes_are_the_engines():
    assert list(WEIGHTS_DTYPES) == ["float32", "float16", "bfloat16"]
    plugin_dtypes = _plugin_constant("crossearth_qgis/worker/requests.py", "WEIGHTS_DTYPES")
    assert plugin_dtypes == list(WEIGHTS_DTYPES)


def test_confidence_nodata_is_named_once():
    assert CONFIDENCE_NODATA == {"float32": -1.0, "uint8": 255}
    for path in (REPO / "engine").rglob("*.py"):
        if path.name != "option_values.py":
            assert "CONFIDENCE_NODATA =" not in path.read_text(encoding="utf-8"), path


def test_band_lists_parse_one_way():
    assert parse_band_numbers("3,2,1") == [3, 2, 1]
    assert parse_band_numbers(" 4, 3 ,2,") == [4, 3, 2]
    with pytest.raises(CrossEarthError, match=r"'3,x' is not a comma-separated list"):
        parse_band_numbers("3,x")
    with pytest.raises(CrossEarthError, match="at least one band number"):
        parse_band_numbers(",")


def test_one_cancel_adapter():
    import threading

    event = threading.Event()
    check = cancel_check(event)
    assert check() is False
    event.set()
    assert check() is True
    assert cancel_check(None)() is False
    assert cancel_check(lambda: True)() is True


def test_the_plugin_leaves_training_numbers_to_the_recipe():
    from crossearth_qgis.worker.requests import FineTuneRequest

    kept = FineTuneRequest("/d/image.tif", "/d/package").args()
    for option in ("--steps", "--batch", "--lr", "--val-fraction"):
        assert not any(word.startswith(f"{option}=") for word in kept), kept
    chosen = FineTuneRequest("/d/image.tif", "/d/package", steps=5, batch=2, lr=0.001).args()
    assert {"--steps=5", "--batch=2", "--lr=0.001"} <= set(chosen)
