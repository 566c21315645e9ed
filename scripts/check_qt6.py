#!/usr/bin/env python3
"""`make lint`'s Qt6 check: constructs in the plugin that QGIS 4 (Qt6, PyQt6) no longer runs.

What QGIS's own migration script (scripts/pyqt5_to_pyqt6/pyqt5_to_pyqt6.py in qgis/QGIS)
rewrites or warns about, checked here without PyQt6 or a Qt6 QGIS:

- unscoped enum values (`Qt.AlignLeft`, `Qgis.Warning`, `QgsTask.CanCancel`): PyQt6's enums
  are Python enums, reached only through their type (`Qt.AlignmentFlag.AlignLeft`). Found by
  introspecting the Qt and QGIS classes the file imports, in the running QGIS (any 3.x): a
  value whose type is an enum of the class, named without that enum;
- `exec_()` (Qt6 has `exec()` only), imports from PyQt5/PyQt6/sip instead of qgis.PyQt,
  `QAction` from QtWidgets (QtGui in Qt6; import it through crossearth_qgis/qt_compat.py);
- APIs Qt6 removed: QRegExp, QDesktopWidget, qApp, QFontMetrics.width, compiled resources.

Prints one line per finding (path:line: problem; fix) and exits 1 when there is any.
"""

from __future__ import annotations

import ast
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

QT_MODULES = ("qgis.core", "qgis.gui", "qgis.analysis")
REMOVED = {
    "QRegExp": "QRegExp is gone in Qt6; use QRegularExpression",
    "QDesktopWidget": "QDesktopWidget is gone in Qt6; use QScreen (QGuiApplication.screens())",
    "qApp": "qApp is gone in Qt6; use QApplication.instance()",
    "QRegExpValidator": "QRegExpValidator is gone in Qt6; use QRegularExpressionValidator",
}
DIRECT_IMPORTS = ("PyQt5", "PyQt6", "sip", "PyQt5.sip")
# Moved from QtWidgets to QtGui in Qt6.
MOVED_TO_QTGUI = {"QAction", "QActionGroup", "QShortcut", "QUndoCommand", "QFileSystemModel"}


def _imported_module(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _is_enum_value(value: Any) -> bool:
    """A member of a sip (PyQt5) or Python (PyQt6) enum, not a class, function or flag type."""
    kind = type(value)
    if isinstance(value, type):
        return False
    import enum

    if isinstance(value, enum.Enum):
        return True
    return type(kind).__name__ == "enumtype"  # sip's metaclass of PyQt5 enums


def _scoped_name(owner: Any, member: str, value: Any) -> str | None:
    """The enum type of `owner` that holds `value` ('MessageLevel' for Qgis.Warning)."""
    kind = type(value)
    name = kind.__name__
    for candidate in (name, kind.__qualname__.split(".")[-1]):
        holder = getattr(owner, candidate, None)
        if holder is kind or (holder is not None and getattr(holder, member, None) is not None):
            return candidate
    for attribute in dir(owner):
        if getattr(owner, attribute, None) is kind:
            return attribute
    return None


class Findings(ast.NodeVisitor):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.names: dict[str, Any] = {}  # local name -> the Qt/QGIS object it is
        self.found: list[tuple[int, str]] = []
        self.fixes: list[tuple[int, int, int, str]] = []  # line, start, end column, new text
        self._scoped: set[int] = set()

    def add(self, node: ast.AST, text: str) -> None:
        self.found.append((getattr(node, "lineno", 0), text))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] in ("PyQt5", "PyQt6", "sip"):
                self.add(node, f"imports {alias.name}; import it through qgis.PyQt")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if module.split(".")[0] in ("PyQt5", "PyQt6") or module == "sip":
            self.add(node, f"imports from {module}; import through qgis.PyQt")
        for alias in node.names:
            if alias.name == "resources_rc" or module.endswith("resources_rc"):
                self.add(node, "compiled resources are gone in Qt6; load icons by file path")
            if alias.name in REMOVED:
                self.add(node, REMOVED[alias.name])
            compat = self.path.name == "qt_compat.py"  # the one place that picks the module
            if module == "qgis.PyQt.QtWidgets" and alias.name in MOVED_TO_QTGUI and not compat:
                self.add(
                    node,
                    f"{alias.name} is in QtGui in Qt6; import it from crossearth_qgis.qt_compat",
                )
            if module.startswith("qgis.") and node.level == 0:
                imported = _imported_module(module)
                if imported is not None and hasattr(imported, alias.name):
                    self.names[alias.asname or alias.name] = getattr(imported, alias.name)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id == "qApp":
            self.add(node, REMOVED["qApp"])

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr == "exec_":
            self.add(node, "exec_() is gone in Qt6; call exec()")
        if node.attr == "width" and isinstance(node.value, ast.Call):
            func = node.value.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("fontMetrics", "QFontMetrics", "QFontMetricsF"):
                self.add(node, "QFontMetrics.width() is gone in Qt6; use horizontalAdvance()")
        self._check_enum(node)
        self.generic_visit(node)

    def _check_enum(self, node: ast.Attribute) -> None:
        if id(node) in self._scoped or not isinstance(node.value, ast.Name):
            if isinstance(node.value, ast.Attribute):
                self._scoped.add(id(node.value))  # Owner.Enum.Member: Owner.Enum is a type
            return
        owner = self.names.get(node.value.id)
        if owner is None or not isinstance(owner, type):
            return
        value = getattr(owner, node.attr, None)
        if value is None or not _is_enum_value(value):
            return
        if isinstance(getattr(owner, node.attr), type):
            return
        scope = _scoped_name(owner, node.attr, value)
        fix = f"{node.value.id}.{scope}.{node.attr}" if scope else "its enum type"
        self.add(node, f"unscoped enum {node.value.id}.{node.attr}; write {fix}")
        if scope and node.end_lineno == node.lineno and node.end_col_offset is not None:
            self.fixes.append((node.lineno, node.col_offset, node.end_col_offset, fix))


def check_file(path: Path, fix: bool = False) -> Iterator[str]:
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    findings = Findings(path)
    # Scoped uses are marked first, so their inner Owner.Enum is not taken for a value.
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            findings._scoped.add(id(node.value))
    findings.visit(tree)
    if fix and findings.fixes:
        lines = source.splitlines(keepends=True)
        for line, start, end, text in sorted(findings.fixes, reverse=True):
            row = lines[line - 1]
            lines[line - 1] = row[:start] + text + row[end:]
        path.write_text("".join(lines), encoding="utf-8")
    for line, text in sorted(findings.found):
        yield f"{path}:{line}: {text}"


def main(argv: list[str]) -> int:
    fix = "--fix" in argv  # rewrites unscoped enums in place (review the diff)
    argv = [a for a in argv if a != "--fix"]
    folders = [Path(a) for a in argv] or [Path(__file__).resolve().parents[1] / "crossearth_qgis"]
    if _imported_module("qgis.core") is None:
        print("check_qt6: QGIS's Python bindings are needed (run it in the .venv)", file=sys.stderr)
        return 2
    from qgis.core import QgsApplication

    QgsApplication.setPrefixPath("/usr", True)
    problems = [
        line
        for folder in folders
        for path in sorted(folder.rglob("*.py"))
        if "runtime" not in path.parts
        for line in check_file(path, fix)
    ]
    for line in problems:
        print(line)
    if problems:
        print(f"check_qt6: {len(problems)} Qt5-only construct(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
