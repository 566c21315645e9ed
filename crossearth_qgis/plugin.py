"""The plugin object QGIS creates: actions, menu, toolbar, dock, options page, provider.

`initProcessing` alone runs under qgis_process (iface is None there); `initGui` adds the
interface parts; `unload` removes everything both added.
"""

from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QToolBar

from . import messages
from .environment.engine_env import PLUGIN_DIR
from .processing.provider import CrossEarthProvider
from .qt_compat import QAction
from .worker import warm_worker

ICON = PLUGIN_DIR / "icons" / "crossearth.svg"
MENU = "&CrossEarth"


class CrossEarthPlugin:
    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: CrossEarthProvider | None = None
        self.dock = None
        self.toolbar: QToolBar | None = None
        self.segment_action: QAction | None = None
        self.settings_action: QAction | None = None
        self.options_factory = None
        self.log_handler = None

    def initProcessing(self) -> None:
        if self.provider is None:
            self.provider = CrossEarthProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        from .dock.panel import CrossEarthDock
        from .environment.options_page import PAGE_TITLE, CrossEarthOptionsFactory

        self.log_handler = messages.install_log_handler()
        self.initProcessing()
        window = self.iface.mainWindow()
        icon = QIcon(str(ICON))

        self.dock = CrossEarthDock(self.iface, window)
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.dock.hide()

        self.segment_action = QAction(icon, "Segment layer", window)
        self.segment_action.setObjectName("CrossEarthSegmentLayer")
        self.segment_action.setCheckable(True)
        self.segment_action.setToolTip("Show the CrossEarth 'Segment layer' panel")
        self.segment_action.toggled.connect(self.dock.setVisible)
        self.dock.visibilityChanged.connect(self.segment_action.setChecked)

        self.settings_action = QAction(
            QgsApplication.getThemeIcon("/mActionOptions.svg"), "Engine settings...", window
        )
        self.settings_action.setObjectName("CrossEarthSettings")
        self.settings_action.triggered.connect(
            lambda: self.iface.showOptionsDialog(window, currentPage=PAGE_TITLE)
        )

        self.toolbar = self.iface.addToolBar("CrossEarth")
        self.toolbar.setObjectName("CrossEarthToolbar")
        self.toolbar.addAction(self.segment_action)
        for action in (self.segment_action, self.settings_action):
            self.iface.addPluginToRasterMenu(MENU, action)

        self.options_factory = CrossEarthOptionsFactory(self.iface)
        self.iface.registerOptionsWidgetFactory(self.options_factory)

    def unload(self) -> None:
        if self.iface is not None:
            for action in (self.segment_action, self.settings_action):
                if action is not None:
                    self.iface.removePluginRasterMenu(MENU, action)
                    action.deleteLater()
            if self.toolbar is not None:
                self.iface.mainWindow().removeToolBar(self.toolbar)
                self.toolbar.deleteLater()
            if self.dock is not None:
                self.dock.shutdown()
                self.iface.removeDockWidget(self.dock)
                self.dock.deleteLater()
            if self.options_factory is not None:
                self.iface.unregisterOptionsWidgetFactory(self.options_factory)
        self.segment_action = self.settings_action = self.toolbar = self.dock = None
        self.options_factory = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        warm_worker.stop_all()  # its model's memory goes with the plugin
        messages.remove_log_handler(self.log_handler)
        self.log_handler = None
