"""CrossEarth engine: segmentation of GDAL rasters with model packages, no QGIS needed."""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "load_model": "models.loading",
    "segment": "run.pipeline",
    "SegmentOptions": "run.pipeline",
    "SegmentResult": "run.pipeline",
    "LoadedModel": "run.pipeline",
    "CrossEarthError": "errors",
    "SegmentationCancelled": "errors",
    "find_package": "models.packages",
    "list_packages": "models.packages",
    "register_architecture": "models.architectures",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy: importing `engine` must stay cheap (no torch) for the CLI's quick commands.
    if name == "__version__":
        # pyproject.toml states the version once; see engine/project.py.
        from engine.project import version

        return version()
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
