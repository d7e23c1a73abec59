# The two commands: `make dev` brings up the local fleet; `make test` runs every test.
PYTHON ?= python3
CLUSTERS ?= 3
DATACENTERS ?= 2

.PHONY: dev down test unit e2e lint bench

dev:
	$(PYTHON) -m fleet dev up --clusters $(CLUSTERS) --datacenters $(DATACENTERS) \
		--controller --apply examples/01-model-cache/

down:
	$(PYTHON) -m fleet dev down

test:
	$(PYTHON) -m pytest

unit:
	$(PYTHON) -m pytest -m "not e2e"

e2e:
	$(PYTHON) -m pytest -m e2e

lint:
	ruff check fleet tests hack
	ruff format --check fleet tests hack
	mypy

bench:
	$(PYTHON) hack/bench/devenv.py
