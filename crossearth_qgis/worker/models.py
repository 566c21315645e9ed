"""The model packages the engine can see, asked from the engine itself (`models --json`).

The plugin never reads the engine's Python code: the worker answers, so the dock, the
algorithms and the command line always agree on which models exist and where.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..environment.engine_env import Interpreter
from .client import run_engine_json
from .engine_errors import EngineError

# With the official models `crossearth download` installs ("available").
LIST_MODELS_ARGS = ["models", "--json", "--available"]
CARD_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: str
    source: str  # bundled, user or path
    default: bool
    card: dict[str, Any]

    @property
    def bands(self) -> list[str]:
        return list(self.card.get("input", {}).get("bands", []))

    @property
    def class_names(self) -> list[str]:
        return [str(c["name"]) for c in self.card.get("classes", [])]

    def label(self) -> str:
        marker = ", default" if self.default else ""
        return f"{self.name} ({self.source}{marker})"

    def summary(self) -> str:
        """One line for the dock: classes, bands, tile, resolution."""
        gsd = self.card.get("gsd_m")
        tile = self.card.get("tile", {}).get("size")
        parts = [
            f"{len(self.class_names)} classes: {', '.join(self.class_names)}",
            f"bands {'/'.join(self.bands)}",
            f"tile {tile} px" if tile else "",
            f"trained at {gsd:g} m" if gsd else "",
        ]
        return "; ".join(p for p in parts if p)


@dataclass(frozen=True)
class AvailableModel:
    """An official model `crossearth download` installs (`models --json --available`)."""

    name: str
    description: str
    class_names: list[str]
    bands: list[str]
    gsd_m: float | None
    size: int | None
    size_exact: bool
    license: str
    source: str  # "Cusyoung/CrossEarth: Potsdam(r)-source.pth"
    downloadable: bool
    installed: str | None  # the installed package's folder
    size_text: str = "size unknown"  # the engine's words for the size ("~1.68 GB")

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> AvailableModel:
        checkpoint = item.get("checkpoint") or {}
        backbone = item.get("backbone") or {}
        files = [f["filename"] for f in (checkpoint, backbone) if f.get("filename")]
        return cls(
            name=str(item["name"]),
            description=str(item.get("description", "")),
            class_names=[str(c["name"]) for c in item.get("classes", [])],
            bands=[str(b) for b in item.get("bands", [])],
            gsd_m=item.get("gsd_m"),
            size=item.get("size"),
            size_exact=bool(item.get("size_exact", True)),
            license=str(item.get("license", "")),
            source=f"{checkpoint.get('repo', '?')}: {' + '.join(files)}" if files else "",
            downloadable=bool(item.get("downloadable")),
            installed=item.get("installed"),
            size_text=str(item.get("size_text") or "size unknown"),
        )

    def label(self) -> str:
        return f"{self.name} (download, {self.size_text})"

    def summary(self) -> str:
        """What the model is, for the picker's tooltip and the download question."""
        parts = [
            self.description,
            f"{len(self.class_names)} classes: {', '.join(self.class_names)}",
            f"bands {'/'.join(self.bands)}",
            f"trained at {self.gsd_m:g} m" if self.gsd_m else "",
            f"{self.size_text} from Hugging Face {self.source}",
        ]
        return "; ".join(p for p in parts if p)


@dataclass
class ModelCatalog:
    models: list[ModelEntry] = field(default_factory=list)
    user_dir: str = ""
    bundled_dir: str = ""
    default: str | None = None
    problems: list[str] = field(default_factory=list)
    available: list[AvailableModel] = field(default_factory=list)

    def find(self, key: str) -> ModelEntry | None:
        for entry in self.models:
            if key in (entry.path, entry.name):
                return entry
        return None

    def downloadable(self) -> list[AvailableModel]:
        """The official models that can be downloaded and are not installed yet."""
        return [m for m in self.available if m.downloadable and not m.installed]

    def find_available(self, name: str) -> AvailableModel | None:
        return next((m for m in self.available if m.name == name), None)


