import gc
import os
from pathlib import Path

import pytest

# Headless Qt for pytest-qgis (also set by the Makefile).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Every Ray instance the tests start (in this process and in child processes) binds to the
# loopback interface only, never to the machine's network address.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


REPO = Path(__file__).resolve().parents[1]


LIGHT_ENGINE = REPO / "build" / "engine-light"
LIGHT_WHEELS = REPO / "build" / "wheelhouse-light"


@pytest.fixture(scope="session")
def light_python() -> Path:
    """The python of a Light engine environment (no PyTorch) made as the plugin makes one for
    a user: self-contained, PyPI wheels only (`make setup` makes it with the plugin's
    crossearth_qgis.environment.engine_setup, from build/wheelhouse-light)."""
    from crossearth_qgis.environment.engine_setup import read_record, venv_python

    record = read_record(LIGHT_ENGINE)
    assert record is not None and record.ready, f"{LIGHT_ENGINE} is missing: run make setup"
    return venv_python(LIGHT_ENGINE)


@pytest.fixture(scope="session")
def light_wheels() -> Path:
    """A folder of the wheels a Light environment installs (made by `make setup`)."""
    assert any(LIGHT_WHEELS.glob("onnxruntime-*.whl")), f"{LIGHT_WHEELS}: run make setup"
    return LIGHT_WHEELS


@pytest.fixture(scope="session", autouse=True)
def collect_garbage_while_qgis_lives():
    """Frees unreachable Python wrappers of Qt/QGIS objects at the end of the session, before
    pytest-qgis's qgis_app fixture (set up earlier, so torn down later) exits QGIS; freed after
    exitQgis() they crash the interpreter in pytest's final garbage collection."""
    yield
    gc.collect()
