"""The MODEL parameter's widget in Processing's dialogs: the installed models to choose from,
and room to type a name or a package folder (the parameter stays a string, so scripts,
qgis_process and graphical models pass either).

The widget base class belongs to QGIS's Processing plugin, which only a QGIS with Processing
loaded has: without it (a script with the bare qgis.core) MODEL is a plain text field."""

from __future__ import annotations

import functools
from typing import Any

from qgis.PyQt.QtWidgets import QComboBox

from .. import messages, settings
from ..environment.engine_env import EngineEnvironmentError
from ..worker.client import run_engine
from ..worker.engine_errors import EngineError
from ..worker.models import LIST_MODELS_ARGS, catalog_from_json

DEFAULT_TEXT = "Default model"


def installed_model_names() -> list[tuple[str, str]]:
    """(label, name) of each installed model, asked from the engine (the warm worker answers
    in a moment once it runs); empty when the engine cannot be asked."""
    try:
        outcome = run_engine(LIST_MODELS_ARGS, timeout_s=120, warm_idle_s=settings.worker_idle_s())
        catalog = catalog_from_json(outcome.json())
    except (EngineError, EngineEnvironmentError) as exc:
        messages.log(f"listing the models for Processing: {exc}")
        return []
    return [(entry.label(), entry.name) for entry in catalog.models]


@functools.lru_cache(maxsize=1)
def model_choice_wrapper() -> type | None:
    """The widget wrapper class for MODEL, or None where Processing's GUI is not importable."""
    try:
        from processing.gui.wrappers import WidgetWrapper
    except ImportError:
        return None

    class ModelChoiceWrapper(WidgetWrapper):
        def createWidget(self) -> QComboBox:
            combo = QComboBox()
            combo.setEditable(True)
            combo.addItem(DEFAULT_TEXT, "")
            for label, name in installed_model_names():
                combo.addItem(label, name)
            combo.setToolTip(self.parameterDefinition().help())
            return combo

        def setValue(self, value: Any) -> None:
            text = "" if value is None else str(value)
            index = self.widget.findData(text)
            if index >= 0:
                self.widget.setCurrentIndex(index)
            else:
                self.widget.setEditText(text)

        def value(self) -> str:
            text = self.widget.currentText().strip()
            index = self.widget.findText(text)
            # A listed model is passed by its name; anything typed is passed as it is.
            return str(self.widget.itemData(index)) if index >= 0 else text

    return ModelChoiceWrapper
