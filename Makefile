# Two entry points: `make run` (set up and start the server with its demo) and
# `make test` (set up with dev extras and run every test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/telebridge.toml

.PHONY: run test lint bench bench-fanout install install-dev browser-deps clean

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed; installing Debian's python3-venv"; \
	  rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q python3-venv; \
	  else sudo apt-get update -q && sudo apt-get install -y -q python3-venv; fi && \
	  $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/telebridge serve --config $(CONFIG)

# The browser tests need Debian's chromium and chromium-driver: installed here when we
# are root (as CI is); otherwise the tests say loudly how many of them were skipped.
browser-deps:
	@if [ ! -x /usr/lib/chromium/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium and chromium-driver for the browser tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	  else \
	    echo "WARNING: chromium/chromium-driver missing and not root: browser tests will be SKIPPED"; \
	  fi; \
	fi

test: lint browser-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check sfu signaling recording bench tests
	$(BIN)/ruff format --check sfu signaling recording bench tests
	$(BIN)/mypy

# `telebridge bench` (bench/README.md): a small webinar on the embedded config, ~1 min;
# results in bench-results/. BENCH_ARGS adds options (--sites 500 --load-procs 2 ...).
bench: install
	$(BIN)/telebridge bench webinar --sites 50 --duration 15 $(BENCH_ARGS)

# The forwarding path's micro-benchmarks and the WHIP/WHEP fan-out load test.
bench-fanout: install-dev
	$(BIN)/python -m pytest tests/test_bench_fanout.py --benchmark-enable -p no:randomly
	$(BIN)/python -m bench.fanout --viewers 50 --seconds 10

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .benchmarks bench-results
