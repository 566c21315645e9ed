"""Facts about this project that pyproject.toml states once: its version and its entry points.

They are read from the distribution's metadata, which pip writes from pyproject.toml (an
installed or editable crossearth-qgis) and which `make plugin` writes into the plugin's
runtime/ folder. A source checkout that was never installed has no metadata; there they are
read from the pyproject.toml beside engine/, so both ways give the same answer.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "crossearth-qgis"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def version() -> str:
    """The project's version ("0+unknown" when neither metadata nor pyproject.toml exists)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    found = re.search(r'^version\s*=\s*"([^"]+)"', _table("project"), re.M)
    return found.group(1) if found else "0+unknown"


def entry_points(group: str) -> list[metadata.EntryPoint]:
    """The entry points of `group` that any installed distribution declares, in name order."""
    found = {point.name: point for point in metadata.entry_points(group=group)}
    try:
        metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        # Never installed: this checkout's own declarations still count.
        for name, value in _string_table(_table(f'project.entry-points."{group}"')).items():
            found.setdefault(name, metadata.EntryPoint(name, value, group))
    return [found[name] for name in sorted(found)]


def _table(header: str) -> str:
    """The body of one `[header]` table of pyproject.toml ("" when the file or table is absent).
    A line-based read, because Python 3.10 has no tomllib and these tables are plain."""
    try:
        text = PYPROJECT.read_text(encoding="utf-8")
    except OSError:
        return ""
    table = re.search(rf"^\[{re.escape(header)}\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    return table.group(1) if table else ""


def _string_table(body: str) -> dict[str, str]:
    """`name = "value"` lines of a table body."""
    return dict(re.findall(r'^\s*([A-Za-z0-9_.-]+)\s*=\s*"([^"]*)"\s*$', body, re.M))
