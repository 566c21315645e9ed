"""A signal for "a model package was added", so every model picker lists it at once."""

from __future__ import annotations

from qgis.PyQt.QtCore import QObject, pyqtSignal


class _CatalogEvents(QObject):
    # The new package's folder; pickers re-list the models and may select it.
    package_added = pyqtSignal(str)


catalog_events = _CatalogEvents()
