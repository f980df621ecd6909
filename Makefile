# The two commands a newcomer needs: `make demo` and `make test`.
# Everything they need is installed by the targets below, into .venv/ and
# into $(EDGEAI_CACHE) (Go-built Kubernetes binaries, outside the checkout).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
export EDGEAI_CACHE ?= $(HOME)/.cache/edgeai

.PHONY: demo down test lint unit integration binaries bench deps

$(VENV)/.stamp: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

deps: $(VENV)/.stamp

binaries: deps
	$(VENV)/bin/python hack/plane.py build

demo: binaries
	$(VENV)/bin/python hack/demo.py

down: deps
	$(VENV)/bin/python hack/demo.py --down

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

unit: deps
	$(VENV)/bin/pytest -m 'not integration'

integration: binaries
	$(VENV)/bin/pytest -m integration

# Two workers, one test file each at a time (--dist loadfile keeps a file's fixtures, planes
# included, in one process); each worker brings up its own local plane.
test: binaries lint
	$(VENV)/bin/pytest -n 2 --dist loadfile

bench: binaries
	$(VENV)/bin/python -m benchmarks
