# Two entry points: `make run` (set up and start the server with its demo) and
# `make test` (set up with dev extras and run every test).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/telebridge.toml

.PHONY: run test lint bench install install-dev clean

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

test: install-dev
	$(BIN)/ruff check sfu signaling recording bench tests
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check sfu signaling recording bench tests

bench: install-dev
	$(BIN)/python -m pytest tests/test_bench_fanout.py --benchmark-enable -p no:randomly
	$(BIN)/python -m bench.fanout --viewers 50 --seconds 10

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .benchmarks
