# The two commands: `make dev` brings up the local fleet; `make test` runs every test.
# Both, like every target here, first make sure of .venv: a virtual environment with
# fleet installed editable with its dev extras, installed again when pyproject.toml
# is newer than the stamp .venv/.installed.
SYSTEM_PYTHON ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
CLUSTERS ?= 3
DATACENTERS ?= 2

.PHONY: dev down status test unit e2e lint bench venv

# `make dev REPO=examples/fleet-repo` starts from a fleet repository instead: its
# datacenters, then `fleet apply` of it, each declared cluster made by the local provider.
dev: $(INSTALLED)
ifdef REPO
	$(PYTHON) -m fleet dev up --repo $(REPO)
else
	$(PYTHON) -m fleet dev up --clusters $(CLUSTERS) --datacenters $(DATACENTERS) \
		--controller --apply examples/01-model-cache/
endif

down: $(INSTALLED)
	$(PYTHON) -m fleet dev down

status: $(INSTALLED)
	$(PYTHON) -m fleet dev status

# make exits 2 whatever pytest's code was: with ALLOW_NO_TESTS=1 (as CI sets it),
# pytest's 5, "collected no tests", is not taken for a failure here.
no_tests = { status=$$?; [ $$status -eq 5 ] && [ -n "$(ALLOW_NO_TESTS)" ] \
	&& echo "pytest collected no tests" || exit $$status; }

test: $(INSTALLED)
	$(PYTHON) -m pytest || $(no_tests)

unit: $(INSTALLED)
	$(PYTHON) -m pytest -m "not e2e"

e2e: $(INSTALLED)
	$(PYTHON) -m pytest -m e2e

lint: $(INSTALLED)
	$(VENV)/bin/ruff check fleet tests hack
	$(VENV)/bin/ruff format --check fleet tests hack
	$(VENV)/bin/mypy

bench: $(INSTALLED)
	$(PYTHON) hack/bench/devenv.py

venv: $(INSTALLED)

$(PYTHON):
	$(SYSTEM_PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
		echo "$(SYSTEM_PYTHON) -m venv failed (Debian and Ubuntu need the python3-venv package)"; \
		exit 1; }

# Order-only on the interpreter: recreating it alone does not force a reinstall.
$(INSTALLED): pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@
