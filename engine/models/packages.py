"""Model packages: a folder with model.json (the card) and weights.safetensors.

Packages are found by path or by name among the bundled models (resources/models) and the
user's models folder ($CROSSEARTH_MODELS_DIR, else the platform's user data folder). One
broken package there is listed with its problem; it never hides the others.

A package is written into a temporary folder beside its destination and renamed into place.
An existing destination is replaced only when it is a package this tool wrote (exactly
model.json + weights.safetensors, and the card reads), never when it is or holds an input.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.error_codes import (
    MODEL_BROKEN,
    MODEL_LINKED,
    MODEL_NO_DEFAULT,
    MODEL_NOT_FOUND,
    MODEL_NOT_PACKAGE,
    PACKAGE_EXISTS,
)
from engine.errors import CrossEarthError, ModelError, OutputError
from engine.files import (
    create_temporary_folder,
    describe_path,
    forget_temporary,
    give_ordinary_permissions,
    is_within,
    publish,
    remove_stale_temporaries,
    remove_temporary,
    same_file,
    temporary_name,
    write_error,
)
from engine.models.model_card import ModelCard, card_from_dict, read_card

if TYPE_CHECKING:  # torch loads only where weights are written
    import torch

log = logging.getLogger(__name__)

CARD_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
ONNX_FILE = "model.onnx"  # optional: the graph `crossearth export` adds
DEFAULT_MODEL_FILE = "DEFAULT"


def bundled_models_dir() -> Path:
    """The folder of the models shipped with the engine."""
    return Path(__file__).resolve().parents[2] / "resources" / "models"


def _platform_folder(kind: str) -> Path:
    """The user's "data" or "cache" folder of this platform (Windows, macOS, XDG)."""
    home = Path.home()
    if sys.platform == "win32":
        variable, fallback = (
            ("APPDATA", home / "AppData" / "Roaming")
            if kind == "data"
            else ("LOCALAPPDATA", home / "AppData" / "Local")
        )
    elif sys.platform == "darwin":
        return home / "Library" / ("Application Support" if kind == "data" else "Caches")
    else:
        variable, fallback = (
            ("XDG_DATA_HOME", home / ".local" / "share")
            if kind == "data"
            else ("XDG_CACHE_HOME", home / ".cache")
        )
    return Path(os.environ.get(variable, fallback))


def user_models_dir() -> Path:
    """Where installed models live: $CROSSEARTH_MODELS_DIR, else the platform's user data folder."""
    if env := os.environ.get("CROSSEARTH_MODELS_DIR"):
        return Path(env).expanduser()
    return _platform_folder("data") / "crossearth" / "models"


def user_cache_dir() -> Path:
    """Where the engine keeps what it can rebuild (compiled models): $CROSSEARTH_CACHE_DIR,
    else the platform's user cache folder."""
    if env := os.environ.get("CROSSEARTH_CACHE_DIR"):
        return Path(env).expanduser()
    return _platform_folder("cache") / "crossearth"


@dataclass(frozen=True)
class ModelPackage:
    path: Path
    card: ModelCard
    source: str  # "bundled", "user" or "path"

    @property
    def weights_path(self) -> Path:
        """The package's safetensors weights file."""
        return self.path / WEIGHTS_FILE

    @property
    def onnx_path(self) -> Path | None:
        """The package's ONNX graph as its card records it, or None without one."""
        return self.path / self.card.onnx["file"] if self.card.onnx else None


@dataclass(frozen=True)
class PackageProblem:
    """A folder among the installed models that does not open as a package, and why."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{describe_path(self.path)}: {self.problem}"

    def to_json(self) -> dict[str, str]:
        """The problem as JSON data for `models --json`."""
        return {"path": os.fsdecode(self.path), "problem": self.problem}


def _problem_text(exc: BaseException, folder: Path) -> str:
    """An error about a package without the package's own path in front (it is listed)."""
    text = str(exc)
    for prefix in (str(folder) + os.sep, describe_path(folder) + os.sep):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _refuse_links(folder: Path) -> None:
    """A package's own files are read as they are in its folder, never through a link (which
    could point anywhere, e.g. at a file outside the folder the analyst chose)."""
    for name in (CARD_FILE, WEIGHTS_FILE, ONNX_FILE):
        if (folder / name).is_symlink():
            raise ModelError(
                f"{describe_path(folder / name)} is a symbolic link, which a model package may "
                "not hold; copy the real file into the package folder",
                code=MODEL_LINKED,
                path=describe_path(folder / name),
            )


