"""The dock's "models that fit this layer" panel: the engine's advice (`crossearth fit --json`)
with one button per model, so the model that takes the layer is one click away.

A widget with its own state: the dock hands it a report and listens to its signals. The text
is the engine's own (engine/models/model_fit.py), so the dock, Processing and the CLI say the same.
"""

from __future__ import annotations

from typing import Any

from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

# The set-up a download needs when the environment cannot download (check --json features).
NEEDS_FULL = (
    "Downloads are converted and run with PyTorch, which this Light engine environment does "
    "not have: add it in Settings > Options > CrossEarth > Add PyTorch."
)
BUTTONS_PER_KIND = 2


class ModelFitPanel(QWidget):
    """Hidden while the chosen model fits the layer; otherwise the advice and its buttons."""

    useModel = pyqtSignal(str)  # an installed package's path
    downloadModel = pyqtSignal(str)  # an official model's name
    setUpFull = pyqtSignal()  # open the options page, where PyTorch is added

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setStyleSheet("color: #b35c00")
        layout.addWidget(self.text)
        self._row = QVBoxLayout()  # one button per line: the dock is narrow
        layout.addLayout(self._row)
        self.buttons: list[QPushButton] = []
        self.report: dict[str, Any] | None = None
        self.setVisible(False)

    def clear(self) -> None:
        self.report = None
        self.text.setText("")
        for button in self.buttons:
            self._row.removeWidget(button)
            button.deleteLater()
        self.buttons = []
        self.setVisible(False)

    def show_report(self, report: dict[str, Any], can_download: bool | None) -> None:
        """Shows the report unless the chosen model fits; `can_download`: whether this
        environment downloads (None: not known yet, offered)."""
        self.clear()
        if report.get("fits", True):
            return
        self.report = report
        self.text.setText(str(report.get("text", "")))
        for fit in report.get("installed", [])[:BUTTONS_PER_KIND]:
            button = self._button(f"Use {fit['name']}", str(fit.get("text", "")))
            button.clicked.connect(lambda _=False, path=fit["path"]: self.useModel.emit(path))
            if fit.get("requires"):
                button.setEnabled(False)
                button.setToolTip(f"Needs {fit['requires']}. {fit.get('text', '')}")
        for fit in report.get("downloads", [])[:BUTTONS_PER_KIND]:
            button = self._button(f"Download {fit['name']} ({fit['size']})...", fit["text"])
            button.clicked.connect(lambda _=False, name=fit["name"]: self.downloadModel.emit(name))
            if can_download is False:
                button.setEnabled(False)
                button.setToolTip(NEEDS_FULL)
        if report.get("downloads") and can_download is False:
            fix = self._button("Add PyTorch...", NEEDS_FULL)
            fix.clicked.connect(lambda _=False: self.setUpFull.emit())
        self.setVisible(True)

    def _button(self, label: str, tip: str) -> QPushButton:
        button = QPushButton(label)
        button.setToolTip(tip)
        self._row.addWidget(button)
        self.buttons.append(button)
        return button
