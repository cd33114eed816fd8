# progressd: `make run` serves the demo, `make test` runs every check. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
VENV := .venv
HOST ?= $(or $(PROGRESSD_HOST),127.0.0.1)
PORT ?= $(or $(PROGRESSD_PORT),8000)

.PHONY: run test lint typecheck unit integration bench bench-quick bench-eta install clean browsers

$(TOOLS)/bin/uv:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	touch $@

install: $(VENV)/.synced

run: install
	$(VENV)/bin/progressd serve --demo --host $(HOST) --port $(PORT)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

# Debian's Chromium and tmux drive the page and terminal tests (the fixtures install them too if missing).
browsers:
	@test -x /usr/bin/chromium && test -x /usr/bin/tmux || { apt-get update && apt-get install -y chromium tmux; }

test: install lint typecheck browsers
	$(VENV)/bin/pytest -q -p no:cacheprovider

unit: install
	$(VENV)/bin/pytest -q tests/unit

# Speed as a ratio to the raw limit (needs wrk: apt-get install -y wrk). Writes bench/RESULTS.md.
bench: install
	$(VENV)/bin/python -m bench.run

bench-quick: install
	$(VENV)/bin/python -m bench.run --quick

TRACES ?=
bench-eta: install
	$(VENV)/bin/python -m bench.eta $(if $(QUICK),--quick) $(if $(TRACES),--traces $(TRACES))

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache
