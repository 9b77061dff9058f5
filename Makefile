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
# npm tools (buf, pinned in package.json / package-lock.json) live inside .venv too, so
# removing .venv forgets them as well and no node_modules/ appears in the work tree.
NODE_DIR := $(VENV)/node
BUF := $(NODE_DIR)/node_modules/.bin/buf
BUF_STAMP := $(NODE_DIR)/.installed

.PHONY: venv lint test run constraints clean proto proto-check

venv: $(STAMP) $(BUF_STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

# The lock pins buf and its per-platform binary packages; the binaries need no install script.
$(BUF_STAMP): package.json package-lock.json | $(STAMP)
	rm -rf $(NODE_DIR)
	mkdir -p $(NODE_DIR)
	cp package.json package-lock.json $(NODE_DIR)/
	npm ci --prefix $(NODE_DIR) --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(BUF) lint

test: venv lint
	$(PY) -m pytest

run: venv
	$(PY) -m svc run

# Regenerates svc/admin/generated/ from proto/ (replacing it as a whole); commit the result.
proto: venv
	$(PY) -m svc.admin.codegen

# Fails when svc/admin/generated/ is out of date with proto/ (the test suite checks it too).
proto-check: venv
	$(PY) -m svc.admin.codegen --check

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
