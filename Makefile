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

.PHONY: help setup wizard test render validate schema docs bench bench-gpu clean

help:
	@echo "make wizard PROJECT=name   create or update deployments/<name>/ (interactive)"
	@echo "make test                  run the test suite"
	@echo "make setup                 create .venv with what the wizard and the generated scripts need"
	@echo "make docs                  regenerate docs/reference.md, the JSON Schema and the transcripts in the docs"
	@echo "make bench                 the benchmarks (ratios against baselines measured in the same run)"
	@echo "make bench-gpu             on a CUDA GPU: the runtime tests and the GPU benchmarks (1B random model)"

# pip's and setuptools' output goes to $(VENV)/install.log, shown only when a step fails.
INSTALL = $(PY) -m pip install --quiet --disable-pip-version-check
LOGGED = >>$(VENV)/install.log 2>&1 || { cat $(VENV)/install.log >&2; echo "error: the install failed; its log is above and in $(VENV)/install.log" >&2; exit 1; }

$(VENV)/.setup-done: pyproject.toml
	@test -x $(PY) || { echo "Creating $(VENV) (the first run takes a minute)"; $(PYTHON) -m venv $(VENV); }
	@echo "Installing mlshift into $(VENV)"
	@$(INSTALL) --upgrade pip $(LOGGED)
	@$(INSTALL) -e . $(LOGGED)
	@touch $@

setup: $(VENV)/.setup-done

wizard: $(VENV)/.setup-done
	@if [ -z "$$PROJECT" ]; then echo "usage: make wizard PROJECT=name" >&2; exit 2; fi
	@$(PY) -m wizard new "$$PROJECT" $$ARGS

$(VENV)/.test-done: $(VENV)/.setup-done pyproject.toml
	@echo "Installing torch $(TORCH_VERSION) and the runtime and test extras into $(VENV) (the first run takes a few minutes)"
	@$(INSTALL) "torch==$(TORCH_VERSION)" $(LOGGED)
	@$(INSTALL) -e ".[runtime,dev]" $(LOGGED)
	@touch $@

test: $(VENV)/.test-done
	$(PY) -m pytest $$PYTEST_ARGS

docs: $(VENV)/.setup-done
	$(PY) -m wizard docs
	@$(PY) -c 'import pexpect' 2>/dev/null || $(INSTALL) 'pexpect>=4.8' $(LOGGED)
	$(PY) docs/gen_transcripts.py

bench: $(VENV)/.test-done
	$(PY) bench/bench_render.py
	$(PY) bench/bench_wizard_startup.py
	$(PY) bench/bench_decode_step.py
	$(PY) bench/bench_serving.py
	$(PY) bench/bench_rate_limit.py
	$(PY) bench/bench_batch.py
	$(PY) bench/bench_batch_memory.py

bench-gpu: $(VENV)/.test-done
	$(PY) -m pytest tests/test_runtime_gpu.py tests/test_runtime_engine.py tests/test_runtime_fast_decode.py tests/test_runtime_server.py tests/test_runtime_batch.py
	$(PY) bench/bench_gpu_memory.py
	$(PY) bench/bench_decode_step.py --size 1b
	$(PY) bench/bench_serving.py --size 1b --requests 256 --concurrency 64 --max-tokens 128 --one-at-a-time-requests 16
	$(PY) bench/bench_batch.py --size 1b

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
