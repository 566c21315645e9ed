"""Official models in one click: the dock's greyed downloadable models and the "Download model"
algorithm, with real worker processes and the official reduced checkpoint served by a local
Hugging Face-like server (tests/hub_server.py). Nothing here reaches the internet."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from qgis.core import Qgis, QgsProcessingException
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QMessageBox

from crossearth_qgis.dock.panel import DOWNLOAD_PREFIX

from ..hub_server import HubServer, HubState
from .conftest import assert_plain, bar_messages, wait_for

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "fixtures" / "official" / "tiny_state_dict.pth"
HUB_REPO = "test-org/CrossEarth-tiny"

# Downloads convert official checkpoints with PyTorch: a Full engine's feature.
pytestmark = pytest.mark.full_engine


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    data = TINY.read_bytes()
    state = HubState(HUB_REPO, {"tiny_state_dict.pth": data})
    entry = {
        "name": "tiny-official",
        "architecture": "tiny",
        "classes": [
            {"name": "water", "color": [0, 0, 255]},
            {"name": "building", "color": [255, 0, 0]},
            {"name": "forest", "color": [0, 255, 0]},
        ],
        "bands": ["red", "green", "blue"],
        "gsd_m": 0.3,
        "description": "the official reduced reference",
        "license": "test weights",
        "checkpoint": {
            "repo": HUB_REPO,
            "filename": "tiny_state_dict.pth",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    }
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"models": [entry]}))
    with HubServer(state) as server:
        # The workers inherit these (huggingface_hub reads them when the worker starts).
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        monkeypatch.setenv("CROSSEARTH_MODEL_CATALOG", str(catalog))
        monkeypatch.setenv("CROSSEARTH_MODELS_DIR", str(tmp_path / "models"))
        yield SimpleNamespace(state=state, models=tmp_path / "models", cache=tmp_path / "hf")


def _blobs(hub) -> list[Path]:
    return [p for p in hub.cache.rglob("*") if p.parent.name == "blobs"]


def test_download_model_algorithm(provider, local_hub):
    import processing

    result = processing.run("crossearth:downloadmodel", {"MODEL": "tiny-official"})
    package = Path(result["OUTPUT"])
    assert package == local_hub.models / "tiny-official"
    assert result["MODEL_NAME"] == "tiny-official"
    card = json.loads((package / "model.json").read_text())
    assert [c["name"] for c in card["classes"]] == ["water", "building", "forest"]
    assert card["provenance"]["source"] == f"hf://{HUB_REPO}/tiny_state_dict.pth@main"
    assert _blobs(local_hub) == []  # the checkpoint fetched for it is gone again

    with pytest.raises(QgsProcessingException) as refused:
        processing.run("crossearth:downloadmodel", {"MODEL": "tiny-official"})
    message = str(refused.value)
    assert "'tiny-official' is already installed" in message
    assert "confirm replacing it with a new download" in message
    assert_plain(message)
    with pytest.raises(QgsProcessingException, match="'nothing' is not a downloadable model"):
        processing.run("crossearth:downloadmodel", {"MODEL": "nothing"})

    result = processing.run(
        "crossearth:downloadmodel",
        {"MODEL": "tiny-official", "OVERWRITE": True, "KEEP_CHECKPOINT": True},
    )
    assert Path(result["OUTPUT"]) == package
    assert len(_blobs(local_hub)) == 1


def _download_items(dock) -> list[tuple[str, str]]:
    combo = dock.form.model_combo
    return [
        (combo.itemText(i), combo.itemData(i))
        for i in range(combo.count())
        if str(combo.itemData(i)).startswith(DOWNLOAD_PREFIX)
    ]


def _list_again(dock) -> None:
    dock.models._refresh_models()
    wait_for(lambda: not dock.models.query_tasks, 120, "the model list")


def test_dock_offers_downloadable_models_and_selects_the_downloaded_one(
    dock, local_hub, monkeypatch
):
    _list_again(dock)
    assert _download_items(dock) == [
        ("tiny-official (download, 9.6 MB)", f"{DOWNLOAD_PREFIX}tiny-official")
    ]
    combo = dock.form.model_combo
    index = combo.findData(f"{DOWNLOAD_PREFIX}tiny-official")
    assert combo.itemData(index, Qt.ForegroundRole) is not None  # greyed
    assert "3 classes: water, building, forest" in combo.itemData(index, Qt.ToolTipRole)
    before = dock.models.current_model()

    asked: list[str] = []

    def answer(parent, title, text, *args):
        asked.append(text)
        return QMessageBox.Yes

    monkeypatch.setattr(QMessageBox, "question", answer)
    combo.setCurrentIndex(index)
    assert asked and "Download tiny-official (9.6 MB)" in asked[0]
    assert dock.models.current_model() == before  # the choice itself selects nothing
    task = dock.task
    assert task is not None and task.description() == "CrossEarth: downloading tiny-official"
    wait_for(
        lambda: (
            dock.models.current_model() is not None
            and dock.models.current_model().name == "tiny-official"
        ),
        240,
        "the downloaded model to be selected",
    )
    assert task.error is None
    assert dock.task is None and dock.form.run_button.isEnabled()
    assert (local_hub.models / "tiny-official" / "weights.safetensors").is_file()
    assert "3 classes: water, building, forest" in dock.form.model_info.text()
    assert _download_items(dock) == []  # installed now: listed as a model
    assert any("tiny-official downloaded" in m for m in bar_messages(dock.iface, Qgis.Success))


def test_dock_download_cancel_leaves_nothing(dock, local_hub, monkeypatch):
    _list_again(dock)
    local_hub.state.stall_first_get.add("tiny_state_dict.pth")
    task = dock.models.download_model("tiny-official")
    assert task is not None and dock.form.cancel_button.isEnabled()
    assert local_hub.state.half_sent.wait(60)
    dock.cancel()
    wait_for(lambda: dock.task is None, 120, "the cancelled download")
    assert task.cancelled
    assert dock.form.status_label.text() == "Download cancelled; nothing was installed."
    assert not local_hub.models.exists() or list(local_hub.models.iterdir()) == []
    assert _blobs(local_hub) == []


def test_dock_download_error_is_one_plain_line(dock, local_hub, monkeypatch):
    _list_again(dock)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dock.models.download_model("tiny-official")
    wait_for(lambda: dock.task is None, 120, "the failed download")
    message = bar_messages(dock.iface, Qgis.Critical)[-1]
    assert message == (
        "tiny-official was not downloaded: Cannot download tiny_state_dict.pth from "
        f"{HUB_REPO}: offline and not in the cache; connect or set HF_HUB_OFFLINE=0."
    )
    assert_plain(message)
    assert local_hub.state.requests == []
