"""The dialog behind "Add model package or official checkpoint...".

A package folder is copied into the user models folder; an official CrossEarth checkpoint
(.pth) is converted into a package there by the engine (`convert`), as a background task.
"""

from __future__ import annotations

from pathlib import Path

from qgis.gui import QgsFileWidget
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from ..worker.models import package_folder
from ..worker.requests import WEIGHTS_DTYPES, ConvertRequest

MMSEG_CONFIG_CHOICE = "Use the checkpoint's mmseg config file"


NEEDS_PYTORCH = (
    "Converting a checkpoint needs PyTorch, which this Light engine environment does not "
    "have: add it in Settings > Options > CrossEarth > Add PyTorch."
)


class AddModelDialog(QDialog):
    """Asks for a package folder, or a checkpoint with its preset (or config) and a name."""

    def __init__(
        self,
        presets: list[str],
        user_dir: str,
        parent: QWidget | None = None,
        can_convert: bool | None = None,
    ) -> None:
        """`can_convert`: whether the engine environment converts checkpoints (False: the
        choice is greyed with the reason; None: not known, offered)."""
        super().__init__(parent)
        self.setWindowTitle("Add CrossEarth model")
        self.user_dir = Path(user_dir)
        layout = QVBoxLayout(self)

        self.package_radio = QRadioButton("Model package folder (model.json + weights)")
        self.checkpoint_radio = QRadioButton("Official CrossEarth checkpoint (.pth) to convert")
        self.package_radio.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.package_radio)
        group.addButton(self.checkpoint_radio)

        self.package_widget = QgsFileWidget()
        self.package_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)

        self.checkpoint_widget = QgsFileWidget()
        self.checkpoint_widget.setFilter("PyTorch checkpoints (*.pth *.pt)")
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(presets)
        self.preset_combo.addItem(MMSEG_CONFIG_CHOICE)
        self.config_widget = QgsFileWidget()
        self.config_widget.setFilter("mmseg configs (*.py)")
        self.backbone_widget = QgsFileWidget()
        self.backbone_widget.setFilter("DINOv2 weights (*.pth *.pt)")
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("default: the checkpoint's file name")
        self.dtype_combo = QComboBox()
        self.dtype_combo.addItems(WEIGHTS_DTYPES)

        layout.addWidget(self.package_radio)
        layout.addWidget(self.package_widget)
        layout.addWidget(self.checkpoint_radio)
        form = QFormLayout()
        form.addRow("Checkpoint", self.checkpoint_widget)
        form.addRow("Released as", self.preset_combo)
        form.addRow("mmseg config", self.config_widget)
        form.addRow("Backbone (rein+head checkpoints)", self.backbone_widget)
        form.addRow("Model name", self.name_edit)
        form.addRow("Weight precision", self.dtype_combo)
        self.checkpoint_form = QWidget()
        self.checkpoint_form.setLayout(form)
        layout.addWidget(self.checkpoint_form)
        note = QLabel(f"Models are installed in {self.user_dir}.")
        note.setWordWrap(True)
        layout.addWidget(note)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

        if can_convert is False:
            self.checkpoint_radio.setEnabled(False)
            self.checkpoint_radio.setToolTip(NEEDS_PYTORCH)
            reason = QLabel(NEEDS_PYTORCH)
            reason.setWordWrap(True)
            layout.insertWidget(layout.indexOf(self.checkpoint_form) + 1, reason)
        self.package_radio.toggled.connect(self._update_enabled)
        self.preset_combo.currentIndexChanged.connect(self._update_enabled)
        self._update_enabled()

    def _update_enabled(self) -> None:
        converting = self.checkpoint_radio.isChecked()
        self.package_widget.setEnabled(not converting)
        self.checkpoint_form.setEnabled(converting)
        self.config_widget.setEnabled(self.preset_combo.currentText() == MMSEG_CONFIG_CHOICE)

    def is_conversion(self) -> bool:
        return self.checkpoint_radio.isChecked()

    def package_folder(self) -> str:
        return self.package_widget.filePath().strip()

    def convert_request(self) -> ConvertRequest:
        checkpoint = self.checkpoint_widget.filePath().strip()
        name = self.name_edit.text().strip() or Path(checkpoint).stem
        preset = self.preset_combo.currentText()
        by_config = preset == MMSEG_CONFIG_CHOICE
        return ConvertRequest(
            checkpoint=checkpoint,
            output=str(package_folder(self.user_dir, name)),
            preset=None if by_config else preset,
            mmseg_config=(self.config_widget.filePath().strip() or None) if by_config else None,
            backbone=self.backbone_widget.filePath().strip() or None,
            name=name,
            dtype=self.dtype_combo.currentText(),
        )
