# TeleCoder — every target creates the venv it needs; `make test` is what CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# What `make serve` and `make run` need: TeleCoder itself, without the test tooling.
RUNTIME := $(VENV)/.runtime
# Where `make agents` puts the agent CLIs; serve and run look there unless told otherwise.
AGENT_PATH ?= $(CURDIR)/.tools/bin

.PHONY: install agents run serve test lint typecheck check bench bench-bigrepo bench-sse browser sandbox podman system-packages suite clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,memory]'
	touch $(RUNTIME) $(STAMP)

$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[memory]'
	touch $(RUNTIME)

install: $(STAMP)

agents:                ## the pinned agent CLIs the engines drive, in .tools/ (no-op when installed)
	@start=$$(date +%s); PYTHON=$(PYTHON) scripts/install-agents.sh && \
	  echo "agents: $$(( $$(date +%s) - start )) s"

run: $(RUNTIME)        ## make run ARGS='run "add a test for naturaldelta" --repo ./myrepo'
	TELECODER_AGENT_PATH="$${TELECODER_AGENT_PATH:-$(AGENT_PATH)}" $(BIN)/telecoder $(ARGS)

serve: $(RUNTIME)      ## the server (HTTP API, dashboard, embedded workers): make serve ARGS='--port 8080'
	TELECODER_AGENT_PATH="$${TELECODER_AGENT_PATH:-$(AGENT_PATH)}" $(BIN)/telecoder serve $(ARGS)

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

PYTEST_CMD = $(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal --durations=40 $(PYTEST_ARGS)

test: lint typecheck agents browser sandbox podman   ## everything CI runs: lint, types, import layers, the whole test suite (`make -j4 test`: the checks and installs at once)
	$(PYTEST_CMD)

suite: $(STAMP)        ## the test suite alone, once `make test`'s checks and installs are done (.ci/run)
	$(PYTEST_CMD)

# The system packages the suite drives, missing ones installed by ONE apt-get run (one update, one
# dpkg lock) so `make -j` can run it beside the agents' npm/PyPI installs:
# - Debian's Chromium for the browser tests (`playwright install` cannot download a browser here);
# - bubblewrap: agents run in it (the sandbox runtime);
# - podman's Docker-compatible service with runc for the docker runtime's tests (crun cannot set
#   rlimits without CAP_SYS_RESOURCE); catatonit is the containers' init;
# - systemd, for `systemd-analyze verify` of the service units;
# - debootstrap, for the Debian base the Dockerfile is built on (tests/e2e/test_container_image.py).
CHROMIUM ?= /usr/bin/chromium
system-packages:
	@start=$$(date +%s); missing=""; \
	  test -x $(CHROMIUM) || missing="$$missing chromium"; \
	  for p in bwrap:bubblewrap podman:podman runc:runc catatonit:catatonit systemd-analyze:systemd debootstrap:debootstrap; do \
	    command -v $${p%%:*} >/dev/null || missing="$$missing $${p#*:}"; \
	  done; \
	  if [ -n "$$missing" ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  fi; \
	  echo "system-packages:$${missing:- none missing} ($$(( $$(date +%s) - start )) s)"

browser sandbox podman: system-packages
	@:

bench: $(STAMP)         ## every benchmark in benchmarks/, in full (CI runs each with --quick)
	@set -e; for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script; done

bench-bigrepo: $(STAMP)    ## 100,000 files: worktree add vs the warm pool, submit -> agent running
	$(BIN)/python benchmarks/bigrepo.py $(ARGS)

bench-sse: $(STAMP)    ## 100 SSE clients on running sessions: append->arrival latency, API p99
	$(BIN)/python benchmarks/sse.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
