"""Where the engine runs: its Python interpreter and its code.

torch never loads inside QGIS. The engine runs as a worker process with its own interpreter,
found in this order:
1. the environment variable CROSSEARTH_PYTHON (scripts, CI, qgis_process);
2. the interpreter chosen in Settings > Options > CrossEarth;
3. in a development checkout, the repository's .venv;
4. the environment "Set up engine environment" made, once its set-up has completed.
Nothing else is picked up by itself (a python3 on PATH may be anything: pyenv, conda, ...).
An environment whose set-up did not finish is never used: its record says so, and the message
says to run the set-up again. Creating environments is engine_setup's job.
The engine's code comes from the plugin's runtime/ folder (zip installs) or, in a development
checkout, from the folder that holds both crossearth_qgis/ and engine/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import settings
from .engine_setup import (
    PLUGIN_DIR,
    clean_python_env,
    engine_code_dir,
    half_built,
    read_record,
    venv_python,
)

ENV_VAR = "CROSSEARTH_PYTHON"
# What the worker imports; checked without importing anything heavy.
# A full engine (PyTorch: every command, CUDA) or a light one (ONNX Runtime: segmenting with
# packages that carry an ONNX graph, on the CPU); an interpreter with either set is usable.
REQUIRED_MODULES = ("torch", "timm", "safetensors", "rasterio", "numpy", "pydantic")
LIGHT_MODULES = ("onnxruntime", "rasterio", "numpy", "pydantic", "tqdm")

SETUP_HINT = (
    "open Settings > Options > CrossEarth and click 'Set up engine environment' (or choose an "
    "existing engine Python there, or set CROSSEARTH_PYTHON)"
)


class EngineEnvironmentError(Exception):
    """The engine's interpreter or code cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Interpreter:
    python: Path
    source: str  # "CROSSEARTH_PYTHON", "settings", "development checkout", "auto-detected"

    def describe(self) -> str:
        return f"{self.python} ({self.source})"


def is_development_checkout() -> bool:
    return engine_code_dir() == PLUGIN_DIR.parent


def user_data_dir() -> Path:
    """The same per-user data folder the engine keeps its models under."""
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))


def default_venv_dir() -> Path:
    """Where "Set up engine environment" makes the environment (a folder of its own: earlier
    versions' `crossearth/venv`, which saw the system's packages, is left as it is)."""
    return Path(settings.get(settings.VENV_DIR) or user_data_dir() / "crossearth" / "engine")


def _is_interpreter(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def dev_checkout_python() -> Path | None:
    if not is_development_checkout():
        return None
    candidate = venv_python(PLUGIN_DIR.parent / ".venv")
    return candidate if _is_interpreter(candidate) else None


# Interpreters found complete (path, mtime); an incomplete one is probed again each time,
# since packages may be installed into it meanwhile.
_complete: set[tuple[str, float]] = set()


def missing_modules(python: Path, timeout_s: float = 30.0) -> list[str]:
    """Engine modules the interpreter cannot import (found by import spec, nothing loaded):
    none when it has a full (PyTorch) or a light (ONNX Runtime) engine, else the full one's.

    Raises EngineEnvironmentError when the interpreter does not run at all.
    """
    python = Path(python)
    try:
        key = (str(python), python.stat().st_mtime)
    except OSError:
        raise EngineEnvironmentError(f"{python} does not exist") from None
    if key in _complete:
        return []
    code = (
        "import importlib.util, json; "
        f"full = [m for m in {list(REQUIRED_MODULES)!r} if importlib.util.find_spec(m) is None]; "
        f"light = [m for m in {list(LIGHT_MODULES)!r} if importlib.util.find_spec(m) is None]; "
        "print(json.dumps([] if not light else full))"
    )
    try:
        done = subprocess.run(
            [str(python), "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=clean_python_env(),
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )
        missing = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        raise EngineEnvironmentError(f"{python} does not run as a Python interpreter") from None
    if not missing:
        _complete.add(key)
    return list(missing)


def auto_detect() -> Interpreter | None:
    """The environment "Set up engine environment" made, if its set-up completed."""
    folder = default_venv_dir()
    record = read_record(folder)
    candidate = venv_python(folder)
    if record is None or not record.ready or not _is_interpreter(candidate):
        return None
    try:
        if not missing_modules(candidate):
            return Interpreter(candidate, "auto-detected")
    except EngineEnvironmentError:
        return None
    return None


def _refuse_half_built(path: Path, where: str) -> None:
    record = half_built(path)
    if record is not None:
        raise EngineEnvironmentError(
            f"The CrossEarth engine environment is not complete: {where} ({path}) belongs to a "
            f"{record.kind} set-up that did not finish. Open Settings > Options > CrossEarth and "
            "click 'Set up engine environment' again to complete it."
        )


def resolve_interpreter(configured: str | None = None) -> Interpreter:
    """The engine interpreter to use now (see the module docstring for the order).

    `configured` overrides the value saved in the settings (the options page passes what the
    user typed before saving). Raises EngineEnvironmentError with the fix when there is none.
    """
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        return _chosen_interpreter(
            from_env,
            ENV_VAR,
            ENV_VAR,
            f"{ENV_VAR} names {{path}}, which is not a Python interpreter on this computer. "
            f"Point {ENV_VAR} at the engine's python, or unset it to use the one chosen in "
            "Settings > Options > CrossEarth.",
        )
    chosen = (settings.get(settings.PYTHON) if configured is None else configured).strip()
    if chosen:
        return _chosen_interpreter(
            chosen,
            "settings",
            "the Python chosen in Settings > Options > CrossEarth",
            "the Python chosen in Settings > Options > CrossEarth ({path}) does not exist "
            "anymore. Choose another one there or click 'Set up engine environment'.",
        )
    dev = dev_checkout_python()
    if dev is not None:
        return Interpreter(dev, "development checkout")
    found = auto_detect()
    if found is not None:
        return found
    raise EngineEnvironmentError(
        "The CrossEarth engine environment is missing: no engine environment has been set up "
        f"yet. To create one, {SETUP_HINT}."
    )


def _chosen_interpreter(text: str, source: str, named_by: str, missing: str) -> Interpreter:
    """The interpreter the user named (`source`: where), refused with `missing` (its {path}
    filled in) when it is not there, and when its environment is half-built."""
    path = Path(text).expanduser()
    if not _is_interpreter(path):
        raise EngineEnvironmentError(
            "The CrossEarth engine environment is missing: " + missing.format(path=path)
        )
    _refuse_half_built(path, named_by)
    return Interpreter(path, source)


def worker_directory() -> Path:
    """The worker's working directory: the folder holding the engine's code.

    `python -m` puts the working directory first on sys.path, so this is also what makes the
    worker import the engine beside the plugin, and not an `engine` folder wherever QGIS was
    started or an engine installed into the interpreter (an editable install, say).
    """
    code = engine_code_dir()
    if code is None:
        raise EngineEnvironmentError(
            f"The plugin's engine code is missing: {PLUGIN_DIR} has no runtime/ folder. "
            "Reinstall the plugin from its zip file."
        )
    return code


def worker_environment() -> dict[str, str]:
    """Environment of an engine worker: the engine code importable, output unbuffered."""
    env = clean_python_env()
    env["PYTHONPATH"] = str(worker_directory())
    env["PYTHONUNBUFFERED"] = "1"  # progress lines must arrive while the worker runs
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def engine_command(python: Path, args: list[str]) -> list[str]:
    return [str(python), "-m", "engine.cli", *args]
