"""The plugin's persistent choices, kept in QgsSettings under "CrossEarth/"."""

from __future__ import annotations

from qgis.core import QgsSettings

PREFIX = "CrossEarth/"
PYTHON = "python"  # the engine interpreter chosen in the options page ("" = automatic)
VENV_DIR = "venv_dir"  # where "Set up engine environment" creates the venv
ENGINE_KIND = "engine_kind"  # the set-up's choice: "light" or "full"
BASE_PYTHON = "base_python"  # the interpreter the set-up makes it with ("" = QGIS's own)
CAPABILITIES = "capabilities"  # JSON: `check --json` of the selected environment, probed last
MODEL = "model"  # the dock's last model (package path)
DEVICE = "device"  # the dock's last device id (auto, cpu, cuda:N)
# How long the warm engine worker keeps a model loaded after a run, in minutes (0: off).
WORKER_IDLE_MINUTES = "worker_idle_minutes"
DEFAULT_WORKER_IDLE_MINUTES = 10.0
# Web and other non-file layers: the dock asks before reading more megapixels than this.
EXPORT_LIMIT_MPX = "export_limit_mpx"


def get(key: str, default: str = "") -> str:
    value = QgsSettings().value(PREFIX + key, default)
    return "" if value is None else str(value)


def set_value(key: str, value: str) -> None:
    QgsSettings().setValue(PREFIX + key, value)


def remove(key: str) -> None:
    QgsSettings().remove(PREFIX + key)


def worker_idle_s() -> float:
    """The warm worker's idle time in seconds (0: no warm worker)."""
    try:
        minutes = float(get(WORKER_IDLE_MINUTES) or DEFAULT_WORKER_IDLE_MINUTES)
    except ValueError:
        minutes = DEFAULT_WORKER_IDLE_MINUTES
    return max(0.0, minutes * 60.0)
