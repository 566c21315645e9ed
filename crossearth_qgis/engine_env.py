"""Where the engine runs: its Python interpreter, its code, and creating that environment.

torch never loads inside QGIS. The engine runs as a worker process with its own interpreter,
found in this order:
1. the environment variable CROSSEARTH_PYTHON (scripts, CI, qgis_process);
2. the interpreter chosen in Settings > Options > CrossEarth;
3. in a development checkout, the repository's .venv;
4. auto-detection: the environment "Set up engine environment" creates, then python3 on PATH,
   whichever has the engine's modules.
The engine's code comes from the plugin's runtime/ folder (zip installs) or, in a development
checkout, from the folder that holds both crossearth_qgis/ and engine/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import settings
from .process import run_streaming
from .requirements import LIGHT_REQUIREMENTS_FILE, REQUIREMENTS_FILE, requirements_text

ENV_VAR = "CROSSEARTH_PYTHON"
PLUGIN_DIR = Path(__file__).resolve().parent
RUNTIME_DIR = PLUGIN_DIR / "runtime"
# What the worker imports; checked by auto-detection without importing anything heavy.
# A full engine (PyTorch: every command, CUDA) or a light one (ONNX Runtime: segmenting with
# packages that carry an ONNX graph, on the CPU); an interpreter with either set is usable.
REQUIRED_MODULES = ("torch", "timm", "safetensors", "rasterio", "numpy", "pydantic")
LIGHT_MODULES = ("onnxruntime", "rasterio", "numpy", "pydantic", "tqdm")

SETUP_HINT = (
    "open Settings > Options > CrossEarth and click 'Set up engine environment' (or choose an "
    "existing Python with PyTorch there, or set CROSSEARTH_PYTHON)"
)


class EngineEnvironmentError(Exception):
    """The engine's interpreter or code cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Interpreter:
    python: Path
    source: str  # "CROSSEARTH_PYTHON", "settings", "development checkout", "auto-detected"

    def describe(self) -> str:
        return f"{self.python} ({self.source})"


def engine_code_dir() -> Path | None:
    """The folder to put on the worker's PYTHONPATH (it holds engine/)."""
    if (RUNTIME_DIR / "engine").is_dir():
        return RUNTIME_DIR
    if (PLUGIN_DIR.parent / "engine").is_dir():
        return PLUGIN_DIR.parent
    return None


def is_development_checkout() -> bool:
    return engine_code_dir() == PLUGIN_DIR.parent


def venv_python(venv: Path) -> Path:
    if sys.platform == "win32":
        return Path(venv) / "Scripts" / "python.exe"
    return Path(venv) / "bin" / "python"


def user_data_dir() -> Path:
    """The same per-user data folder the engine keeps its models under."""
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))


def default_venv_dir() -> Path:
    return Path(settings.get(settings.VENV_DIR) or user_data_dir() / "crossearth" / "venv")


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
            env=_clean_python_env(),
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )
        missing = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        raise EngineEnvironmentError(f"{python} does not run as a Python interpreter") from None
    if not missing:
        _complete.add(key)
    return list(missing)


def auto_detect() -> Interpreter | None:
    """The first candidate interpreter that has every engine module."""
    candidates: list[Path] = [venv_python(default_venv_dir())]
    for name in ("python3", "python"):
        found = shutil.which(name)
        if found:
            candidates.append(Path(found))
    seen: set[str] = set()
    for candidate in candidates:
        if str(candidate) in seen or not _is_interpreter(candidate):
            continue
        seen.add(str(candidate))
        try:
            if not missing_modules(candidate):
                return Interpreter(candidate, "auto-detected")
        except EngineEnvironmentError:
            continue
    return None


def resolve_interpreter(configured: str | None = None) -> Interpreter:
    """The engine interpreter to use now (see the module docstring for the order).

    `configured` overrides the value saved in the settings (the options page passes what the
    user typed before saving). Raises EngineEnvironmentError with the fix when there is none.
    """
    from_env = os.environ.get(ENV_VAR, "").strip()
    if from_env:
        path = Path(from_env).expanduser()
        if not _is_interpreter(path):
            raise EngineEnvironmentError(
                f"The CrossEarth engine environment is missing: {ENV_VAR} names {path}, which "
                f"is not a Python interpreter on this computer. Point {ENV_VAR} at the engine's "
                "python, or unset it to use the one chosen in Settings > Options > CrossEarth."
            )
        return Interpreter(path, ENV_VAR)
    chosen = (settings.get(settings.PYTHON) if configured is None else configured).strip()
    if chosen:
        path = Path(chosen).expanduser()
        if not _is_interpreter(path):
            raise EngineEnvironmentError(
                f"The CrossEarth engine environment is missing: the Python chosen in Settings > "
                f"Options > CrossEarth ({path}) does not exist anymore. Choose another one there "
                "or click 'Set up engine environment'."
            )
        return Interpreter(path, "settings")
    dev = dev_checkout_python()
    if dev is not None:
        return Interpreter(dev, "development checkout")
    found = auto_detect()
    if found is not None:
        return found
    raise EngineEnvironmentError(
        "The CrossEarth engine environment is missing: no Python with PyTorch and the engine's "
        f"requirements was found. To create one, {SETUP_HINT}."
    )


def _clean_python_env() -> dict[str, str]:
    """The environment without QGIS's own Python settings, which belong to another Python."""
    env = dict(os.environ)
    for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE"):
        env.pop(key, None)
    return env


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
    env = _clean_python_env()
    env["PYTHONPATH"] = str(worker_directory())
    env["PYTHONUNBUFFERED"] = "1"  # progress lines must arrive while the worker runs
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def engine_command(python: Path, args: list[str]) -> list[str]:
    return [str(python), "-m", "engine.cli", *args]


