"""CrossEarth for QGIS: segment rasters with CrossEarth models from a dock and from Processing.

Importing this package must stay free of Qt, QGIS and torch imports: the build script and the
worker-side tools import its Qt-free helpers (requirements, paths) outside QGIS.
"""

from __future__ import annotations

from typing import Any


def classFactory(iface: Any) -> Any:
    """QGIS entry point; `iface` is None when qgis_process loads the plugin for Processing."""
    from .plugin import CrossEarthPlugin

    return CrossEarthPlugin(iface)
