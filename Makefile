# One command for tests, one for the demo; both set everything up first (idempotent).
PY := .venv/bin/python
export QT_QPA_PLATFORM ?= offscreen
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup test lint typecheck demo bench plugin clean matrix first-hour

setup:
	@bash scripts/setup.sh

# ruff; flake8-qgis's QGIS and Qt6 rules (QGS1xx, QGS4xx; QGS105 asks for the global
# qgis.utils.iface, where the plugin hands its iface to what it builds, so tests can give
# theirs); and the plugin's own Qt6 check (unscoped enums by introspection, exec_, moved names).
lint: setup
	$(PY) -m ruff check .
	$(PY) -m flake8 --select QGS1,QGS4 --extend-ignore QGS105 crossearth_qgis
	$(PY) scripts/check_qt6.py

# Types of engine/ and training/ (configuration in pyproject.toml [tool.mypy]).
typecheck: setup
	$(PY) -m mypy

test: lint typecheck
	$(PY) -m pytest -q -ra

# The QGIS-version matrix (scripts/matrix.sh): the plugin tests and a qgis_process segment with
# a Light engine made the plugin's way, in the host's QGIS and in Debian chroots (needs root).
# CI runs MATRIX="host trixie"; sid (QGIS 3.44, Python 3.14) moves, so only `make matrix` has it.
MATRIX ?= host trixie sid
matrix: setup
	$(if $(filter 0,$(shell id -u)),,sudo) bash scripts/matrix.sh $(MATRIX)

demo: setup
	$(PY) scripts/demo.py

bench: setup
	$(PY) benchmarks/engine_throughput.py

# A new user's first hour in the real QGIS window under Xvfb: the zip, a Light engine from the
# Options page, a first result, the model suggestion; screenshots and timings in build/first_hour
# (FIRST_HOUR_OFFLINE=1: the Light wheels from build/wheelhouse-light, no download).
first-hour: setup
	bash scripts/first_hour.sh build/first_hour

# The installable QGIS plugin zip: dist/crossearth_qgis-<version>.zip (standard library only).
plugin:
	python3 scripts/build_plugin.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache
