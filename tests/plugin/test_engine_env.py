"""Finding the engine's interpreter, creating an environment, and the options page."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tomllib

from crossearth_qgis import engine_env, settings
from crossearth_qgis.engine_env import (
    EngineEnvironmentError,
    auto_detect,
    engine_code_dir,
    missing_modules,
    requirements_file,
    resolve_interpreter,
    setup_environment,
    venv_python,
    worker_environment,
)
from crossearth_qgis.options import CrossEarthOptionsPage, check_summary

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


def test_then_the_development_checkout_venv(no_configuration):
    chosen = resolve_interpreter()
    assert chosen.python == VENV_PYTHON
    assert chosen.source == "development checkout"
    assert engine_code_dir() == REPO
    env = worker_environment()
    assert env["PYTHONPATH"] == str(REPO)  # the worker imports this checkout's engine
    assert env["PYTHONUNBUFFERED"] == "1"


def test_then_auto_detection_and_a_clear_message_when_nothing_is_found(
    no_configuration, monkeypatch, tmp_path
):
    monkeypatch.setattr(engine_env, "dev_checkout_python", lambda: None)
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    monkeypatch.setenv("PATH", str(empty_path))
    settings.set_value(settings.VENV_DIR, str(tmp_path / "no-venv"))
    try:
        with pytest.raises(EngineEnvironmentError) as caught:
            resolve_interpreter()
        assert str(caught.value) == (
            "The CrossEarth engine environment is missing: no Python with PyTorch and the "
            "engine's requirements was found. To create one, open Settings > Options > "
            "CrossEarth and click 'Set up engine environment' (or choose an existing Python "
            "with PyTorch there, or set CROSSEARTH_PYTHON)."
        )
        # A python3 on PATH without torch is passed over; the engine's one is found.
        (empty_path / "python3").symlink_to("/usr/bin/python3")
        if "torch" in missing_modules(Path("/usr/bin/python3")):
            assert auto_detect() is None
        # (a wrapper, not a symlink: a venv's python only knows its venv from its own path)
        wrapper = empty_path / "python"
        wrapper.write_text(f'#!/bin/sh\nexec "{ENGINE_PYTHON}" "$@"\n')
        wrapper.chmod(0o755)
        found = resolve_interpreter()
        assert (found.python, found.source) == (empty_path / "python", "auto-detected")
    finally:
        settings.remove(settings.VENV_DIR)


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
    assert "torch==2.14.1" in lines and "ray==2.60.0" in lines


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


def test_the_set_up_offers_full_and_light(tmp_path, no_configuration):
    page = CrossEarthOptionsPage()
    kinds = [page.kind_combo.itemData(i) for i in range(page.kind_combo.count())]
    assert kinds == ["full", "light"]
    assert "about 100 MB" in page.kind_combo.itemText(1)
    page.venv_widget.setFilePath(str(tmp_path / "venv"))
    page.kind_combo.setCurrentIndex(1)
    task = page.set_up()
    assert task.requirements == requirements_file("light")
    task.cancel()
    wait_for(lambda: page.setup_task is None, 300, "the cancelled set-up")
    page.deleteLater()


def test_requirements_read_without_tomllib(monkeypatch):
    """QGIS on Windows ships Python 3.9, which has no tomllib: the fallback reader gives the
    same lists."""
    from crossearth_qgis import requirements

    pyproject = REPO / "pyproject.toml"
    with_tomllib = requirements.setup_requirements(pyproject)
    monkeypatch.setitem(sys.modules, "tomllib", None)
    assert requirements.setup_requirements(pyproject) == with_tomllib
    assert requirements.extra_requirements(pyproject, "scale") == ["ray==2.60.0"]
    assert requirements.extra_requirements(pyproject, "nothing") == []


def test_set_up_engine_environment_from_the_options_page(tmp_path, no_configuration):
    """A real venv and a real pip run (offline: the one requirement is already satisfied by
    the system site packages), driven by the button, with progress and pip's output shown."""
    page = CrossEarthOptionsPage()
    venv = tmp_path / "engine venv"
    page.venv_widget.setFilePath(str(venv))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy>=1.23,<2\n")
    progress: list[int] = []
    task = page.set_up(requirements=requirements)
    task.progressChanged.connect(lambda value: progress.append(int(value)))
    assert not page.setup_button.isEnabled() and page.setup_cancel_button.isEnabled()
    wait_for(lambda: page.setup_task is None, 300, "the environment set-up")

    assert task.error is None, (task.error, task.output)
    python = venv_python(venv)
    assert task.python == python and python.is_file()
    assert progress == sorted(progress) and progress[-1] == 100
    assert page.setup_progress.value() == 100
    log = page.setup_output.toPlainText()
    assert "Requirement already satisfied: numpy" in log
    assert page.setup_status.text() == f"Ready: the engine runs with {python}."
    assert page.python_widget.filePath() == str(python)
    assert settings.get(settings.PYTHON) == str(python)
    assert "numpy" not in missing_modules(python)

    # A requirement pip cannot install: the reason, in a sentence, and the button back.
    requirements.write_text(str(tmp_path / "missing-0.1-py3-none-any.whl") + "\n")
    task = page.set_up(requirements=requirements)
    wait_for(lambda: page.setup_task is None, 300, "the failing set-up")
    message = page.setup_status.text()
    assert message.startswith("Installing the engine requirements failed:")
    assert "missing-0.1-py3-none-any.whl" in message
    assert page.setup_button.isEnabled()
    page.deleteLater()


def test_setup_without_a_base_python_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", "/usr/bin/qgis")
    monkeypatch.setattr(sys, "base_prefix", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineEnvironmentError, match="install Python 3"):
        setup_environment(tmp_path / "venv", lambda f, m: None, lambda line: None)


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
