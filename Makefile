# edge-gw: `make demo` runs the whole pipeline locally; `make test` runs every test suite (what .ci/run calls).
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: help install test lint typecheck pytest demo bench mpy firmware clean

help:
	@echo "make install   install apt/pip/npm dependencies (Debian 12 / Raspberry Pi OS)"
	@echo "make demo      run the whole pipeline locally (installs what is missing first)"
	@echo "make test      lint, type-check and run every test suite"
	@echo "make bench     run the benchmarks in bench/ (prints figures; not a test)"
	@echo "make mpy       compile the MicroPython gateway with mpy-cross into build/micropython"

install:
	bash scripts/install-deps.sh

test: lint typecheck pytest

lint:
	$(PYTHON) -m ruff check edge cloud tests bench

typecheck:
	$(PYTHON) -m mypy

pytest:
	$(PYTHON) -m pytest $(PYTEST_ARGS)

demo: install
	$(PYTHON) scripts/demo.py

bench:
	$(PYTHON) bench/run_all.py

mpy:
	$(PYTHON) -m edge.cli mpy build

clean:
	rm -rf build .demo .pytest_cache .mypy_cache .ruff_cache
