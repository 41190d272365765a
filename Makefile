# edge-gw: `make demo` runs the whole pipeline locally; `make test` runs every test suite (what .ci/run calls).
# The interpreter that makes the project's virtual environment (.venv); everything then runs from that venv,
# because Debian's own python3 refuses pip installs outside one (PEP 668).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The venv's console scripts (edge-gw, cloud-ingest, mpremote, ansible-playbook) come first, as if it were activated.
export PATH := $(abspath $(VENV))/bin:$(PATH)
# Most tests wait on real servers and timers, not on the CPU: three workers (pytest-xdist) on 2 cores. A file runs
# whole on one worker, so a session fixture that builds something (the debootstrap target, the firmware) is built
# once per file that needs it, not once per test. (`--dist loadgroup` would group whole suites, but pytest-xdist
# 3.8 cannot mark the groups under pytest 9.2: it sets `item._nodeid`, which pytest 9 no longer reads.)
# Serially: `make test PYTEST_ARGS=`.
PYTEST_ARGS ?= -n 3 --dist loadfile
# `make demo KAFKA=1`: the Kafka path (docs/kafka.md) instead of the plain receiver.
KAFKA ?=
DEMO_KAFKA := $(filter 1 yes true,$(KAFKA))

.PHONY: help install check test lint typecheck pytest demo bench mpy firmware clean

help:
	@echo "make install   install apt/pip/npm dependencies of the tests and the demo (Debian 12 / Raspberry Pi OS)"
	@echo "make demo      run the whole pipeline locally (installs what is missing first)"
	@echo "               KAFKA=1: through a Kafka broker (cloud-ingest bridge, cloud-ingest run --kafka)"
	@echo "make check     lint, type-check and the fast lane: unit and component tests (no 'slow' suites)"
	@echo "make test      lint, type-check and run every test suite (what CI runs)"
	@echo "make bench     run the benchmarks in bench/ (prints figures; not a test)"
	@echo "make mpy       compile the MicroPython gateway with mpy-cross into build/micropython"

# What is installed is remembered by a stamp in the venv, and done again when pyproject.toml, the script or the
# speed-ups' sources change.
# The demo needs only the daemons and the two servers; the tests need everything (and include the demo's).
TESTS_INSTALLED := $(VENV)/.installed-tests
DEMO_INSTALLED := $(VENV)/.installed-demo
DEMO_KAFKA_INSTALLED := $(VENV)/.installed-demo-kafka

SPEEDUPS := speedups/pyproject.toml speedups/setup.py speedups/edge_gw_speedups/_speedups.c

install: $(TESTS_INSTALLED)

$(TESTS_INSTALLED): pyproject.toml scripts/install-deps.sh tests/kafka/pom.xml $(SPEEDUPS)
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install-deps.sh
	touch $@ $(DEMO_INSTALLED) $(DEMO_KAFKA_INSTALLED)

$(DEMO_INSTALLED): pyproject.toml scripts/install-deps.sh $(SPEEDUPS)
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install-deps.sh --demo
	touch $@

# The demo's dependencies plus Java and the Kafka broker's jars (as `make install` fetches them for the tests).
$(DEMO_KAFKA_INSTALLED): pyproject.toml scripts/install-deps.sh tests/kafka/pom.xml $(SPEEDUPS)
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install-deps.sh --demo --kafka
	touch $@ $(DEMO_INSTALLED)

test: $(TESTS_INSTALLED) lint typecheck pytest

check: $(TESTS_INSTALLED) lint typecheck
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint:
	$(PY) -m ruff check core edge cloud tests bench speedups

typecheck:
	$(PY) -m mypy

pytest:
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(if $(DEMO_KAFKA),$(DEMO_KAFKA_INSTALLED),$(DEMO_INSTALLED))
	$(PY) scripts/demo.py$(if $(DEMO_KAFKA), --kafka)

bench:
	$(PY) bench/run_all.py

mpy:
	$(PY) -m edge.cli mpy build

clean:
	rm -rf build .demo .venv .pytest_cache .mypy_cache .ruff_cache
