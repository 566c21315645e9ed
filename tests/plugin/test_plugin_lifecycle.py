"""Loading and unloading through QGIS's own plugin loader; metadata and packaging layout."""

from __future__ import annotations

import configparser
import logging
import os
import sys

import pytest
import qgis.utils
import tomllib
from qgis.core import QgsApplication
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QCoreApplication, QEvent
from qgis.PyQt.QtWidgets import QDockWidget

from .conftest import REPO

PLUGIN = "crossearth_qgis"


def flush_deletes() -> None:
    QCoreApplication.processEvents()
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)


@pytest.fixture
def plugin_modules():
    """QGIS's unloader drops the plugin's modules from sys.modules; the later tests' imports
    must find the same module objects as the ones their test modules hold (a monkeypatch of a
    fresh copy misses the code that runs), so the table is put back as it was."""
    before = {name: module for name, module in sys.modules.items() if name.startswith(PLUGIN)}
    yield
    for name in [n for n in sys.modules if n.startswith(PLUGIN)]:
        del sys.modules[name]
    sys.modules.update(before)


def test_plugin_loads_and_unloads_cleanly(qgis_iface, monkeypatch, plugin_modules):
    # QGIS's loader, as QGIS runs it: find plugins (reading metadata.txt) on the plugin path.
    monkeypatch.setattr(qgis.utils, "plugin_paths", [str(REPO)])
    qgis.utils.updateAvailablePlugins()
    assert PLUGIN in qgis.utils.available_plugins
    assert qgis.utils.pluginMetadata(PLUGIN, "name") == "CrossEarth"
    assert qgis.utils.pluginMetadata(PLUGIN, "hasProcessingProvider") == "yes"
    registry = QgsApplication.processingRegistry()
    assert registry.providerById("crossearth") is None
    qgis_iface.addPluginToRasterMenu.reset_mock()
    qgis_iface.removePluginRasterMenu.reset_mock()
    qgis_iface.registerOptionsWidgetFactory.reset_mock()
    qgis_iface.unregisterOptionsWidgetFactory.reset_mock()
    handlers_before = list(logging.getLogger("crossearth_qgis").handlers)

    assert qgis.utils.loadPlugin(PLUGIN)
    assert qgis.utils.startPlugin(PLUGIN)
    try:
        plugin = qgis.utils.plugins[PLUGIN]
        provider = registry.providerById("crossearth")
        assert provider is not None
        assert {a.id() for a in provider.algorithms()} == {
            "crossearth:segmentraster",
            "crossearth:convertcheckpoint",
            "crossearth:finetune",
            "crossearth:downloadmodel",
        }
        toolbar = plugin.toolbar
        assert toolbar.objectName() == "CrossEarthToolbar"
        assert toolbar.actions() == [plugin.segment_action]
        menu_calls = qgis_iface.addPluginToRasterMenu.call_args_list
        assert [c.args for c in menu_calls] == [
            ("&CrossEarth", plugin.segment_action),
            ("&CrossEarth", plugin.settings_action),
        ]
        dock = plugin.dock
        assert isinstance(dock, QDockWidget) and dock.objectName() == "CrossEarthDock"
        assert dock.isHidden()
        plugin.segment_action.trigger()  # the toolbar button shows the dock ...
        assert not dock.isHidden()
        plugin.segment_action.trigger()  # ... and hides it again
        assert dock.isHidden()
        [factory] = [c.args[0] for c in qgis_iface.registerOptionsWidgetFactory.call_args_list]
        assert factory.title() == "CrossEarth"
        page = factory.createWidget(None)
        assert page.objectName() == "CrossEarth"
        page.deleteLater()
        assert len(logging.getLogger("crossearth_qgis").handlers) == len(handlers_before) + 1
    finally:
        assert qgis.utils.unloadPlugin(PLUGIN)
    flush_deletes()

    assert registry.providerById("crossearth") is None
    assert sip.isdeleted(toolbar)
    assert sip.isdeleted(dock)
    assert [c.args for c in qgis_iface.removePluginRasterMenu.call_args_list] == [
        c.args for c in menu_calls
    ]
    qgis_iface.unregisterOptionsWidgetFactory.assert_called_once_with(factory)
    assert logging.getLogger("crossearth_qgis").handlers == handlers_before
    assert PLUGIN not in qgis.utils.active_plugins
    assert not any(
        isinstance(w, QDockWidget) and w.objectName() == "CrossEarthDock"
        for w in qgis_iface.mainWindow().findChildren(QDockWidget)
    )


def test_processing_only_load_without_interface():
    """What qgis_process does: classFactory(None) and initProcessing, then unload."""
    from crossearth_qgis import classFactory

    plugin = classFactory(None)
    plugin.initProcessing()
    registry = QgsApplication.processingRegistry()
    assert registry.algorithmById("crossearth:segmentraster") is not None
    plugin.unload()
    assert registry.providerById("crossearth") is None


def test_metadata_is_complete_and_shared_through_symlinks():
    plugin_dir = REPO / PLUGIN
    assert (plugin_dir / "metadata.txt").is_symlink()
    assert os.readlink(plugin_dir / "metadata.txt") == "../metadata.txt"
    assert os.readlink(plugin_dir / "icons") == "../resources/icons"
    parser = configparser.ConfigParser()
    parser.read(plugin_dir / "metadata.txt", encoding="utf-8")
    general = parser["general"]
    for key in (
        "name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
        "repository", "tracker", "tags", "icon", "experimental",
    ):  # fmt: skip
        assert general.get(key, "").strip(), key
    assert general["hasProcessingProvider"] == "yes"
    assert general["qgisMinimumVersion"] == "3.22"
    assert (plugin_dir / general["icon"]).is_file()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert general["version"] == project["version"]
    svg = (REPO / "resources" / "icons" / "crossearth.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
