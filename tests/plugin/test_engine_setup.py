"""Making the engine environment: the base interpreter, a self-contained venv of wheels from a
package index on 127.0.0.1, the record that keeps a half-built one out of use, and pip's
failures told by their real cause."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from crossearth_qgis import settings
from crossearth_qgis.environment import base_python, engine_setup
from crossearth_qgis.environment.engine_env import (
    EngineEnvironmentError,
    auto_detect,
    resolve_interpreter,
)
from crossearth_qgis.environment.engine_setup import (
    EngineSetupError,
    read_record,
    setup_environment,
    venv_python,
)
from tests.package_index import serve_index

SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.fixture
def base() -> base_python.BasePython:
    return base_python.check(SYSTEM_PYTHON, "the system's Python")


@pytest.fixture
def pip_offline_settings(monkeypatch):
    """pip's own settings for the tests: no retries (a dead index fails at once), no user
    configuration, and the machine's cap files out of the way."""
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "10")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)


def run_setup(folder: Path, kind: str, base, requirements: Path | None = None) -> Path:
    lines: list[str] = []
    return setup_environment(
        folder, kind, base, lambda f, m: None, lines.append, requirements=requirements
    )


def stub_python(path: Path, answer: dict) -> Path:
    """An executable that answers the interpreter probe as a Python of another version would
    (none of those is installed on the test machine)."""
    path.write_text(f"#!/bin/sh\necho '{json.dumps(answer)}'\n")
    path.chmod(0o755)
    return path


# --- the base interpreter --------------------------------------------------------------------


def test_qgis_own_python_comes_first_on_each_platform():
    linux = base_python.qgis_python_candidates("/usr/bin/qgis", "/usr", (3, 13), "linux")
    assert [str(p) for p, _ in linux] == ["/usr/bin/python3.13", "/usr/bin/python3"]
    windows = base_python.qgis_python_candidates(
        r"C:\OSGeo4W\bin\qgis-bin.exe", r"C:\OSGeo4W\apps\Python312", (3, 12), "win32"
    )
    assert str(windows[0][0]).endswith("Python312/python.exe") or str(windows[0][0]).endswith(
        "Python312\\python.exe"
    )
    mac = base_python.qgis_python_candidates(
        "/Applications/QGIS.app/Contents/MacOS/QGIS",
        "/Applications/QGIS.app/Contents/Frameworks/Python.framework/Versions/3.12",
        (3, 12),
        "darwin",
    )
    assert str(mac[0][0]).endswith("Versions/3.12/bin/python3.12")