def open_package(path: Path, source: str = "path") -> ModelPackage:
    """The package in folder `path` (or the folder of a model.json), its card checked; `source`
    says where it was found, for messages. A missing or broken one is a CrossEarthError."""
    path = Path(path)
    try:
        if path.is_file() and path.name == CARD_FILE:
            path = path.parent
        is_folder = path.is_dir()
        has_card = is_folder and (path / CARD_FILE).is_file()
    except OSError as exc:
        raise CrossEarthError(
            f"cannot read model package {describe_path(path)}: {exc.strerror or exc}"
        ) from None
    if not is_folder:
        raise CrossEarthError(
            f"model package {describe_path(path)} does not exist or is not a folder"
        )
    if not has_card:
        raise ModelError(
            f"{describe_path(path)} is not a model package: it has no {CARD_FILE}; choose a "
            f"folder holding {CARD_FILE} and {WEIGHTS_FILE} as the model",
            code=MODEL_NOT_PACKAGE,
            path=describe_path(path),
            card=CARD_FILE,
            weights=WEIGHTS_FILE,
            option="model",
        )
    _refuse_links(path)
    card = read_card(path / CARD_FILE)
    try:
        has_weights = (path / WEIGHTS_FILE).is_file()
    except OSError as exc:
        raise CrossEarthError(
            f"cannot read {describe_path(path / WEIGHTS_FILE)}: {exc.strerror or exc}"
        ) from None
    if not has_weights:
        raise CrossEarthError(
            f"model package {describe_path(path)} has no {WEIGHTS_FILE}; copy the whole package "
            "folder again"
        )
    return ModelPackage(path=path, card=card, source=source)


def _search_dirs() -> list[tuple[Path, str]]:
    return [(bundled_models_dir(), "bundled"), (user_models_dir(), "user")]


def _open_listed(candidate: Path, source: str) -> ModelPackage | PackageProblem | None:
    """The package in a models-folder entry, its problem, or None for what is no package."""
    try:
        if not (candidate / CARD_FILE).is_file():
            return None
    except OSError as exc:  # a folder we may not enter
        return PackageProblem(candidate, f"cannot be read ({exc.strerror or exc})")
    except ValueError:  # a name no file can have (a NUL byte)
        return None
    try:
        return open_package(candidate, source)
    except CrossEarthError as exc:
        return PackageProblem(candidate, _problem_text(exc, candidate))
    except ImportError:  # the engine's environment lacks a module: no package's fault
        raise
    except Exception as exc:  # one odd folder must never break the list of the others
        return PackageProblem(candidate, f"cannot be read ({type(exc).__name__}: {exc})")


def list_packages() -> tuple[list[ModelPackage], list[PackageProblem]]:
    """All installed packages, and one problem per folder that looks like a broken package."""
    packages: list[ModelPackage] = []
    problems: list[PackageProblem] = []
    for folder, source in _search_dirs():
        try:
            if not folder.is_dir():
                continue
            entries = sorted(folder.iterdir())
        except OSError as exc:
            problems.append(
                PackageProblem(folder, f"the models folder cannot be read ({exc.strerror or exc})")
            )
            continue
        for candidate in entries:
            # Hidden entries are copies and packages still being written (ours start with '.').
            if candidate.name.startswith("."):
                continue
            found = _open_listed(candidate, source)
            if isinstance(found, ModelPackage):
                packages.append(found)
            elif found is not None:
                problems.append(found)
    return packages, problems


def default_model_name() -> str | None:
    """The name of the bundled default model, or None when none is marked."""
    marker = bundled_models_dir() / DEFAULT_MODEL_FILE
    if marker.is_file():
        return marker.read_text(encoding="utf-8").strip() or None
    return None


