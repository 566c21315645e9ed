# One command for tests, one for the demo; both set everything up first (idempotent).
PY := .venv/bin/python
export QT_QPA_PLATFORM ?= offscreen
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup test lint typecheck demo bench plugin clean

setup:
	@bash scripts/setup.sh

lint: setup
	$(PY) -m ruff check .

# Types of engine/ and training/ (configuration in pyproject.toml [tool.mypy]).
typecheck: setup
	$(PY) -m mypy

test: lint typecheck
	$(PY) -m pytest -q -ra

demo: setup
	$(PY) scripts/demo.py

bench: setup
	$(PY) benchmarks/engine_throughput.py

# The installable QGIS plugin zip: dist/crossearth_qgis-<version>.zip (standard library only).
plugin:
	python3 scripts/build_plugin.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache
