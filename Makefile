# The commands people type. `make dev` and `make test` work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint bench chaos install clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## dev: set up, then run the dev broker, the engine, the HTTP API and the example shop app
## (`make dev PORT=8300` serves the API on another port)
PORT ?= 8288
dev: $(STAMP)
	$(BIN)/stepstream dev --app examples.shop:client --port $(PORT)

## test: the whole suite (unit + integration on one real Tansu broker, and the dashboard
## in headless chromium, which scripts/install-browser.sh installs from Debian once)
test: $(STAMP)
	sh scripts/install-browser.sh
	$(BIN)/python -m pytest -q

## chaos: the fault campaign (README, Reliability), not part of `make test`: 15 minutes on
## the dev broker, or `make chaos DURATION=3m ONLY=engine-kill,poison`; writes
## chaos-report.json and chaos-report.md, and fails on any violated invariant
DURATION ?= 15m
ONLY ?=
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos --duration $(DURATION) $(if $(ONLY),--only $(ONLY))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
