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

.PHONY: run run-sim demo test lint bench install-test clean help

help:
	@echo "make run        set up .venv and run the daemon in the foreground (CONFIG=file.toml ARGS='--duration 60')"
	@echo "make run-sim    the same with the simulated Yokogawa WT310 meter (pyvisa-sim)"
	@echo "make demo       add the trainer extra (CPU torch) and run \`jouled demo\`: daemon + a short training + energy per epoch"
	@echo "make test       set up everything the tests need (venv, mosquitto), lint, type-check and run them"
	@echo "make lint       ruff + mypy"
	@echo "make bench      run the benchmarks, results in bench/results/"

# Installs print one phase line per step; pip's own output goes to $(LOG), whose tail is shown if a step fails.
# A stamp is written only after the installed jouled answers (--version, sources), so a broken install is
# retried by the next make instead of being remembered as done.
LOG := $(VENV)/install.log
QUIET = >>$(LOG) 2>&1 || { echo "failed: the last lines of $(LOG):"; tail -n 30 $(LOG); exit 1; }

$(VENV)/.created:
	@echo "==> creating $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@: > $(LOG)
	@$(PIP) install -q --upgrade pip $(QUIET)
	@touch $@

$(VENV)/.run-installed: pyproject.toml | $(VENV)/.created
	@echo "==> installing jouled[visa] (log: $(LOG))"
	@$(PIP) install -q -e '.[visa]' $(QUIET)
	@echo "==> checking the install"
	@{ $(JOULED) --version && $(JOULED) sources; } $(QUIET)
	@touch $@

run: $(VENV)/.run-installed
	@echo "==> starting the daemon: $(JOULED) run $(if $(CONFIG),--config $(CONFIG)) $(ARGS)"
	@$(JOULED) run $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

run-sim: $(VENV)/.run-installed
	@echo "==> starting the daemon with a simulated WT310 meter: $(JOULED) run --config systemd/jouled-wt310-sim.toml $(ARGS)"
	@$(JOULED) run --config systemd/jouled-wt310-sim.toml $(ARGS)

$(VENV)/.trainer-installed: pyproject.toml | $(VENV)/.run-installed
	@echo "==> installing $(TORCH_PINS) (CPU) and jouled[visa,trainer] (log: $(LOG))"
	@$(PIP) install -q $(TORCH_PINS) $(QUIET)
	@$(PIP) install -q -e '.[visa,trainer]' $(QUIET)
	@echo "==> checking the install"
	@{ $(JOULED) --version && $(PY) -c 'import torch, sklearn'; } $(QUIET)
	@touch $@

demo: $(VENV)/.trainer-installed
	@echo "==> jouled demo"
	$(JOULED) demo $(ARGS)

$(VENV)/.test-installed: pyproject.toml | $(VENV)/.created
	@echo "==> installing $(TORCH_PINS) (CPU) (log: $(LOG))"
	@$(PIP) install -q $(TORCH_PINS) $(QUIET)
	@echo "==> installing jouled[all,dev]"
	@$(PIP) install -q -e '.[all,dev]' $(QUIET)
	@echo "==> checking the install"
	@{ $(JOULED) --version && $(JOULED) sources && $(PY) -c 'import torch, sklearn, scipy, matplotlib, ray, pyvisa, pytest'; } $(QUIET)
	@touch $@ $(VENV)/.run-installed $(VENV)/.trainer-installed

install-test: $(VENV)/.test-installed
	@echo "==> system packages for the tests (mosquitto, influxdb, victoria-metrics, prometheus, chromium)"
	@bash .ci/system-deps

test: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy jouled daemon trainer scheduler grafana
	$(VENV)/bin/pytest -q -ra

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy jouled daemon trainer scheduler grafana

bench: $(VENV)/.test-installed
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
