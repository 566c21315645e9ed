"""The plugin's persistent choices, kept in QgsSettings under "CrossEarth/"."""

from __future__ import annotations

from qgis.core import QgsSettings

PREFIX = "CrossEarth/"
PYTHON = "python"  # the engine interpreter chosen in the options page ("" = automatic)
VENV_DIR = "venv_dir"  # where "Set up engine environment" creates the venv
MODEL = "model"  # the dock's last model (package path)
DEVICE = "device"  # the dock's last device id (auto, cpu, cuda:N)
# Web and other non-file layers: the dock asks before reading more megapixels than this.
EXPORT_LIMIT_MPX = "export_limit_mpx"


def get(key: str, default: str = "") -> str:
    value = QgsSettings().value(PREFIX + key, default)
    return "" if value is None else str(value)


def set_value(key: str, value: str) -> None:
    QgsSettings().setValue(PREFIX + key, value)


def remove(key: str) -> None:
    QgsSettings().remove(PREFIX + key)
