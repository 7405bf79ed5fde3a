# Every target creates/uses .venv itself; nothing needs to be installed by hand first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install when the project's metadata (dependencies, entry points) changes.
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: test test-fast lint demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Everything that needs no PostgreSQL and no sandbox (tests/markers.py keeps the markers honest),
# on every core (pytest-xdist). The full suite stays in one process: its session-scoped PostgreSQL
# and sandbox are started once, not once per worker.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n auto -m "not postgres and not sandbox" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check dsqlops tests benchmarks
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/dsqlops demo

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
