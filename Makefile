# Two commands do everything on a fresh machine:
#   make repro   set up the venv (idempotent) and run the whole pipeline (`dvc repro`)
#   make test    set up the venv (idempotent) and run the test suite
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
STAMP := $(VENV)/.installed-stamp
# Real sample of the dataset and offline weights that sit beside the repo on our machines.
SHARED ?= ../shared
PYTEST_ARGS ?=

.PHONY: setup repro repro-sample test lint ui clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## The real pipeline: downloads the official Stanford Dogs archives (needs internet).
repro: setup
	dvc repro

## Offline: the real 4-breed sample and the offline MobileNetV2 weights from $(SHARED).
repro-sample: setup
	dogbreeds profile sample \
	  -S download.base_url=file://$(abspath $(SHARED))/data/stanford-dogs-sample \
	  -S train_transfer.weights=$(abspath $(SHARED))/weights/mobilenetv2_1.00_160_notop.weights.h5
	dvc repro

test: setup
	pytest $(PYTEST_ARGS)

## ruff (pinned in the dev extras, configured in pyproject.toml); CI runs it before the tests.
lint: setup
	ruff check .

ui: setup
	@echo "runs table: http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning"
	mlflow ui --port 5000

clean-venv:
	rm -rf $(VENV)