def list_models(interpreter: Interpreter | None = None) -> ModelCatalog:
    return catalog_from_json(run_engine_json(LIST_MODELS_ARGS, interpreter, timeout_s=120))


def catalog_from_json(data: dict[str, Any]) -> ModelCatalog:
    """The answer of `models --json` as a catalog."""
    return ModelCatalog(
        models=[
            ModelEntry(m["name"], m["path"], m["source"], bool(m.get("default")), m["card"])
            for m in data.get("models", [])
        ],
        user_dir=str(data.get("user_dir", "")),
        bundled_dir=str(data.get("bundled_dir", "")),
        default=data.get("default"),
        problems=[_problem_line(p) for p in data.get("problems", [])],
        available=[AvailableModel.from_json(m) for m in data.get("available", [])],
    )


def _problem_line(problem: Any) -> str:
    """A broken package as one line: the engine reports {"path", "problem"} (older engines
    sent the line itself)."""
    if isinstance(problem, dict):
        return f"{problem.get('path', '?')}: {problem.get('problem', '')}"
    return str(problem)


def model_card(model: str, interpreter: Interpreter | None = None) -> dict[str, Any]:
    """The card of a package path or installed name (`info MODEL --json`)."""
    return run_engine_json(["info", "--json", "--", model], interpreter, timeout_s=120)


def preset_names(interpreter: Interpreter | None = None) -> list[str]:
    """The official checkpoints the converter knows: the engine's catalog of official models
    (`models --available --json`), one per converter preset."""
    data = run_engine_json(LIST_MODELS_ARGS, interpreter, timeout_s=120)
    return sorted(str(m["name"]) for m in data.get("available", []))


def is_package(folder: Path) -> bool:
    return (Path(folder) / CARD_FILE).is_file() and (Path(folder) / WEIGHTS_FILE).is_file()


def _refuse_links(folder: Path) -> None:
    """A package to copy holds plain files and folders only: a link inside it could bring a
    file from anywhere on the disk into the models folder."""
    for entry in sorted(folder.rglob("*")):
        if entry.is_symlink() or not (entry.is_file() or entry.is_dir()):
            kind = "a symbolic link" if entry.is_symlink() else "not a plain file"
            raise EngineError(
                f"The model package was not added: {entry} is {kind}. A package holds plain "
                "files only; copy the real files into the folder."
            )


def package_folder(user_dir: Path, name: str) -> Path:
    """The folder of a package called `name` in the user models folder. The name must be one
    folder name (no '/', '\\', '..' or '.'), so that the package stays inside that folder."""
    unusable = not name.isprintable() or any(c in name for c in "/\\")
    if not name or name in (".", "..") or unusable or name != name.strip():
        raise EngineError(
            f"{name!r} is not a model name that can be a folder name: use letters, digits, "
            "'-', '_' and '.', without '/', '\\' or '..'."
        )
    return Path(user_dir) / name


def install_package(folder: Path, user_dir: Path) -> Path:
    """Copies a model package folder into the user models folder, where every tool finds it."""
    folder = Path(folder)
    if not is_package(folder):
        raise EngineError(
            f"{folder} is not a model package: a package folder holds {CARD_FILE} and "
            f"{WEIGHTS_FILE}. For an official .pth checkpoint choose the file itself."
        )
    _refuse_links(folder)
    user_dir = Path(user_dir)
    target = user_dir / folder.name
    if target.resolve() == folder.resolve():
        return target
    if target.exists():
        raise EngineError(
            f"A model package named '{folder.name}' is already installed in {user_dir}; "
            "rename the folder or remove the installed one first."
        )
    user_dir.mkdir(parents=True, exist_ok=True)
    # A fresh folder of this call's own (the engine's temporary prefix), so the clean-up can
    # only ever remove what this copy made.
    staging = Path(
        tempfile.mkdtemp(prefix=".crossearth-tmp-", suffix=f"-{folder.name}", dir=user_dir)
    )
    try:
        shutil.copytree(folder, staging / "package")
        (staging / "package").rename(target)  # whole package or nothing, also on a failed copy
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
