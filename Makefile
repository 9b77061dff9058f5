# From a fresh machine to a running service or a test run in one command: see README.md.

SHELL := /bin/bash
.DEFAULT_GOAL := test

VENV := .venv
PY := $(VENV)/bin/python
# Touched after a successful install; older than pyproject.toml or constraints.txt means the
# environment is out of date. Inside .venv, so removing .venv also forgets the install.
STAMP := $(VENV)/.installed
# python3.11 where there is one, else any python3 (pip then checks requires-python >= 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
# Throw-away environment in which `make constraints` re-resolves the pins.
CONSTRAINTS_VENV := .constraints-venv

.PHONY: venv lint test run constraints clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

lint: venv
	$(VENV)/bin/ruff check .

test: venv lint
	$(PY) -m pytest

run: venv
	$(PY) -m svc run

# Rewrites constraints.txt with the newest versions pyproject.toml allows, resolved from
# scratch in a clean environment; review the diff before committing it.
constraints:
	rm -rf $(CONSTRAINTS_VENV)
	$(PYTHON) -m venv $(CONSTRAINTS_VENV)
	$(CONSTRAINTS_VENV)/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# Exact pins of everything 'pip install -e .[dev]' installs; regenerate with 'make constraints'."; \
	  $(CONSTRAINTS_VENV)/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip=='; \
	} > constraints.txt
	rm -rf $(CONSTRAINTS_VENV)

clean:
	rm -rf $(VENV) $(CONSTRAINTS_VENV) .pytest_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
