import gc
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Headless Qt for pytest-qgis (also set by the Makefile).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Every Ray instance the tests start (in this process and in child processes) binds to the
# loopback interface only, never to the machine's network address.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def light_python(tmp_path_factory) -> Path:
    """The python of a real virtual environment without PyTorch: the system's site packages
    (numpy and rasterio from Debian) and only the light engine requirements, installed by pip
    from the list the plugin's "Light" set-up installs."""
    sys.path.insert(0, str(REPO))
    from crossearth_qgis.requirements import requirements_text

    root = tmp_path_factory.mktemp("light") / "venv"
    base = shutil.which("python3", path="/usr/bin") or sys.executable
    subprocess.run([base, "-m", "venv", "--system-site-packages", str(root)], check=True)
    requirements = root / "requirements-light.txt"
    requirements.write_text(requirements_text(REPO / "pyproject.toml", "light"), encoding="utf-8")
    python = root / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
         str(requirements)],
        check=True,
    )  # fmt: skip
    return python


@pytest.fixture(scope="session", autouse=True)
def collect_garbage_while_qgis_lives():
    """Frees unreachable Python wrappers of Qt/QGIS objects at the end of the session, before
    pytest-qgis's qgis_app fixture (set up earlier, so torn down later) exits QGIS; freed after
    exitQgis() they crash the interpreter in pytest's final garbage collection."""
    yield
    gc.collect()
