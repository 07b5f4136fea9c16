# Every target creates the virtual environment and installs what it needs itself,
# so a fresh clone needs nothing but `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers for `make test`: `auto` is one per core; 0 runs the suite in
# this one process (`make test PYTEST_WORKERS=0`, as for a debugger). With
# `--dist worksteal` each worker starts on its share of the tests in file order and
# takes over the rest of another's when it runs out, so none idles at the end.
PYTEST_WORKERS ?= auto

# Debian's chromium, which the dashboard's browser tests drive through Playwright.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run test lint bench soak screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m examples.demo.run

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

# Only when it is missing: installed once, never upgraded behind your back.
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

test: lint $(CHROMIUM)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal

# Pictures of each dashboard page after a real run, into docs/screenshots/.
screenshots: $(STAMP) $(CHROMIUM)
	$(BIN)/pytest -m screenshots -k sqlite -q tests/server/test_dashboard_screenshots.py

bench: $(STAMP)
	$(BIN)/python bench/store.py
	$(BIN)/python bench/sandbox.py
	$(BIN)/python bench/tasks.py
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/activities.py
	$(BIN)/python bench/admin.py

soak: $(STAMP)
	$(BIN)/pytest -m slow

clean:
	rm -rf $(VENV) .corral .pytest_cache .mypy_cache .ruff_cache
