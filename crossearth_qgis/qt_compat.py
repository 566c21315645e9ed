"""The few Qt names that live in different modules in Qt5 and Qt6 (QGIS 3.x and 4.x)."""

from __future__ import annotations

try:  # Qt6 (QGIS 4): QAction is a QtGui class
    from qgis.PyQt.QtGui import QAction
except ImportError:  # Qt5 (QGIS 3)
    from qgis.PyQt.QtWidgets import QAction

__all__ = ["QAction"]
