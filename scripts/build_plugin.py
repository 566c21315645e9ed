"""`make plugin`: build the installable QGIS plugin zip, dist/crossearth_qgis-<version>.zip.

The zip holds one folder, crossearth_qgis/, with real files (the repository's symlinks to
metadata.txt and resources/icons are followed): the plugin code, metadata.txt, the icons, the
code's LICENSE, and runtime/ with the engine's code (engine/, training/), the bundled models
(resources/models, so the engine's lookup of engine/../resources/models works there too) with
their license (resources/LICENSE), requirements.txt, the pinned engine requirements that
"Set up engine environment" installs, and the distribution metadata pip would write
(crossearth_qgis-<version>.dist-info, from pyproject.toml), through which the worker finds its
version and its `train`/`evaluate` commands (the entry-point group crossearth.commands).

Entries are sorted and time-stamped 1980-01-01, so the same sources give the same zip.
Standard library only; runs with any Python >= 3.10.
"""

from __future__ import annotations

import argparse
import configparser
import importlib.util
import os
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "crossearth_qgis"
SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", "runtime"}
SKIP_SUFFIXES = {".pyc", ".pyo"}
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def _load_requirements_module():
    # crossearth_qgis/environment/requirements.py by path: importing the package is not needed
    # (and a plain Python has no QGIS).
    spec = importlib.util.spec_from_file_location(
        "crossearth_requirements", REPO / PLUGIN / "environment" / "requirements.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def plugin_version(requirements) -> str:
    """metadata.txt's version, which must equal pyproject.toml's."""
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "metadata.txt", encoding="utf-8")
    version = metadata["general"]["version"].strip()
    project = requirements.project_version(REPO / "pyproject.toml")
    if version != project:
        raise SystemExit(
            f"metadata.txt says version {version} but pyproject.toml says {project}; "
            "make them equal before building the plugin"
        )
    return version


def dist_info(version: str) -> dict[str, str]:
    """{file name: text} of the runtime's .dist-info folder, as pip writes them from
    pyproject.toml: importlib.metadata reads the version and entry points from there."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    groups = {"console_scripts": _string_table(text, "project.scripts")}
    for group in re.findall(r'^\[project\.entry-points\."([^"]+)"\]\s*$', text, re.M):
        groups[group] = _string_table(text, f'project.entry-points."{group}"')
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(table.items())) + "\n"
        for group, table in groups.items()
        if table
    )
    metadata = f"Metadata-Version: 2.1\nName: crossearth-qgis\nVersion: {version}\n"
    return {"METADATA": metadata, "entry_points.txt": entry_points}


def _string_table(text: str, header: str) -> dict[str, str]:
    # Line-based (no tomllib before Python 3.11): these tables hold `name = "value"` lines only.
    table = re.search(rf"^\[{re.escape(header)}\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    body = table.group(1) if table else ""
    return dict(re.findall(r'^\s*([A-Za-z0-9_.-]+)\s*=\s*"([^"]*)"\s*$', body, re.M))


def _walk(folder: Path) -> Iterator[Path]:
    """Files under `folder`, following symlinked folders (the plugin's icons link)."""
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if path.suffix not in SKIP_SUFFIXES and not name.startswith("."):
                yield path


def plugin_files() -> list[tuple[str, Path]]:
    """(name in the zip, file to read) for everything except the generated requirements."""
    entries = [
        (f"{PLUGIN}/{p.relative_to(REPO / PLUGIN).as_posix()}", p) for p in _walk(REPO / PLUGIN)
    ]
    runtime = f"{PLUGIN}/runtime"
    # The bundled default model only (the others in the repository are baselines for the
    # benchmarks); it carries its ONNX graph, so a light engine runs it too.
    models = REPO / "resources" / "models"
    default = models / "DEFAULT"
    parts = ["engine", "training"]
    if default.is_file():
        entries.append((f"{runtime}/resources/models/DEFAULT", default))
        parts.append(f"resources/models/{default.read_text(encoding='utf-8').strip()}")
    for part in parts:
        folder = REPO / part
        if folder.is_dir():
            entries += [(f"{runtime}/{p.relative_to(REPO).as_posix()}", p) for p in _walk(folder)]
    # The code's license, and the bundled model's (CC BY-SA 3.0 with attribution), travel with
    # what they cover.
    entries += [
        (f"{PLUGIN}/LICENSE", REPO / "LICENSE"),
        (f"{runtime}/resources/LICENSE", REPO / "resources" / "LICENSE"),
    ]
    return sorted(entries)


def _info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, FIXED_TIME)
    info.external_attr = mode << 16  # regular file or folder, never a symlink
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def build(dist: Path) -> Path:
    helpers = _load_requirements_module()
    version = plugin_version(helpers)
    requirements = helpers.requirements_text(REPO / "pyproject.toml")
    light = helpers.requirements_text(REPO / "pyproject.toml", "light")
    dist.mkdir(parents=True, exist_ok=True)
    target = dist / f"{PLUGIN}-{version}.zip"
    partial = target.with_suffix(".zip.partial")
    entries = plugin_files()
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        # The models folder exists in every zip, so the engine's bundled-model lookup
        # finds a folder (perhaps empty) rather than nothing.
        archive.writestr(_info(f"{PLUGIN}/runtime/resources/models/", 0o40755), b"")
        for name, source in entries:
            archive.writestr(_info(name, 0o100644), source.read_bytes())
        archive.writestr(
            _info(f"{PLUGIN}/runtime/requirements.txt", 0o100644), requirements.encode()
        )
        archive.writestr(
            _info(f"{PLUGIN}/runtime/{helpers.LIGHT_REQUIREMENTS_FILE}", 0o100644), light.encode()
        )
        info_dir = f"{PLUGIN}/runtime/crossearth_qgis-{version}.dist-info"
        for name, content in dist_info(version).items():
            archive.writestr(_info(f"{info_dir}/{name}", 0o100644), content.encode())
    os.replace(partial, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dist", type=Path, default=REPO / "dist", help="output folder (default: dist/)"
    )
    args = parser.parse_args(argv)
    target = build(args.dist)
    with zipfile.ZipFile(target) as archive:
        count = len(archive.namelist())
    print(f"built {target} ({target.stat().st_size / 1e6:.1f} MB, {count} entries)")
    print("install: QGIS > Plugins > Manage and Install Plugins > Install from ZIP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
