import os

# Headless Qt for pytest-qgis (also set by the Makefile).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