def find_package(name_or_path: str | os.PathLike[str] | None) -> ModelPackage:
    """Resolves a package path or an installed package's name (None = the bundled default)."""
    if name_or_path is None or str(name_or_path) == "":
        default = default_model_name()
        if default is None:
            raise ModelError(
                "no bundled default model is installed; choose a model package folder or the "
                "name of an installed model as the model",
                code=MODEL_NO_DEFAULT,
                option="model",
            )
        name_or_path = default
    candidate = Path(name_or_path).expanduser()
    try:
        exists = candidate.exists()
    except (OSError, ValueError):
        exists = False
    if exists:
        return open_package(candidate)
    name = str(name_or_path)
    broken: PackageProblem | None = None
    for folder, source in _search_dirs():
        found = _open_listed(folder / name, source)
        if isinstance(found, ModelPackage):
            return found
        broken = broken or found
    packages, problems = list_packages()
    for package in packages:
        if package.card.name == name:
            return package
    if broken is not None:
        raise ModelError(
            f"installed model '{name}' is broken: {broken}; reinstall it or remove the folder",
            code=MODEL_BROKEN,
            name=name,
        )
    known = ", ".join(sorted(p.card.name for p in packages)) or "none installed"
    skipped = (
        f"; {len(problems)} broken package(s) skipped, see 'crossearth models'" if problems else ""
    )
    raise ModelError(
        f"model '{name}' not found: it is neither a package folder nor an installed model "
        f"(installed: {known}){skipped}",
        code=MODEL_NOT_FOUND,
        name=name,
        installed=sorted(p.card.name for p in packages),
        broken=len(problems),
        option="model",
    )


def output_folder(destination: Path | str) -> Path:
    """The absolute path of a package folder to write; it must name a folder (not '.', '..'
    or a root)."""
    destination = Path(destination).expanduser()
    if destination.name in ("", ".", ".."):
        raise CrossEarthError(
            f"{describe_path(destination)} does not name a new folder; give the package folder's "
            "name, e.g. models/my-model"
        )
    return destination.absolute()


def file_in_the_way(folder: Path) -> Path | None:
    """The nearest existing parent of `folder` when it is a file (the folder cannot be made
    there), else None."""
    for parent in Path(folder).absolute().parents:
        if os.path.lexists(parent):
            return None if parent.is_dir() else parent
    return None


def replace_problem(destination: Path) -> str | None:
    """Why an existing `destination` must not be replaced by a new package (None: it may).

    Only a package this tool wrote may go: a folder with exactly model.json and
    weights.safetensors (and the model.onnx an export adds) whose card reads. An empty folder
    holds nothing to lose."""
    shown = describe_path(destination)
    refuse = "it will not be replaced: choose another name or remove it yourself"
    if destination.is_symlink():
        return f"{shown} is a symbolic link, not a model package folder; {refuse}"
    if not destination.is_dir():
        return f"{shown} is a file, not a model package folder; {refuse}"
    try:
        names = sorted(os.listdir(destination))
    except OSError as exc:
        return f"{shown} cannot be read ({exc.strerror or exc}); {refuse}"
    foreign = [n for n in names if n not in (CARD_FILE, WEIGHTS_FILE, ONNX_FILE)]
    if foreign:
        return (
            f"{shown} holds {describe_path(foreign[0])}, which is not part of a model package; "
            f"{refuse}"
        )
    if not names:
        return None
    for name in (CARD_FILE, WEIGHTS_FILE, ONNX_FILE):
        item = destination / name
        if name not in names:
            if name == ONNX_FILE:
                continue  # optional
            return f"{shown} has no {name}, so it is not a model package; {refuse}"
        if item.is_symlink() or not item.is_file():
            return (
                f"{describe_path(item)} is not a plain file, so {shown} is not a package; {refuse}"
            )
    try:
        read_card(destination / CARD_FILE)
    except CrossEarthError as exc:
        return (
            f"{shown} is not a model package this tool wrote ({_problem_text(exc, destination)}); "
            f"{refuse}"
        )
    return None


