# TeleCoder — every target creates the venv it needs; `make test` is what CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install agents run serve test lint typecheck check bench bench-bigrepo bench-sse browser sandbox podman clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,memory]'
	touch $(STAMP)

install: $(STAMP)

agents:                ## the pinned agent CLIs the engines drive, in .tools/ (no-op when installed)
	PYTHON=$(PYTHON) scripts/install-agents.sh

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

# The suite runs in parallel (pytest-xdist): TEST_WORKERS processes, one per CPU by default; a
# worker that runs dry takes queued tests from the others (worksteal), so the minute-long tests do
# not leave one worker busy at the end. TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= auto

test: lint typecheck agents browser sandbox podman   ## everything CI runs: lint, types, import layers, the whole test suite
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal --durations=40 $(PYTEST_ARGS)

# The browser tests drive Debian's Chromium: `playwright install` cannot download a browser here.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# Agents run in bubblewrap (the sandbox runtime); its tests need it installed.
sandbox:
	@command -v bwrap >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap; }

# The docker runtime's tests drive podman's Docker-compatible service with runc (crun cannot set
# rlimits without CAP_SYS_RESOURCE); catatonit is the containers' init.
podman:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v catatonit >/dev/null || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc catatonit; }

bench: $(STAMP)         ## every benchmark in benchmarks/, in full (CI runs each with --quick)
	@set -e; for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script; done

bench-bigrepo: $(STAMP)    ## 100,000 files: worktree add vs the warm pool, submit -> agent running
	$(BIN)/python benchmarks/bigrepo.py $(ARGS)

bench-sse: $(STAMP)    ## 100 SSE clients on running sessions: append->arrival latency, API p99
	$(BIN)/python benchmarks/sse.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
