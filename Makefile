# TeleCoder — every target creates the venv it needs; `make test` is what CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run serve test lint typecheck check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)          ## make run ARGS='run "sed -i s/a/b/ README.md" --repo ./myrepo --engine shell'
	$(BIN)/telecoder $(ARGS)

serve: $(STAMP)        ## the server (HTTP API, dashboard, embedded workers)
	$(BIN)/telecoder serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck   ## everything CI runs: lint, types, import layers, the whole test suite
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/queue.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
