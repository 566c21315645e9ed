"""QGIS 4 (Qt6) readiness: the metadata lists the plugin there, and the plugin's code holds no
construct that PyQt6 no longer runs (scripts/check_qt6.py, part of `make lint`)."""

from __future__ import annotations

import configparser
import importlib.util
import textwrap

from .conftest import REPO

spec = importlib.util.spec_from_file_location("check_qt6", REPO / "scripts" / "check_qt6.py")
check_qt6 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_qt6)


def test_metadata_lists_the_plugin_on_qgis_4():
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "metadata.txt", encoding="utf-8")
    general = metadata["general"]
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["qgisMaximumVersion"] == "4.99"
    assert general["supportsQt6"] == "True"


def test_the_check_finds_each_qt5_only_construct(tmp_path):
    source = tmp_path / "old_style.py"
    source.write_text(
        textwrap.dedent(
            """
            from PyQt5.QtCore import QTimer
            from qgis.core import Qgis, QgsTask, QgsProcessingParameterNumber
            from qgis.PyQt.QtCore import Qt
            from qgis.PyQt.QtWidgets import QAction, QMessageBox

            def old(dialog, label):
                dialog.exec_()
                label.setAlignment(Qt.AlignLeft)
                QgsTask("x", QgsTask.CanCancel)
                level = Qgis.Warning
                kind = QgsProcessingParameterNumber.Integer
                width = label.fontMetrics().width("x")
                return QMessageBox.Yes

            def new(dialog, label):
                dialog.exec()
                label.setAlignment(Qt.AlignmentFlag.AlignLeft)
                QgsTask("x", QgsTask.Flag.CanCancel)
                return Qgis.MessageLevel.Warning, QMessageBox.StandardButton.Yes
            """
        )
    )
    found = [line.split(": ", 1)[1] for line in check_qt6.check_file(source)]
    assert found == [
        "imports from PyQt5.QtCore; import through qgis.PyQt",
        "QAction is in QtGui in Qt6; import it from crossearth_qgis.qt_compat",
        "exec_() is gone in Qt6; call exec()",
        "unscoped enum Qt.AlignLeft; write Qt.AlignmentFlag.AlignLeft",
        "unscoped enum QgsTask.CanCancel; write QgsTask.Flag.CanCancel",
        "unscoped enum Qgis.Warning; write Qgis.MessageLevel.Warning",
        "unscoped enum QgsProcessingParameterNumber.Integer; write "
        "QgsProcessingParameterNumber.Type.Integer",
        "QFontMetrics.width() is gone in Qt6; use horizontalAdvance()",
        "unscoped enum QMessageBox.Yes; write QMessageBox.StandardButton.Yes",
    ]


def test_the_plugin_has_none():
    found = [
        line
        for path in sorted((REPO / "crossearth_qgis").rglob("*.py"))
        for line in check_qt6.check_file(path)
    ]
    assert found == []
