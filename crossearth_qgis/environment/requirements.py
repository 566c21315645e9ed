"""The engine's requirements (lower bounds), read from pyproject.toml (Qt-free; the build uses it).

The plugin zip carries them as runtime/requirements.txt; a development checkout reads them from
the repository's pyproject.toml, so the two can never disagree.
"""

from __future__ import annotations

import re
from pathlib import Path

REQUIREMENTS_FILE = "requirements.txt"
# The light engine environment's list: the `light` extra alone (no PyTorch).
LIGHT_REQUIREMENTS_FILE = "requirements-light.txt"
LIGHT_EXTRA = "light"
# Optional extras the full engine environment gets too: `scale` is Ray, for sharded runs
# (Workers), which the engine imports only when they are asked for; `onnx` is ONNX Runtime,
# which runs a package's ONNX graph on the CPU faster than PyTorch.
SETUP_EXTRAS = ("scale", "onnx")
ENVIRONMENT_KINDS = ("full", "light")


def project_dependencies(pyproject: Path) -> list[str]:
    """The `[project] dependencies` of a pyproject.toml, in file order."""
    text = Path(pyproject).read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:  # Python < 3.11 (QGIS 3.22 on Windows ships 3.9)
        return _dependencies_without_tomllib(text)
    return list(tomllib.loads(text).get("project", {}).get("dependencies", []))


def extra_requirements(pyproject: Path, extra: str) -> list[str]:
    """The `[project.optional-dependencies]` list named `extra` ([] when there is none)."""
    text = Path(pyproject).read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        table = re.search(
            r"^\[project\.optional-dependencies\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S
        )
        if table is None:
            return []
        block = re.search(rf"^{re.escape(extra)}\s*=\s*\[(.*?)\]\s*$", table.group(1), re.M | re.S)
        if block is None:
            return []
        body = "\n".join(line.split("#", 1)[0] for line in block.group(1).splitlines())
        pairs = re.findall(r"\"([^\"]+)\"|'([^']+)'", body)
        return [double or single for double, single in pairs]
    extras = tomllib.loads(text).get("project", {}).get("optional-dependencies", {})
    return list(extras.get(extra, []))


def setup_requirements(pyproject: Path) -> list[str]:
    """What 'Set up engine environment' installs: the dependencies and SETUP_EXTRAS."""
    found = project_dependencies(pyproject)
    for extra in SETUP_EXTRAS:
        found += [r for r in extra_requirements(pyproject, extra) if r not in found]
    return found


def project_version(pyproject: Path) -> str:
    """The `[project] version` of a pyproject.toml ("" when it has none)."""
    match = re.search(
        r'^version\s*=\s*"([^"]+)"',
        _project_table(Path(pyproject).read_text(encoding="utf-8")),
        re.M,
    )
    return match.group(1) if match else ""


def _project_table(text: str) -> str:
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    return project.group(1) if project else ""


def _dependencies_without_tomllib(text: str) -> list[str]:
    project = _project_table(text)
    # The closing bracket ends a line; brackets inside names ("pkg[extra]") do not.
    block = re.search(r"^dependencies\s*=\s*\[(.*?)\]\s*$", project, re.M | re.S)
    if block is None:
        return []
    body = "\n".join(line.split("#", 1)[0] for line in block.group(1).splitlines())
    pairs = re.findall(r"\"([^\"]+)\"|'([^']+)'", body)
    return [double or single for double, single in pairs]


def requirements_text(pyproject: Path, kind: str = "full") -> str:
    """The requirements file of a full or a light engine environment."""
    if kind == "light":
        lines = [
            "# The light CrossEarth engine (from pyproject.toml's `light` extra): segmenting on",
            "# the CPU with ONNX Runtime and packages that carry an ONNX graph; no PyTorch.",
            *extra_requirements(pyproject, LIGHT_EXTRA),
        ]
    else:
        lines = [
            "# The full CrossEarth engine's requirements (from pyproject.toml, lower bounds);",
            "# 'Set up engine environment' installs them into the engine's venv, with the",
            f"# optional extras {', '.join(SETUP_EXTRAS)} (ray: sharded runs, imported only "
            "then; onnxruntime: ONNX graphs on the CPU).",
            *setup_requirements(pyproject),
        ]
    return "\n".join(lines) + "\n"
