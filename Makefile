# Two entry points on a fresh machine: `make demo` (the main job, locally) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: help install demo test lint format typecheck pytest bench clean smoke

help:
	@echo "make demo   run the main job end to end locally (AWS emulated, embedded PostgreSQL)"
	@echo "make test   lint, type-check and run every test"
	@echo "make bench  run the benchmarks (by hand; prints ratios against in-run baselines)"
	@echo "make smoke STAGE=dev  one small run through the deployed stack (your AWS credentials)"

# The virtual environment is updated whenever pyproject.toml changes. `make demo` installs only
# what the local run needs (the `demo` extra); everything else installs everything (`dev`, which
# includes `demo`, so a full install also satisfies the demo's stamp).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@ $(VENV)/.installed-demo

$(VENV)/.installed-demo: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[demo]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed-demo
	$(BIN)/batch-stats demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

test: lint typecheck pytest

# A run through the deployed stack Imgpipe-$(STAGE), with the caller's AWS credentials (not part
# of `make test`, which runs the same smoke test against the local pipeline). STAGE=local: the
# local pipeline (moto, embedded PostgreSQL) instead of AWS.
STAGE ?= dev
smoke: install
	$(BIN)/python -m batch_stats.smoke $(if $(filter local,$(STAGE)),--local,--stage $(STAGE))

bench: install
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python "$$f" || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache cdk.out node_modules out

# --- CDK (infra/): synthesize through the pinned CLI (package-lock.json), offline, no credentials.
# `npm ci` runs again only when package-lock.json changes (stamp file).
CDK := $(CURDIR)/node_modules/.bin/cdk
# jsii warns on every call while Node 20 is past its end of life; the pinned CLI supports it.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
CFN_LINT_ALLOWED := W3005,W3010

.PHONY: cdk-synth

node_modules/.installed: package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# cdk-nag runs inside the app: any unacknowledged finding fails the synth.
cdk-synth: install node_modules/.installed
	for stage in dev prod; do \
	  $(CDK) synth --quiet -c stage=$$stage -o cdk.out/$$stage || exit 1; \
	  $(BIN)/cfn-lint --ignore-checks $(CFN_LINT_ALLOWED) -- cdk.out/$$stage/Imgpipe-$$stage.template.json || exit 1; \
	done

test: cdk-synth

.PHONY: demo-mosaic
demo-mosaic: install  ## photo mosaics (nearest and unique) from scikit-image's bundled photos, offline
	$(BIN)/photo-mosaic demo --out out/mosaic

# The digit recogniser (number_generator.recognizer): trains on strips of MNIST training digits for
# TRAIN_MINUTES, evaluates on strips of MNIST test digits, writes out/recognizer/{model.pt,
# metrics.json,predictions.png}. Needs the full MNIST files: MNIST_DIR=... or
# `python -m number_generator download` first.
TRAIN_MINUTES ?= 30
.PHONY: train-digits
train-digits: install
	$(BIN)/python -m number_generator.recognizer train --out out/recognizer \
	  --minutes $(TRAIN_MINUTES) $(if $(MNIST_DIR),--mnist-dir $(MNIST_DIR)) $(TRAIN_ARGS)
