"""Model packages: a folder with model.json (the card) and weights.safetensors.

Packages are found by path or by name among the bundled models (resources/models) and the
user's models folder ($CROSSEARTH_MODELS_DIR, else the platform's user data folder).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import CrossEarthError
from .files import give_ordinary_permissions
from .model_card import ModelCard, read_card

CARD_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
DEFAULT_MODEL_FILE = "DEFAULT"


def bundled_models_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "resources" / "models"


def user_models_dir() -> Path:
    if env := os.environ.get("CROSSEARTH_MODELS_DIR"):
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "crossearth" / "models"


@dataclass(frozen=True)
class ModelPackage:
    path: Path
    card: ModelCard
    source: str  # "bundled", "user" or "path"

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE


def open_package(path: Path, source: str = "path") -> ModelPackage:
    path = Path(path)
    if path.is_file() and path.name == CARD_FILE:
        path = path.parent
    if not path.is_dir():
        raise CrossEarthError(f"model package {path} does not exist or is not a folder")
    card_path = path / CARD_FILE
    if not card_path.is_file():
        raise CrossEarthError(
            f"{path} is not a model package: it has no {CARD_FILE}; point --model at a folder "
            f"holding {CARD_FILE} and {WEIGHTS_FILE}"
        )
    card = read_card(card_path)
    if not (path / WEIGHTS_FILE).is_file():
        raise CrossEarthError(
            f"model package {path} has no {WEIGHTS_FILE}; copy the whole package folder again"
        )
    return ModelPackage(path=path, card=card, source=source)


def _search_dirs() -> list[tuple[Path, str]]:
    return [(bundled_models_dir(), "bundled"), (user_models_dir(), "user")]


def list_packages() -> tuple[list[ModelPackage], list[str]]:
    """All installed packages, and one message per folder that looks like a broken package."""
    packages: list[ModelPackage] = []
    problems: list[str] = []
    for folder, source in _search_dirs():
        if not folder.is_dir():
            continue
        for candidate in sorted(folder.iterdir()):
            if not (candidate / CARD_FILE).is_file():
                continue
            try:
                packages.append(open_package(candidate, source))
            except CrossEarthError as exc:
                problems.append(str(exc))
    return packages, problems


def default_model_name() -> str | None:
    marker = bundled_models_dir() / DEFAULT_MODEL_FILE
    if marker.is_file():
        return marker.read_text(encoding="utf-8").strip() or None
    return None


def find_package(name_or_path: str | os.PathLike[str] | None) -> ModelPackage:
    """Resolves a package path or an installed package's name (None = the bundled default)."""
    if name_or_path is None or str(name_or_path) == "":
        default = default_model_name()
        if default is None:
            raise CrossEarthError(
                "no bundled default model is installed; pass --model with a model package "
                "folder or the name of an installed model (see 'crossearth models')"
            )
        name_or_path = default
    candidate = Path(name_or_path).expanduser()
    if candidate.exists():
        return open_package(candidate)
    name = str(name_or_path)
    for folder, source in _search_dirs():
        if (folder / name / CARD_FILE).is_file():
            return open_package(folder / name, source)
    packages, _ = list_packages()
    for package in packages:
        if package.card.name == name:
            return package
    known = ", ".join(sorted(p.card.name for p in packages)) or "none installed"
    raise CrossEarthError(
        f"model '{name}' not found: it is neither a package folder nor an installed model "
        f"(installed: {known})"
    )


def save_package(
    destination: Path, card: ModelCard, state_dict: dict[str, object], overwrite: bool = False
) -> ModelPackage:
    """Writes a package folder (model.json + weights.safetensors) atomically: it is assembled in
    a temporary folder beside the destination and renamed into place when complete."""
    import shutil
    import tempfile

    from safetensors.torch import save_file

    destination = Path(destination).expanduser().absolute()
    if destination.exists() and not overwrite:
        raise CrossEarthError(f"{destination} already exists; remove it or choose another name")
    if not destination.parent.is_dir():
        raise CrossEarthError(f"folder {destination.parent} does not exist; create it first")
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}  # type: ignore[attr-defined]
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        card.save(staging / CARD_FILE)
        for item in staging.iterdir():
            give_ordinary_permissions(item)
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    give_ordinary_permissions(destination)
    return open_package(destination)
