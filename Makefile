# One command for tests, one for the demo; both set everything up first (idempotent).
PY := .venv/bin/python
export QT_QPA_PLATFORM ?= offscreen
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup test lint demo bench clean

setup:
	@bash scripts/setup.sh

lint: setup
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q -ra

demo: setup
	$(PY) scripts/demo.py

bench: setup
	$(PY) benchmarks/engine_throughput.py

clean:
	rm -rf build dist *.egg-info .pytest_cache
