# jouled: `make run` sets up and starts the daemon on embedded defaults; `make test` sets up and passes the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
JOULED := $(VENV)/bin/jouled
CONFIG ?=
ARGS ?=
# torch 2.13.0 is the CPU build this machine kind carries; installed before the project so the `trainer`
# extra finds it satisfied and nothing pulls the multi-GB CUDA build. (torchvision is the optional `vision`
# extra: its wheels here are CUDA builds that do not import over a CPU torch.)
TORCH_PINS := torch==2.13.0

.PHONY: run run-sim test lint bench install-test clean help

help:
	@echo "make run        set up .venv and run the daemon in the foreground (CONFIG=file.toml ARGS='--duration 60')"
	@echo "make run-sim    the same with the simulated Yokogawa WT310 meter (pyvisa-sim)"
	@echo "make test       set up everything the tests need (venv, mosquitto), lint, type-check and run them"
	@echo "make lint       ruff + mypy"
	@echo "make bench      run the benchmarks, results in bench/results/"

$(VENV)/.run-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[visa]'
	touch $@

run: $(VENV)/.run-installed
	$(JOULED) run $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

run-sim: $(VENV)/.run-installed
	$(JOULED) run --config systemd/jouled-wt310-sim.toml $(ARGS)

$(VENV)/.test-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e '.[all,dev]'
	touch $@ $(VENV)/.run-installed

install-test: $(VENV)/.test-installed
	bash .ci/system-deps

test: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy jouled daemon trainer scheduler
	$(VENV)/bin/pytest -q -ra

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy jouled daemon trainer scheduler

bench: $(VENV)/.test-installed
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
