"""Adding a model package copies plain files only, and a model name stays a folder name in the
user models folder: nothing from outside the chosen folder, nothing written outside the models
folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossearth_qgis.worker.engine_errors import EngineError
from crossearth_qgis.worker.models import install_package, package_folder


def _package(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.json").write_text("{}")
    (folder / "weights.safetensors").write_bytes(b"weights")
    return folder


@pytest.mark.parametrize("where", ["weights.safetensors", "extra/notes.txt", "extra"])
def test_a_package_holding_a_link_is_not_added(tmp_path, where):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside the package")
    package = _package(tmp_path / "chosen" / "pkg")
    link = package / where
    if link.exists():
        link.unlink()
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(secret if where != "extra" else tmp_path, target_is_directory=where == "extra")
    models = tmp_path / "models"
    with pytest.raises(EngineError) as error:
        install_package(package, models)
    assert "symbolic link" in str(error.value) and "\n" not in str(error.value)
    assert not models.exists() or list(models.iterdir()) == []


def test_a_plain_package_is_added(tmp_path):
    package = _package(tmp_path / "chosen" / "pkg")
    target = install_package(package, tmp_path / "models")
    assert target == tmp_path / "models" / "pkg"
    assert sorted(p.name for p in target.iterdir()) == ["model.json", "weights.safetensors"]


@given(st.text(max_size=16) | st.sampled_from(["..", ".", "../x", "a/b", "a\\b", " x", ""]))
@settings(max_examples=300, deadline=None)
def test_a_model_name_is_a_folder_in_the_models_folder_or_refused(name):
    models = Path("/home/analyst/models")
    try:
        folder = package_folder(models, name)
    except EngineError as exc:
        assert "\n" not in str(exc)
        return
    assert folder.parent == models and os.path.normpath(folder).startswith(f"{models}{os.sep}")
