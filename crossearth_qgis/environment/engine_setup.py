"""Creating, completing and growing an engine environment: a self-contained venv of PyPI wheels.

The environment never sees the system's site packages: rasterio and pyogrio bring their own
GDAL, so nothing from QGIS's Python (osgeo, numpy) leaks in and a pyenv, conda or Homebrew
Python gives the same environment as the system's. It is made in steps, each checked:

1. the folder is new, empty, or an environment this plugin made (its record says so);
2. `python -m venv` with the chosen base interpreter (engine_setup never picks one itself);
3. enough free disk for the kind (Light or Full), checked before pip downloads anything;
4. `pip install -r <requirements of the kind>`, with a failure explained by pip_errors;
5. the engine's own `check --json` run with the new interpreter: the environment works;
6. the record `.crossearth-engine.json` set to "ready".

The record is written "installing" before pip runs, so a half-built environment is recognised
(never selected, never auto-detected) and a re-run completes it. Growing Light into Full is a
re-run with the Full requirements in the same folder.

Qt-free: the options page's task runs it, and so do `make setup` and the QGIS-version matrix
(`python -m crossearth_qgis.environment.engine_setup --kind light DIR`), so every environment
the tests use is made exactly as the plugin makes it for a user.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..worker.process import ProcessCancelled, run_streaming
from . import base_python, pip_errors
from .requirements import LIGHT_REQUIREMENTS_FILE, REQUIREMENTS_FILE, requirements_text

PLUGIN_DIR = Path(__file__).resolve().parents[1]
RUNTIME_DIR = PLUGIN_DIR / "runtime"
RECORD = ".crossearth-engine.json"
KINDS = ("light", "full")
INSTALLING, READY = "installing", "ready"

# Disk a set-up needs while it runs (the environment, pip's downloads and unpacked wheels),
# from the sizes measured on Linux x86_64 (the README's table): Light 0.33 GB installed,
# Full 6.0 GB (PyPI's PyTorch is a CUDA build).
NEEDED_BYTES = {"light": int(1.0e9), "full": int(12e9)}
# Measured on Linux, 2026-12-07, on Python 3.11, 3.13 and 3.14 (README, Tested QGIS versions).
SIZE_TEXT = {"light": "about 410 MB", "full": "about 6.6 GB (PyTorch with CUDA)"}
WHAT_IT_INSTALLS = {
    "light": "numpy, rasterio, pyogrio, shapely, pydantic and ONNX Runtime: segments on the "
    "CPU with models that carry an ONNX graph (the bundled one does)",
    "full": "the Light set and PyTorch, timm, SciPy, Ray and the Hugging Face client: GPUs, "
    "fine-tuning, official checkpoints and every model",
}

ProgressCallback = Callable[[float, str], None]


class EngineSetupError(Exception):
    """The set-up failed; the message is one line with the cause and the fix."""


@dataclass
class EnvironmentRecord:
    """What `.crossearth-engine.json` says about an environment this plugin made."""

    kind: str
    state: str
    python: str  # the base interpreter's version, e.g. "3.13.5"
    base: str  # the base interpreter it was made with
    requirements_sha256: str = ""
    size_bytes: int = 0
    capabilities: dict[str, Any] = field(default_factory=dict)  # `check --json` of the engine
    updated: str = ""

    @property
    def ready(self) -> bool:
        return self.state == READY


def venv_python(venv: Path) -> Path:
    if sys.platform == "win32":
        return Path(venv) / "Scripts" / "python.exe"
    return Path(venv) / "bin" / "python"


def venv_of(python: Path) -> Path | None:
    """The environment folder a venv interpreter belongs to (None for other interpreters)."""
    python = Path(python)
    folder = python.parent.parent
    return folder if (folder / "pyvenv.cfg").is_file() else None


def read_record(venv_dir: Path) -> EnvironmentRecord | None:
    """The record of an environment this plugin made, or None (none, or unreadable)."""
    try:
        data = json.loads((Path(venv_dir) / RECORD).read_text(encoding="utf-8"))
        return EnvironmentRecord(**{k: data[k] for k in data if k in _RECORD_FIELDS})
    except (OSError, ValueError, TypeError, KeyError):
        return None


_RECORD_FIELDS = set(EnvironmentRecord.__dataclass_fields__)


def write_record(venv_dir: Path, record: EnvironmentRecord) -> None:
    """Written under a temporary name and renamed, so a reader never sees half a record."""
    record.updated = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    target = Path(venv_dir) / RECORD
    temp = target.with_name(f".{RECORD}.{os.getpid()}.tmp")
    try:
        temp.write_text(json.dumps(asdict(record), indent=2), encoding="utf-8")
        os.replace(temp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise EngineSetupError(f"cannot write {target} ({exc.strerror or exc})") from None


def half_built(python: Path) -> EnvironmentRecord | None:
    """The record of the environment `python` belongs to, if that set-up did not finish."""
    folder = venv_of(python)
    record = read_record(folder) if folder is not None else None
    return record if record is not None and not record.ready else None


def clean_python_env() -> dict[str, str]:
    """The environment without QGIS's own Python settings, which belong to another Python."""
    env = dict(os.environ)
    for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE"):
        env.pop(key, None)
    return env


