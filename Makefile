# The two commands of the README: `make demo` and `make test`. Both create .venv when needed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.skintriage-installed
DEMO_ARGS ?=
# The 30 slowest tests are listed at the end of every run: CI must stay under 30 minutes.
PYTEST_ARGS ?= --durations=30

.PHONY: demo test quick env lint chromium

demo: env
	$(BIN)/skintriage demo $(DEMO_ARGS)

test: env chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/deptry .
	$(BIN)/pytest tests/ $(PYTEST_ARGS)

# The quick round: every test but those marked slow (processes, training, the demo models, the browser).
quick: env
	$(BIN)/pytest tests/ -m "not slow" $(PYTEST_ARGS)

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/deptry .

env: $(STAMP)

# Every role's extra (pyproject.toml: worker, cpu, console, train, demo, test) for development.
# torch first: pip takes the pinned wheels from this machine's disk, and a bare `torch` requirement
# resolved later would otherwise look for another build.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e '.[worker,cpu,console,train,demo,test]'
	@touch $(STAMP)

# The console's browser tests drive Debian's Chromium through Playwright (no browser download).
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "chromium is missing and this is not root: run 'sudo apt-get install chromium' (browser tests skip)"; \
	fi