def test_an_embedded_sys_executable_that_is_not_this_process_is_skipped(tmp_path, monkeypatch):
    """Embedded in QGIS on Linux, sys.executable is the first `python3` on PATH (seen: a pyenv
    shim, 3.11.7, beside QGIS's 3.11.2): only the Python that runs this process counts."""
    import sys

    shim = tmp_path / "shims" / "python3"
    shim.parent.mkdir()
    shim.write_text('#!/bin/sh\nexec python3 "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(shim))
    monkeypatch.setattr(sys, "prefix", sys.base_prefix)  # as embedded: no venv
    found = [p for p, _ in base_python.qgis_python_candidates()]
    assert shim not in found and found[0] == Path(sys.base_prefix) / "bin" / (
        f"python{sys.version_info[0]}.{sys.version_info[1]}"
    )
    monkeypatch.setattr(sys, "executable", os.path.realpath("/proc/self/exe"))
    assert base_python.qgis_python_candidates()[0][0] == Path(sys.executable)


def test_the_first_python_on_path_is_never_taken(tmp_path, monkeypatch):
    other = tmp_path / "bin"
    other.mkdir()
    (other / "python3").symlink_to(sys.executable)  # a pyenv/conda-like Python first on PATH
    monkeypatch.setenv("PATH", f"{other}:{os.environ['PATH']}")
    monkeypatch.setattr(sys, "executable", "/usr/bin/qgis")  # as inside QGIS
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    chosen = base_python.choose()
    assert chosen.path.parent == Path("/usr/bin") and chosen.source == "QGIS's own Python"
    assert chosen.version[:2] == sys.version_info[:2] or chosen.version >= (3, 10, 0)


def test_an_interpreter_out_of_range_or_without_venv_is_refused_in_one_line(tmp_path):
    old = stub_python(
        tmp_path / "python3.9",
        {"version": [3, 9, 18], "implementation": "cpython", "pip_wheel": True},
    )
    with pytest.raises(base_python.BasePythonError) as caught:
        base_python.check(old, "chosen")
    assert str(caught.value).startswith(
        f"{old} is Python 3.9.18, but the engine needs Python 3.10 to 3.14; install"
    )
    no_venv = stub_python(
        tmp_path / "python3",
        {
            "version": [3, 12, 3],
            "implementation": "cpython",
            "venv_error": "ModuleNotFoundError: No module named 'ensurepip'",
        },
    )
    with pytest.raises(base_python.BasePythonError) as caught:
        base_python.check(no_venv, "chosen")
    assert "cannot create virtual environments with pip" in str(caught.value)
    assert "sudo apt install python3-venv" in str(caught.value)
    with pytest.raises(base_python.BasePythonError, match="is not an executable file"):
        base_python.check(tmp_path / "nothing", "chosen")


def test_no_usable_python_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/usr/bin/qgis")
    monkeypatch.setattr(sys, "base_prefix", str(tmp_path))
    with pytest.raises(base_python.BasePythonError) as caught:
        base_python.choose()
    message = str(caught.value)
    assert message.startswith("No Python can create the engine environment (QGIS's own Python")
    assert "install Python 3.10 to 3.14 with its venv module" in message
    assert "\n" not in message
    assert "python.org" in base_python.install_hint("win32")
    assert "brew install" in base_python.install_hint("darwin")


# --- a self-contained environment from a local index ----------------------------------------


def test_light_set_up_from_a_local_index_is_self_contained(
    tmp_path, base, light_wheels, pip_offline_settings, monkeypatch
):
    folder = tmp_path / "engine"
    with serve_index(light_wheels) as index:
        monkeypatch.setenv("PIP_INDEX_URL", index.url)
        python = run_setup(folder, "light", base)
    assert python == venv_python(folder) and python.is_file()
    record = read_record(folder)
    assert record is not None and record.ready and record.kind == "light"
    assert record.base == str(SYSTEM_PYTHON) and record.size_bytes > 100e6
    # Light installs Light: the engine's runtimes, no PyTorch asked for or installed.
    asked = index.projects_asked()
    assert {"numpy", "rasterio", "pyogrio", "shapely", "onnxruntime"} <= asked
    assert not asked & {"torch", "torchvision", "timm", "ray", "huggingface-hub"}
    features = record.capabilities["features"]
    assert features["segment"] and features["polygons"]
    assert not features["download"] and not features["train"]
    # Self-contained: the system's packages (osgeo, Debian's numpy and rasterio) are not seen.
    config = (folder / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in config
    seen = subprocess.run(
        [str(python), "-c", "import importlib.util as u, rasterio; "
         "print(u.find_spec('osgeo') is None, rasterio.__file__)"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert seen[0] == "True" and seen[1].startswith(str(folder))


def test_no_network_is_named_and_the_half_built_environment_is_never_used(
    tmp_path, base, light_wheels, pip_offline_settings, monkeypatch, no_engine_configuration
):
    folder = tmp_path / "engine"
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")  # nothing listens
    with pytest.raises(EngineSetupError) as caught:
        run_setup(folder, "light", base)
    message = str(caught.value)
    assert message.startswith("installing the engine requirements failed: pip cannot reach the "
                              "package index (")  # fmt: skip
    assert "check the internet connection or the proxy" in message and "\n" not in message
    record = read_record(folder)
    assert record is not None and record.state == "installing"
    python = venv_python(folder)
    # Neither chosen (by name) nor auto-detected while it is incomplete.
    with pytest.raises(EngineEnvironmentError, match="set-up that did not finish"):
        resolve_interpreter(configured=str(python))
    settings.set_value(settings.VENV_DIR, str(folder))
    assert auto_detect() is None
    # A re-run completes it, in place.
    with serve_index(light_wheels) as index:
        monkeypatch.setenv("PIP_INDEX_URL", index.url)
        assert run_setup(folder, "light", base) == python
    assert read_record(folder).ready
    assert resolve_interpreter(configured=str(python)).python == python
    assert auto_detect().python == python


def test_a_folder_the_plugin_did_not_make_is_refused_and_left_alone(tmp_path, base):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(EngineSetupError, match="already holds files that this plugin did not"):
        run_setup(folder, "light", base)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_too_little_disk_is_refused_before_anything_is_made(tmp_path, base, monkeypatch):
    monkeypatch.setitem(engine_setup.NEEDED_BYTES, "full", 10**18)
    folder = tmp_path / "engine"
    with pytest.raises(EngineSetupError) as caught:
        run_setup(folder, "full", base)
    assert "needs about 1000000000.0 GB of free disk" in str(caught.value)
    assert "free some space or choose a folder on another disk" in str(caught.value)
    assert not folder.exists()


def _sdist_with_c_code(folder: Path) -> Path:
    """A real source distribution whose build compiles C (as numpy's does)."""
    source = folder / "tinyext-1.0"
    source.mkdir(parents=True)
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "tinyext"\nversion = "1.0"\n'
    )
    (source / "setup.py").write_text(
        "from setuptools import Extension, setup\n"
        "setup(ext_modules=[Extension('tinyext', ['tinyext.c'])])\n"
    )
    (source / "tinyext.c").write_text(
        textwrap.dedent(
            """
            #include <Python.h>
            static struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "tinyext", NULL, -1, NULL};
            PyMODINIT_FUNC PyInit_tinyext(void) { return PyModule_Create(&m); }
            """
        )
    )
    archive = folder / "tinyext-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    return archive


def test_a_package_without_a_wheel_is_named_not_the_network(
    tmp_path, base, light_wheels, pip_offline_settings, monkeypatch
):
    """pip falls back to building from source and fails for want of a compiler: the message
    says that, where reading pip's ERROR lines alone blamed the internet connection."""
    packages = tmp_path / "index"
    packages.mkdir()
    _sdist_with_c_code(packages)
    for wheel in light_wheels.glob("setuptools-*.whl"):  # the isolated build needs it
        (packages / wheel.name).symlink_to(wheel)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("tinyext\n")
    monkeypatch.setenv("CC", "/nonexistent/cc")  # no C compiler on this computer
    with serve_index(packages) as index:
        monkeypatch.setenv("PIP_INDEX_URL", index.url)
        with pytest.raises(EngineSetupError) as caught:
            run_setup(tmp_path / "engine", "light", base, requirements)
    message = str(caught.value)
    version = base.version_text
    assert (
        f"tinyext has no ready-made package (wheel) for Python {version} on this computer, so "
        "pip tried to build it from source and no C compiler is installed"
    ) in message
    assert "internet" not in message and "\n" not in message
