import gc
import os

import pytest

# Headless Qt for pytest-qgis (also set by the Makefile).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Every Ray instance the tests start (in this process and in child processes) binds to the
# loopback interface only, never to the machine's network address.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


@pytest.fixture(scope="session", autouse=True)
def collect_garbage_while_qgis_lives():
    """Frees unreachable Python wrappers of Qt/QGIS objects at the end of the session, before
    pytest-qgis's qgis_app fixture (set up earlier, so torn down later) exits QGIS; freed after
    exitQgis() they crash the interpreter in pytest's final garbage collection."""
    yield
    gc.collect()