def requirements_file(kind: str = "full") -> Path:
    """The requirements of a full or light engine environment: runtime/requirements.txt (or
    requirements-light.txt) in a zip install; written from pyproject.toml in a checkout."""
    if kind not in KINDS:
        raise ValueError(f"unknown environment kind {kind!r}")
    name = LIGHT_REQUIREMENTS_FILE if kind == "light" else REQUIREMENTS_FILE
    shipped = RUNTIME_DIR / name
    if shipped.is_file():
        return shipped
    pyproject = PLUGIN_DIR.parent / "pyproject.toml"
    if not pyproject.is_file():
        raise EngineSetupError(
            f"the engine's requirements list is missing ({shipped}); reinstall the plugin"
        )
    target = Path(tempfile.gettempdir()) / f"crossearth-{os.getpid()}-{name}"
    target.write_text(requirements_text(pyproject, kind), encoding="utf-8")
    return target


def engine_code_dir() -> Path | None:
    """The folder holding engine/: the plugin's runtime/ (zip installs) or the checkout."""
    if (RUNTIME_DIR / "engine").is_dir():
        return RUNTIME_DIR
    if (PLUGIN_DIR.parent / "engine").is_dir():
        return PLUGIN_DIR.parent
    return None


def folder_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _check_target(venv_dir: Path) -> EnvironmentRecord | None:
    """The folder's record when it is ours; None when it is new or empty. Anything else is
    refused: the set-up never writes into a folder it did not make."""
    if not venv_dir.exists():
        return None
    if not venv_dir.is_dir():
        raise EngineSetupError(f"{venv_dir} is a file; choose a folder for the environment")
    record = read_record(venv_dir)
    if record is not None:
        return record
    if any(venv_dir.iterdir()):
        raise EngineSetupError(
            f"{venv_dir} already holds files that this plugin did not put there; choose an empty "
            "or new folder for the engine environment"
        )
    return None