# --- creating an engine environment ---------------------------------------------------------


def requirements_file(kind: str = "full") -> Path:
    """The requirements of a full or light engine environment: runtime/requirements.txt (or
    requirements-light.txt) in a zip install; written from pyproject.toml in a checkout."""
    name = LIGHT_REQUIREMENTS_FILE if kind == "light" else REQUIREMENTS_FILE
    shipped = RUNTIME_DIR / name
    if shipped.is_file():
        return shipped
    pyproject = PLUGIN_DIR.parent / "pyproject.toml"
    if not pyproject.is_file():
        raise EngineEnvironmentError(
            f"The engine's requirements list is missing ({shipped}); reinstall the plugin."
        )
    target = Path(tempfile.gettempdir()) / f"crossearth-{name}"
    target.write_text(requirements_text(pyproject, kind), encoding="utf-8")
    return target


def base_python() -> Path:
    """A plain Python to create the venv with (inside QGIS, sys.executable is QGIS itself)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    executable = Path(sys.executable)
    candidates = [executable] if executable.name.lower().startswith("python") else []
    base = Path(sys.base_prefix)
    candidates += [
        base / "bin" / f"python{version}",
        base / "bin" / "python3",
        base / "python.exe",  # Windows (OSGeo4W / standalone installer)
        base / "python3.exe",
    ]
    for name in (f"python{version}", "python3", "python"):
        found = shutil.which(name)
        if found:
            candidates.append(Path(found))
    for candidate in candidates:
        if _is_interpreter(candidate):
            return candidate
    raise EngineEnvironmentError(
        "No Python was found to create the engine environment with; install Python 3 "
        "(with its venv module) or choose an existing engine Python in the options."
    )


class PipProgress:
    """Turns pip's output lines into a rising fraction and a short status message."""

    def __init__(self, requirement_count: int) -> None:
        self.expected = max(1, requirement_count) * 3  # pip also fetches their dependencies
        self.seen = 0
        self.fraction = 0.0

    def update(self, line: str) -> str | None:
        text = line.strip()
        message = None
        if text.startswith(("Collecting ", "Requirement already satisfied: ")):
            self.seen += 1
            name = text.split(" ", 1)[1] if text.startswith("Collecting") else text.split(": ")[1]
            message = f"resolving {name.split()[0]}"
            target = 0.1 + 0.5 * min(1.0, self.seen / self.expected)
        elif text.startswith("Downloading "):
            message = text.split("(")[0].strip().replace("Downloading ", "downloading ")
            target = min(0.8, max(self.fraction, 0.5) + 0.02)
        elif text.startswith("Installing collected packages"):
            message = "installing packages (this takes a while for PyTorch)"
            target = 0.85
        elif text.startswith("Successfully installed"):
            message = "installed"
            target = 1.0
        else:
            return None
        self.fraction = max(self.fraction, target)
        return message


def setup_environment(
    venv_dir: Path,
    progress: Callable[[float, str], None],
    output: Callable[[str], None],
    is_cancelled: Callable[[], bool] = lambda: False,
    requirements: Path | None = None,
) -> Path:
    """Creates (or completes) a venv at `venv_dir` and installs the engine requirements.

    `progress(fraction, message)` gets the stage, `output(line)` every line of venv/pip output.
    Returns the venv's python. Raises EngineEnvironmentError in plain words, or
    process.ProcessCancelled.
    """
    venv_dir = Path(venv_dir).expanduser()
    requirements = requirements or requirements_file()
    python = venv_python(venv_dir)
    env = _clean_python_env()
    if not _is_interpreter(python):
        base = base_python()
        progress(0.02, f"creating the environment in {venv_dir}")
        venv_dir.parent.mkdir(parents=True, exist_ok=True)
        # System site packages: on Linux, rasterio/GDAL come from the system and match QGIS's.
        code = run_streaming(
            [base, "-m", "venv", "--system-site-packages", venv_dir],
            env=env,
            on_stdout=output,
            on_stderr=output,
            is_cancelled=is_cancelled,
        )
        if code != 0 or not _is_interpreter(python):
            raise EngineEnvironmentError(
                f"Creating the engine environment in {venv_dir} failed (python -m venv exit code "
                f"{code}). On Debian/Ubuntu install the python3-venv package; details are in the "
                "CrossEarth log."
            )
    count = sum(
        1
        for line in requirements.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    tracker = PipProgress(count)
    progress(0.1, f"installing {count} engine requirements with pip")
    errors: list[str] = []

    def pip_line(line: str) -> None:
        output(line)
        if line.startswith("ERROR:"):
            errors.append(line[len("ERROR:") :].strip())
        message = tracker.update(line)
        if message:
            progress(tracker.fraction, message)

    code = run_streaming(
        [
            python,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "-r",
            requirements,
        ],
        env=env,
        on_stdout=pip_line,
        on_stderr=pip_line,
        is_cancelled=is_cancelled,
    )
    if code != 0:
        reason = errors[-1] if errors else f"pip exit code {code}"
        raise EngineEnvironmentError(
            f"Installing the engine requirements failed: {reason}. Check the internet "
            "connection (or proxy) and the free disk space (PyTorch needs about 3 GB); pip's "
            "full output is in the CrossEarth log."
        )
    progress(1.0, "the engine environment is ready")
    return python
