# mlshift: two commands set everything up.
#   make wizard PROJECT=demo   creates .venv on first use, then asks the questions
#   make test                  installs the test and runtime extras, then runs the tests
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Installed before anything that asks for torch, so the CPU build is taken where it is the one available.
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=
# Passed to recipes through the environment, never pasted into a command line.
export PROJECT ARGS PYTEST_ARGS

.PHONY: help setup wizard test render validate schema docs clean

help:
	@echo "make wizard PROJECT=name   create or update deployments/<name>/ (interactive)"
	@echo "make test                  run the test suite"
	@echo "make setup                 create .venv with what the wizard needs"
	@echo "make docs                  regenerate docs/reference.md and the JSON Schema"

$(VENV)/.setup-done: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	@touch $@

setup: $(VENV)/.setup-done

wizard: $(VENV)/.setup-done
	@if [ -z "$$PROJECT" ]; then echo "usage: make wizard PROJECT=name" >&2; exit 2; fi
	@$(PY) -m wizard new "$$PROJECT" $$ARGS

$(VENV)/.test-done: $(VENV)/.setup-done pyproject.toml
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[runtime,dev]"
	@touch $@

test: $(VENV)/.test-done
	$(PY) -m pytest $$PYTEST_ARGS

docs: $(VENV)/.setup-done
	$(PY) -m wizard docs

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
