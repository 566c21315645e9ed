"""CrossEarth engine: segmentation of GDAL rasters with model packages, no QGIS needed."""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "load_model": "loading",
    "segment": "pipeline",
    "SegmentOptions": "pipeline",
    "SegmentResult": "pipeline",
    "LoadedModel": "pipeline",
    "CrossEarthError": "errors",
    "SegmentationCancelled": "errors",
    "find_package": "packages",
    "list_packages": "packages",
    "register_architecture": "architectures",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy: importing `engine` must stay cheap (no torch) for the CLI's quick commands.
    if name == "__version__":
        # pyproject.toml states the version once; see engine/project.py.
        from .project import version

        return version()
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