def check_package_output(
    destination: Path | str,
    *,
    overwrite: bool,
    inputs: Iterable[Path | str | None] = (),
    choose: str = "choose another name",
) -> Path:
    """Checks, before any work, that a package may be written to `destination`: it is none of
    the run's `inputs`, holds none and lies in none of them, and it is new, or `overwrite` is
    given and it is a package this tool wrote. Returns its absolute path."""
    destination = output_folder(destination)
    shown = describe_path(destination)
    for source in inputs:
        if source is None or str(source) == "":
            continue
        source = Path(source).expanduser()
        if same_file(source, destination):
            raise CrossEarthError(
                f"the output {shown} is the input {describe_path(source)}; choose another output "
                "folder"
            )
        if is_within(source, destination):
            raise CrossEarthError(
                f"the output {shown} contains the input {describe_path(source)}; choose an output "
                "folder that holds none of the inputs"
            )
        if is_within(destination, source):
            raise CrossEarthError(
                f"the output {shown} lies inside the input {describe_path(source)}; choose an "
                "output folder outside it"
            )
    blocking = file_in_the_way(destination)
    if blocking is not None:
        raise CrossEarthError(
            f"the output {shown} cannot be made: {describe_path(blocking)} is a file, not a "
            "folder; choose another output folder"
        )
    if not os.path.lexists(destination):
        return destination
    if not overwrite:
        raise OutputError(
            f"{shown} already exists; remove it, {choose} or allow overwrite (only a model "
            "package this tool wrote is ever replaced)",
            code=PACKAGE_EXISTS,
            path=shown,
            choose=choose,
            option="overwrite",
        )
    problem = replace_problem(destination)
    if problem is not None:
        raise CrossEarthError(problem)
    return destination


def _remove_replaced(old: Path) -> None:
    """Removes a replaced package: its known files and the folder, nothing else."""
    for name in (CARD_FILE, WEIGHTS_FILE, ONNX_FILE):
        with contextlib.suppress(OSError):
            (old / name).unlink()
    with contextlib.suppress(OSError):
        old.rmdir()


def _move_into_place(staging: Path, destination: Path) -> None:
    """Renames the finished `staging` folder to `destination`, swapping out an existing
    package of ours (kept until the new one is in place, and put back if that fails)."""
    if not os.path.lexists(destination):
        publish(staging, destination)
        return
    # Checked again: a training run writes its package hours after the first check.
    problem = replace_problem(destination)
    if problem is not None:
        raise CrossEarthError(problem)
    old = temporary_name(destination)
    try:
        os.rename(destination, old)
    except OSError as exc:
        raise write_error(destination, exc) from None
    try:
        give_ordinary_permissions(staging)
        os.rename(staging, destination)
    except OSError as exc:
        try:
            os.rename(old, destination)
        except OSError:
            raise CrossEarthError(
                f"cannot write {describe_path(destination)} ({exc.strerror or exc}); the previous "
                f"package was kept as {describe_path(old)}: rename it back"
            ) from None
        raise write_error(destination, exc) from None
    forget_temporary(staging)
    _remove_replaced(old)


def save_package(
    destination: Path,
    card: ModelCard,
    state_dict: Mapping[str, torch.Tensor],
    overwrite: bool = False,
    inputs: Iterable[Path | str | None] = (),
) -> ModelPackage:
    """Writes a package folder (model.json + weights.safetensors) atomically: it is assembled in
    a temporary folder beside the destination and renamed into place when complete. With
    `overwrite`, an existing package this tool wrote is replaced; nothing else ever is."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    destination = check_package_output(destination, overwrite=overwrite, inputs=inputs)
    if not destination.parent.is_dir():
        raise CrossEarthError(
            f"folder {describe_path(destination.parent)} does not exist; create it first"
        )
    # Never write a card that would not read back.
    card_from_dict(card.to_json_dict(), where=f"the card for {describe_path(destination)}")
    # What a killed earlier run (SIGKILL cannot clean up) left here, a day old or more.
    for leftover in remove_stale_temporaries(destination.parent):
        log.warning("removed %s, left by an interrupted earlier run", describe_path(leftover))
    staging = create_temporary_folder(destination)
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
        weights = staging / WEIGHTS_FILE
        try:
            save_file(tensors, str(weights), metadata={"format": "pt"})
        except (OSError, SafetensorError) as exc:
            raise write_error(destination / WEIGHTS_FILE, exc) from None
        give_ordinary_permissions(weights)
        card.save(staging / CARD_FILE)
        _move_into_place(staging, destination)
    except BaseException:
        remove_temporary(staging)
        raise
    return open_package(destination)
