"""The Python that creates the engine environment: chosen deliberately, then checked.

QGIS's own Python comes first on every platform: on Linux the distribution's interpreter
(`/usr/bin/python3.X` on Debian, the one QGIS is linked against), on Windows the `python.exe`
of OSGeo4W or the standalone installer beside QGIS, on macOS the Python inside the QGIS bundle.
Whatever comes first on PATH (pyenv, conda, Homebrew) is never taken unasked: the user may name
any interpreter in the options page instead. A candidate must be CPython 3.10 to 3.14 and able
to make virtual environments with pip (`venv` and `ensurepip`). When none is, one line says
what to install on this operating system.

Qt-free: the options page, the set-up task and the tests use it alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# CPython versions the engine's requirements have wheels for (PyTorch for Full, ONNX Runtime
# for Light, rasterio and pyogrio for both); the matrix tests 3.11, 3.13 and 3.14.
SUPPORTED = ((3, 10), (3, 14))

# Asked of each candidate in a child process: its version and whether it can make a venv with
# pip. Debian's python3 has `venv` but no usable `ensurepip` until python3-venv is installed.
_PROBE = (
    "import json, sys\n"
    "info = {'version': list(sys.version_info[:3]), 'implementation': sys.implementation.name}\n"
    "try:\n"
    "    import venv, ensurepip\n"
    "    info['pip_wheel'] = bool(ensurepip.version())\n"
    "except BaseException as exc:\n"
    "    info['venv_error'] = f'{type(exc).__name__}: {exc}'.strip()\n"
    "print(json.dumps(info))\n"
)


class BasePythonError(Exception):
    """No usable interpreter; the message names the cause and what to install."""


@dataclass(frozen=True)
class BasePython:
    path: Path
    version: tuple[int, int, int]
    source: str  # "chosen in the options", "QGIS's own Python", ...

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def describe(self) -> str:
        return f"{self.path} (Python {self.version_text}, {self.source})"


def install_hint(platform: str | None = None) -> str:
    """What to install on this operating system to get a Python that fits."""
    platform = sys.platform if platform is None else platform
    low, high = (".".join(map(str, v)) for v in SUPPORTED)
    if platform == "win32":
        return (
            f"install QGIS with the OSGeo4W installer (its Python has venv), or Python {low} to "
            f"{high} from python.org, and choose its python.exe here"
        )
    if platform == "darwin":
        return (
            f"install Python {low} to {high} from python.org (or 'brew install python@3.12') and "
            "choose its python3 here"
        )
    return (
        f"install Python {low} to {high} with its venv module (Debian/Ubuntu: 'sudo apt install "
        "python3-venv'; Fedora: 'sudo dnf install python3') and choose its python3 here"
    )


def _is_this_process(executable: Path) -> bool:
    """Whether `executable` is the program running now. Embedded in QGIS on Linux,
    sys.executable is whatever `python3` comes first on PATH (a pyenv shim, say), which is
    not QGIS's Python; /proc/self/exe tells. True where that cannot be told."""
    running = Path("/proc/self/exe")
    if executable != Path(sys.executable) or not running.exists():
        return True
    return os.path.realpath(executable) == os.path.realpath(running)


def qgis_python_candidates(
    executable: str | None = None,
    base_prefix: str | None = None,
    version: tuple[int, int] | None = None,
    platform: str | None = None,
) -> list[tuple[Path, str]]:
    """Where QGIS's own Python lives, best first, with a word on each (this process's values
    by default). Inside QGIS, sys.executable is QGIS itself; outside (qgis_process, scripts)
    it may be Python."""
    executable = sys.executable if executable is None else executable
    base_prefix = sys.base_prefix if base_prefix is None else base_prefix
    version = sys.version_info[:2] if version is None else version
    platform = sys.platform if platform is None else platform
    major_minor = f"{version[0]}.{version[1]}"
    base = Path(base_prefix)
    found: list[tuple[Path, str]] = []
    exe = Path(executable)
    # Outside QGIS the running Python may be a venv's; its base is what makes new ones.
    in_venv = executable == sys.executable and sys.prefix != sys.base_prefix
    if exe.name.lower().startswith("python") and not in_venv and _is_this_process(exe):
        found.append((exe, "the Python running QGIS's Python code"))
    if platform == "win32":
        found += [
            (base / "python.exe", "QGIS's own Python (OSGeo4W / standalone installer)"),
            (exe.parent / "python3.exe", "QGIS's own Python (OSGeo4W)"),
            (exe.parent / "python.exe", "QGIS's own Python"),
        ]
    elif platform == "darwin":
        found += [
            (base / "bin" / f"python{major_minor}", "the Python inside the QGIS bundle"),
            (base / "bin" / "python3", "the Python inside the QGIS bundle"),
            (exe.parent / "bin" / "python3", "the Python inside the QGIS bundle"),
        ]
    else:
        found += [
            (base / "bin" / f"python{major_minor}", "QGIS's own Python"),
            (base / "bin" / "python3", "QGIS's own Python"),
        ]
    unique: dict[str, tuple[Path, str]] = {}
    for path, word in found:
        unique.setdefault(os.path.normcase(str(path)), (path, word))
    return list(unique.values())


def probe(path: Path, timeout_s: float = 30.0) -> dict:
    """The candidate's own answer (version, venv); raises BasePythonError if it does not run."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE")
    }
    try:
        done = subprocess.run(
            [str(path), "-I", "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        raise BasePythonError(f"{path} does not run as a Python interpreter") from None


def check(path: Path, source: str) -> BasePython:
    """The interpreter at `path`, if it can create the engine environment; else
    BasePythonError saying why and what to install."""
    path = Path(path).expanduser()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise BasePythonError(f"{path} is not an executable file; {install_hint()}")
    info = probe(path)
    version = tuple(int(v) for v in info.get("version", (0, 0, 0)))[:3]
    text = ".".join(map(str, version))
    low, high = SUPPORTED
    if info.get("implementation") != "cpython":
        raise BasePythonError(
            f"{path} is {info.get('implementation')}, not CPython; {install_hint()}"
        )
    if not (low <= version[:2] <= high):
        raise BasePythonError(
            f"{path} is Python {text}, but the engine needs Python "
            f"{'.'.join(map(str, low))} to {'.'.join(map(str, high))}; {install_hint()}"
        )
    if "venv_error" in info or not info.get("pip_wheel"):
        raise BasePythonError(
            f"{path} (Python {text}) cannot create virtual environments with pip "
            f"({info.get('venv_error', 'ensurepip has no pip')}); {install_hint()}"
        )
    return BasePython(path, (version[0], version[1], version[2]), source)


def choose(chosen: str = "") -> BasePython:
    """The interpreter to create the engine environment with: the one the user chose, else
    QGIS's own. Raises BasePythonError with the reason(s) and the fix."""
    if chosen.strip():
        return check(Path(chosen.strip()), "chosen in the options")
    problems = []
    for path, word in qgis_python_candidates():
        if not path.is_file():
            continue
        try:
            return check(path, word)
        except BasePythonError as exc:
            problems.append(str(exc).split("; ")[0])
    reason = "; ".join(problems) if problems else "QGIS's own Python was not found"
    raise BasePythonError(
        f"No Python can create the engine environment ({reason}); {install_hint()}"
    )
