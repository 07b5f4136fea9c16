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

.PHONY: run test lint bench soak clean

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

test: lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal

bench: $(STAMP)
	$(BIN)/python bench/store.py
	$(BIN)/python bench/sandbox.py
	$(BIN)/python bench/tasks.py
	$(BIN)/python bench/webhooks.py

soak: $(STAMP)
	$(BIN)/pytest -m slow

clean:
	rm -rf $(VENV) .corral .pytest_cache .mypy_cache .ruff_cache
