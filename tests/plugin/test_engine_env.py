"""Finding the engine's interpreter, creating an environment, and the options page."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import tomllib

from crossearth_qgis import settings
from crossearth_qgis.environment import capabilities, engine_env
from crossearth_qgis.environment import setup_task as engine_setup_task
from crossearth_qgis.environment.engine_env import (
    EngineEnvironmentError,
    auto_detect,
    engine_code_dir,
    missing_modules,
    resolve_interpreter,
    worker_environment,
)
from crossearth_qgis.environment.engine_setup import read_record, requirements_file, venv_python
from crossearth_qgis.environment.options_page import (
    UPGRADE_TEXT,
    CrossEarthOptionsPage,
    check_summary,
)
from tests.conftest import LIGHT_ENGINE
from tests.package_index import serve_index

from .conftest import ENGINE_PYTHON, REPO, wait_for

VENV_PYTHON = venv_python(REPO / ".venv")


@pytest.fixture
def no_configuration(monkeypatch):
    """Neither CROSSEARTH_PYTHON nor a saved choice: the automatic order applies."""
    monkeypatch.delenv("CROSSEARTH_PYTHON", raising=False)
    saved = settings.get(settings.PYTHON)
    settings.remove(settings.PYTHON)
    yield
    settings.set_value(settings.PYTHON, saved)


def test_the_environment_variable_comes_first(monkeypatch, tmp_path):
    settings.set_value(settings.PYTHON, "/usr/bin/python3")
    try:
        monkeypatch.setenv("CROSSEARTH_PYTHON", ENGINE_PYTHON)
        chosen = resolve_interpreter()
        assert (chosen.python, chosen.source) == (Path(ENGINE_PYTHON), "CROSSEARTH_PYTHON")
        monkeypatch.setenv("CROSSEARTH_PYTHON", str(tmp_path / "missing"))
        with pytest.raises(EngineEnvironmentError, match="CROSSEARTH_PYTHON names .*missing"):
            resolve_interpreter()
    finally:
        settings.remove(settings.PYTHON)


def test_then_the_interpreter_chosen_in_the_options(no_configuration, tmp_path):
    settings.set_value(settings.PYTHON, "/usr/bin/python3")
    chosen = resolve_interpreter()
    assert (chosen.python, chosen.source) == (Path("/usr/bin/python3"), "settings")
    settings.set_value(settings.PYTHON, str(tmp_path / "gone" / "python"))
    with pytest.raises(EngineEnvironmentError, match="does not exist anymore"):
        resolve_interpreter()
    # What the options page passes before saving wins over the saved value.
    assert resolve_interpreter(configured=ENGINE_PYTHON).python == Path(ENGINE_PYTHON)


@pytest.mark.skipif(not VENV_PYTHON.is_file(), reason="no development .venv in this checkout")
def test_then_the_development_checkout_venv(no_configuration):
    chosen = resolve_interpreter()
    assert chosen.python == VENV_PYTHON
    assert chosen.source == "development checkout"
    assert engine_code_dir() == REPO
    env = worker_environment()
    assert env["PYTHONPATH"] == str(REPO)  # the worker imports this checkout's engine
    assert env["PYTHONUNBUFFERED"] == "1"


def test_then_a_completed_set_up_and_a_clear_message_when_there_is_none(
    no_configuration, monkeypatch, tmp_path
):
    monkeypatch.setattr(engine_env, "dev_checkout_python", lambda: None)
    settings.set_value(settings.VENV_DIR, str(tmp_path / "no-venv"))
    with pytest.raises(EngineEnvironmentError) as caught:
        resolve_interpreter()
    assert str(caught.value) == (
        "The CrossEarth engine environment is missing: no engine environment has been set up "
        "yet. To create one, open Settings > Options > CrossEarth and click 'Set up engine "
        "environment' (or choose an existing engine Python there, or set CROSSEARTH_PYTHON)."
    )
    # An engine Python first on PATH is not taken by itself: it may be anything.
    path = tmp_path / "bin"
    path.mkdir()
    (path / "python3").write_text(f'#!/bin/sh\nexec "{ENGINE_PYTHON}" "$@"\n')
    (path / "python3").chmod(0o755)
    monkeypatch.setenv("PATH", str(path))
    assert auto_detect() is None
    # The environment a set-up completed is.
    settings.set_value(settings.VENV_DIR, str(LIGHT_ENGINE))
    found = resolve_interpreter()
    assert (found.python, found.source) == (venv_python(LIGHT_ENGINE), "auto-detected")


def test_module_probe_needs_no_import():
    assert missing_modules(Path(ENGINE_PYTHON)) == []
    with pytest.raises(EngineEnvironmentError):
        missing_modules(Path("/nonexistent/python"))


def test_requirements_are_the_pinned_engine_dependencies():
    lines = [
        line
        for line in requirements_file().read_text().splitlines()
        if line and not line.startswith("#")
    ]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # The dependencies, then the `scale` extra (Ray for sharded runs, Workers) and the `onnx`
    # one (ONNX Runtime runs a package's graph on the CPU).
    extras = project["optional-dependencies"]
    assert lines == project["dependencies"] + extras["scale"] + extras["onnx"]
    assert "torch>=2.5" in lines and "ray>=2.40" in lines
    # No upper bounds: numpy 1 or 2, whatever the Python has wheels for.
    assert not [line for line in lines if "<" in line or "==" in line]


def test_the_light_requirements_have_no_pytorch():
    lines = [
        line
        for line in requirements_file("light").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert lines == project["optional-dependencies"]["light"]
    assert any(line.startswith("onnxruntime") for line in lines)
    assert not any(line.startswith(("torch", "timm", "ray")) for line in lines)


def test_a_light_environment_is_a_usable_engine(light_python, no_configuration):
    """Without PyTorch but with ONNX Runtime the interpreter counts as an engine; its check
    says what it can do."""
    assert missing_modules(light_python) == []
    page = CrossEarthOptionsPage()
    page.python_widget.setFilePath(str(light_python))
    page.check()
    wait_for(lambda: page.check_task is None, 300, "the light engine check")
    assert page.check_report is not None and page.check_report["torch"] is None
    text = page.check_label.text()
    assert text.startswith("Light engine: ONNX Runtime ")
    assert "fine-tuning and conversion need the full engine" in text
    assert "cpu: CPU" in text
    page.deleteLater()


def test_the_set_up_offers_light_and_full_with_their_sizes_and_keeps_the_choice(
    no_configuration,
):
    page = CrossEarthOptionsPage()
    kinds = [page.kind_combo.itemData(i) for i in range(page.kind_combo.count())]
    assert kinds == ["light", "full"]
    assert page.kind_combo.currentData() == "light"  # a new user's quick start
    assert "about 410 MB" in page.kind_combo.itemText(0)
    assert "about 6.6 GB" in page.kind_combo.itemText(1)
    assert "ONNX Runtime" in page.kind_label.text() and "PyTorch" not in page.kind_label.text()
    page.kind_combo.setCurrentIndex(1)
    assert "PyTorch" in page.kind_label.text()
    page.deleteLater()
    again = CrossEarthOptionsPage()
    assert again.kind_combo.currentData() == "full"
    # QGIS's own Python makes it, shown with its version; another one may be chosen.
    assert again.base_label.text().startswith("The environment is made with /usr/bin/python3")
    again.base_widget.setFilePath(str(REPO / "no-such-python"))
    assert "is not an executable file" in again.base_label.text()
    again.deleteLater()


@pytest.fixture
def local_index(light_wheels, monkeypatch):
    """pip installs from the Light wheels served on 127.0.0.1, never from the internet."""
    for name in ("PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    with serve_index(light_wheels) as index:
        monkeypatch.setenv("PIP_INDEX_URL", index.url)
        yield index


def test_choosing_light_and_clicking_set_up_installs_light(tmp_path, no_configuration, local_index):
    """The real button, clicked as a mouse does (clicked(bool) reaches the slot)."""
    page = CrossEarthOptionsPage()
    page.kind_combo.setCurrentIndex(page.kind_combo.findData("light"))
    venv = tmp_path / "engine"
    page.venv_widget.setFilePath(str(venv))
    page.setup_button.click()
    task = page.setup_task
    assert task is not None and task.kind == "light"
    assert task.requirements == requirements_file("light")
    assert not page.setup_button.isEnabled() and page.setup_cancel_button.isEnabled()
    wait_for(lambda: page.setup_task is None, 300, "the Light set-up")
    assert task.error is None, (task.error, task.output[-20:])
    python = venv_python(venv)
    assert page.setup_progress.value() == 100
    assert page.setup_status.text() == f"Ready: the engine runs with {python}."
    assert settings.get(settings.PYTHON) == str(python)
    assert settings.get(settings.ENGINE_KIND) == "light"
    # No PyTorch was asked for: Light installs Light.
    assert "onnxruntime" in local_index.projects_asked()
    assert not local_index.projects_asked() & {"torch", "timm", "torchvision", "ray"}
    assert not list(venv.glob("lib/python*/site-packages/torch"))
    assert list(venv.glob("lib/python*/site-packages/onnxruntime"))
    known = capabilities.known(python)
    assert known is not None and known["features"]["segment"] and not known["features"]["train"]
    # The page offers to grow it into Full, with the size said beforehand.
    assert page.upgrade_button.isVisibleTo(page) and page.upgrade_button.text() == UPGRADE_TEXT
    assert "about 6.6 GB" in page.upgrade_button.toolTip()
    page.deleteLater()


def test_closing_the_page_during_set_up_never_raises_and_selects_the_result(
    tmp_path, no_configuration, local_index
):
    errors: list[BaseException] = []
    previous = sys.excepthook
    sys.excepthook = lambda kind, value, tb: errors.append(value)  # slots that raise land here
    try:
        page = CrossEarthOptionsPage()
        venv = tmp_path / "engine"
        page.venv_widget.setFilePath(str(venv))
        page.setup_button.click()
        task = engine_setup_task.running()
        assert task is not None
        wait_for(lambda: task.progress() > 0, 60, "the set-up to start")
        page.deleteLater()  # what closing Settings > Options does to its pages
        wait_for(lambda: task.done, 300, "the set-up without its page")
    finally:
        sys.excepthook = previous
    assert errors == []
    assert task.error is None, task.error
    assert settings.get(settings.PYTHON) == str(venv_python(venv))  # selected all the same
    reopened = CrossEarthOptionsPage()
    assert reopened.python_widget.filePath() == str(venv_python(venv))
    assert reopened.setup_task is None and reopened.setup_button.isEnabled()
    reopened.deleteLater()


def test_adding_pytorch_grows_the_light_environment_in_place(
    tmp_path, no_configuration, local_index, monkeypatch
):
    """The upgrade runs the Full set-up in the same folder; its list is cut down here to what
    the local index holds (PyTorch's CUDA wheels are several GB)."""
    folder = tmp_path / "engine"
    page = CrossEarthOptionsPage()
    page.venv_widget.setFilePath(str(folder))
    page.setup_button.click()
    wait_for(lambda: page.setup_task is None, 300, "the Light set-up")
    full_list = tmp_path / "requirements-full.txt"
    full_list.write_text("tqdm\nclick\n")
    monkeypatch.setattr(engine_setup_task, "requirements_file", lambda kind: full_list)
    assert page.upgrade_button.isVisibleTo(page)
    page.upgrade_button.click()
    task = page.setup_task
    assert task is not None and task.kind == "full" and task.venv_dir == folder
    wait_for(lambda: page.setup_task is None, 300, "the upgrade")
    assert task.error is None, task.error
    record = read_record(folder)
    assert record.kind == "full" and record.ready
    assert settings.get(settings.ENGINE_KIND) == "full"
    assert not page.upgrade_button.isVisibleTo(page)
    page.deleteLater()


def test_requirements_read_without_tomllib(monkeypatch):
    """QGIS on Windows ships Python 3.9, which has no tomllib: the fallback reader gives the
    same lists."""
    from crossearth_qgis.environment import requirements

    pyproject = REPO / "pyproject.toml"
    with_tomllib = requirements.setup_requirements(pyproject)
    monkeypatch.setitem(sys.modules, "tomllib", None)
    assert requirements.setup_requirements(pyproject) == with_tomllib
    assert requirements.extra_requirements(pyproject, "scale") == ["ray>=2.40"]
    assert requirements.extra_requirements(pyproject, "nothing") == []


def test_a_failed_set_up_says_why_and_keeps_the_previous_choice(
    tmp_path, no_configuration, monkeypatch
):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")  # nothing answers
    settings.set_value(settings.PYTHON, ENGINE_PYTHON)
    page = CrossEarthOptionsPage()
    page.venv_widget.setFilePath(str(tmp_path / "engine"))
    page.setup_button.click()
    wait_for(lambda: page.setup_task is None, 300, "the failing set-up")
    message = page.setup_status.text()
    assert message.startswith(
        "installing the engine requirements failed: pip cannot reach the package index"
    )
    assert page.setup_button.isEnabled()
    assert settings.get(settings.PYTHON) == ENGINE_PYTHON  # the half-built one is not selected
    page.deleteLater()


def test_setup_without_a_base_python_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", "/usr/bin/qgis")
    monkeypatch.setattr(sys, "base_prefix", str(tmp_path))
    page = CrossEarthOptionsPage()
    assert "install Python 3.10 to 3.14" in page.base_label.text()
    page.venv_widget.setFilePath(str(tmp_path / "engine"))
    page.setup_button.click()
    assert page.setup_task is None
    assert page.setup_status.text().startswith("No Python can create the engine environment")
    assert not (tmp_path / "engine").exists()
    page.deleteLater()


@pytest.mark.full_engine
def test_check_button_reports_torch_cuda_and_devices(engine_check, no_configuration):
    page = CrossEarthOptionsPage()
    page.python_widget.setFilePath(ENGINE_PYTHON)
    page.check()
    wait_for(lambda: page.check_task is None, 300, "the engine check")
    text = page.check_label.text()
    assert page.check_report == {**engine_check, "executable": page.check_report["executable"]}
    assert f"PyTorch {engine_check['torch']}" in text
    assert ("CUDA available: yes" in text) == engine_check["cuda_available"]
    for device in engine_check["devices"]:
        assert f"{device['id']}: {device['name']}" in text
    assert text == check_summary(page.check_report)

    # An interpreter that is not the engine's: the problem, not a crash.
    page.python_widget.setFilePath("/usr/bin/python3")
    page.check()
    wait_for(lambda: page.check_task is None, 120, "the failing check")
    if "torch" in missing_modules(Path("/usr/bin/python3")):
        assert page.check_label.text().startswith(
            "This Python (/usr/bin/python3) has no model runtime: neither PyTorch (the full "
            "engine) nor ONNX Runtime (the light engine)"
        )
    page.deleteLater()


def test_check_summary_names_gpus_and_memory():
    report = {
        "python": "3.11.2",
        "executable": "/venv/bin/python",
        "torch": "2.14.1",
        "timm": "1.0",
        "rasterio": "1.3",
        "gdal": "3.6",
        "cuda_available": True,
        "cuda_version": "13.0",
        "devices": [
            {"id": "cpu", "name": "CPU"},
            {"id": "cuda:0", "name": "NVIDIA H200", "memory_gib": 139.8},
        ],
    }
    text = check_summary(report)
    assert "CUDA available: yes (CUDA 13.0)" in text
    assert "cuda:0: NVIDIA H200, 139.8 GiB" in text