def _check_free_space(venv_dir: Path, kind: str) -> None:
    existing = venv_dir if venv_dir.exists() else venv_dir.parent
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    needed = NEEDED_BYTES[kind]
    if free < needed:
        raise EngineSetupError(
            f"the {kind} engine environment needs about {needed / 1e9:.1f} GB of free disk while "
            f"it is set up, but the disk of {existing} has {free / 1e9:.1f} GB free; free some "
            "space or choose a folder on another disk"
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _requirement_count(requirements: Path) -> int:
    return sum(
        1
        for line in requirements.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )


class PipProgress:
    """Turns pip's output lines into a rising fraction and a short status message."""

    def __init__(self, requirement_count: int, start: float, end: float) -> None:
        self.expected = max(1, requirement_count) * 3  # pip also fetches their dependencies
        self.start, self.end = start, end
        self.seen = 0
        self.fraction = start

    def _at(self, share: float) -> float:
        return self.start + (self.end - self.start) * share

    def update(self, line: str) -> str | None:
        text = line.strip()
        if text.startswith(("Collecting ", "Requirement already satisfied: ")):
            self.seen += 1
            name = text.split(" ", 1)[1] if text.startswith("Collecting") else text.split(": ")[1]
            message = f"resolving {name.split()[0]}"
            target = self._at(0.5 * min(1.0, self.seen / self.expected))
        elif text.startswith("Downloading "):
            message = text.split("(")[0].strip().replace("Downloading ", "downloading ")
            target = min(self._at(0.8), max(self.fraction, self._at(0.5)) + 0.02)
        elif text.startswith("Installing collected packages"):
            packages = [p.strip() for p in text.split(":", 1)[1].split(",")]
            slow = " (PyTorch takes a while)" if "torch" in packages else ""
            message = f"installing {len(packages)} packages{slow}"
            target = self._at(0.85)
        elif text.startswith("Successfully installed"):
            message = "installed"
            target = self._at(1.0)
        else:
            return None
        self.fraction = max(self.fraction, target)
        return message


def setup_environment(
    venv_dir: Path,
    kind: str,
    base: base_python.BasePython,
    progress: ProgressCallback,
    output: Callable[[str], None],
    is_cancelled: Callable[[], bool] = lambda: False,
    requirements: Path | None = None,
) -> Path:
    """Creates (or completes, or grows into `kind`) the engine environment at `venv_dir` and
    returns its python. Raises EngineSetupError (one line: cause and fix) or ProcessCancelled;
    the environment is marked ready only at the very end."""
    if kind not in KINDS:
        raise EngineSetupError(f"unknown environment kind '{kind}'; use light or full")
    venv_dir = Path(venv_dir).expanduser().absolute()
    requirements = requirements or requirements_file(kind)
    record = _check_target(venv_dir)
    python = venv_python(venv_dir)
    env = clean_python_env()
    _check_free_space(venv_dir, kind)
    if record is None or not python.is_file():
        progress(0.02, f"creating the environment in {venv_dir} with {base.describe()}")
        _create_venv(venv_dir, base, env, output, is_cancelled)
        record = EnvironmentRecord(kind, INSTALLING, base.version_text, str(base.path))
    else:
        # Full already holds everything Light has: asking for Light keeps it Full.
        record.kind = "full" if "full" in (record.kind, kind) else kind
        record.state = INSTALLING
    write_record(venv_dir, record)
    _pip_install(python, requirements, env, record.python, venv_dir, progress, output, is_cancelled)
    progress(0.93, "checking the new engine")
    record.capabilities = check_engine(python, env)
    record.requirements_sha256 = _sha256(requirements)
    record.size_bytes = folder_size(venv_dir)
    record.state = READY
    write_record(venv_dir, record)
    progress(1.0, "the engine environment is ready")
    return python


def _create_venv(
    venv_dir: Path,
    base: base_python.BasePython,
    env: dict[str, str],
    output: Callable[[str], None],
    is_cancelled: Callable[[], bool],
) -> None:
    lines: list[str] = []

    def line(text: str) -> None:
        lines.append(text)
        output(text)

    try:
        venv_dir.parent.mkdir(parents=True, exist_ok=True)
        code = run_streaming(
            [base.path, "-m", "venv", venv_dir],
            env=env,
            on_stdout=line,
            on_stderr=line,
            is_cancelled=is_cancelled,
        )
    except OSError as exc:
        raise EngineSetupError(
            f"creating the engine environment in {venv_dir} failed ({exc.strerror or exc}); "
            "choose a folder you may write to"
        ) from None
    if code != 0 or not venv_python(venv_dir).is_file():
        said = pip_errors.diagnose(lines, base.version_text) or f"exit code {code}"
        raise EngineSetupError(
            f"creating the engine environment in {venv_dir} with {base.path} failed ({said}); "
            f"{base_python.install_hint()}"
        )


def _pip_install(
    python: Path,
    requirements: Path,
    env: dict[str, str],
    python_version: str,
    venv_dir: Path,
    progress: ProgressCallback,
    output: Callable[[str], None],
    is_cancelled: Callable[[], bool],
) -> None:
    count = _requirement_count(requirements)
    tracker = PipProgress(count, 0.1, 0.9)
    progress(0.1, f"installing {count} engine requirements with pip")
    lines: list[str] = []

    def pip_line(line: str) -> None:
        lines.append(line)
        output(line)
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
            "--no-input",
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
        cause = pip_errors.diagnose(lines, python_version, f"the disk of {venv_dir}")
        raise EngineSetupError(
            f"installing the engine requirements failed: {cause or f'pip exit code {code}'}. "
            "pip's full output is in the CrossEarth log; the environment is not used until a "
            "set-up completes"
        )


def check_engine(python: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The engine's own `check --json`, run with `python`: what the environment can do.
    Raises EngineSetupError when the engine does not run there."""
    code_dir = engine_code_dir()
    if code_dir is None:
        raise EngineSetupError(f"the plugin's engine code is missing ({RUNTIME_DIR}); reinstall it")
    run_env = dict(env or clean_python_env())
    run_env["PYTHONPATH"] = str(code_dir)
    try:
        done = subprocess.run(
            [str(python), "-m", "engine.cli", "check", "--json"],
            cwd=code_dir,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=300,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        last = ""
        with contextlib.suppress(NameError):
            last = (done.stderr.strip().splitlines() or [""])[-1]
        raise EngineSetupError(
            f"the engine does not run in the new environment ({last or 'no answer'}); run the "
            "set-up again, and if it fails again report it with the CrossEarth log"
        ) from None
    return report if isinstance(report, dict) else {}


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m crossearth_qgis.environment.engine_setup [--kind light|full] [--base PYTHON]
    DIR`: what the options page's button does, for scripts, `make setup` and the version
    matrix."""
    parser = argparse.ArgumentParser(prog="python -m crossearth_qgis.environment.engine_setup")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--kind", choices=KINDS, default="light")
    parser.add_argument("--base", default="", help="the interpreter to make it with")
    parser.add_argument("--requirements", type=Path, help="instead of the kind's own list")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pip's output")
    args = parser.parse_args(argv)
    try:
        base = (
            base_python.check(Path(args.base), "given with --base")
            if args.base
            else base_python.choose()
        )
        python = setup_environment(
            args.folder,
            args.kind,
            base,
            lambda fraction, message: print(f"{fraction * 100:5.1f} % {message}", flush=True),
            (lambda line: print(line, flush=True)) if args.verbose else (lambda line: None),
            requirements=args.requirements,
        )
    except (EngineSetupError, base_python.BasePythonError) as exc:
        print(f"engine set-up: {exc}", file=sys.stderr)
        return 2
    except ProcessCancelled:
        return 130
    record = read_record(args.folder)
    size = f"{record.size_bytes / 1e6:.0f} MB" if record else "?"
    print(f"ready: {python} ({args.kind}, {size})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
