"""The model packages the engine can see, asked from the engine itself (`models --json`).

The plugin never reads the engine's Python code: the worker answers, so the dock, the
algorithms and the command line always agree on which models exist and where.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engine_env import Interpreter, resolve_interpreter, worker_directory, worker_environment
from .process import run_streaming
from .worker import EngineError, run_engine_json

LIST_MODELS_ARGS = ["models", "--json"]
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


@dataclass
class ModelCatalog:
    models: list[ModelEntry] = field(default_factory=list)
    user_dir: str = ""
    bundled_dir: str = ""
    default: str | None = None
    problems: list[str] = field(default_factory=list)

    def find(self, key: str) -> ModelEntry | None:
        for entry in self.models:
            if key in (entry.path, entry.name):
                return entry
        return None


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
    """The official checkpoints the converter knows (a plain-data table; no torch import)."""
    interpreter = interpreter or resolve_interpreter()
    lines: list[str] = []
    errors: list[str] = []
    code = run_streaming(
        [
            interpreter.python,
            "-c",
            "import json; from engine.crossearth.presets import CHECKPOINTS; "
            "print(json.dumps(sorted(CHECKPOINTS)))",
        ],
        env=worker_environment(),
        cwd=worker_directory(),
        on_stdout=lines.append,
        on_stderr=errors.append,
        timeout_s=120,
    )
    if code != 0:
        raise EngineError(
            "The engine could not list the official checkpoints it converts.", "\n".join(errors)
        )
    return list(json.loads(lines[-1]))


def is_package(folder: Path) -> bool:
    return (Path(folder) / CARD_FILE).is_file() and (Path(folder) / WEIGHTS_FILE).is_file()


def install_package(folder: Path, user_dir: Path) -> Path:
    """Copies a model package folder into the user models folder, where every tool finds it."""
    folder = Path(folder)
    if not is_package(folder):
        raise EngineError(
            f"{folder} is not a model package: a package folder holds {CARD_FILE} and "
            f"{WEIGHTS_FILE}. For an official .pth checkpoint choose the file itself."
        )
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
