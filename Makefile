# trainserve: `make run` starts the API and a worker on the embedded defaults; `make test` runs the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast test-slow lint-imports migrate bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 is pinned in pyproject.toml: on these machines pip takes its CPU build from local disk.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Azurite (the Azure Storage emulator) for the Azure Blob artifact-store tests; without npm they are skipped.
node_modules/.installed: package.json package-lock.json
	if command -v npm >/dev/null; then npm ci --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: the Azure Blob storage tests will be skipped"; fi

run: $(VENV)/.installed
	$(BIN)/trainserve up

migrate: $(VENV)/.installed
	$(BIN)/trainserve migrate

# Imports run workers/ -> service/ -> models/ (pyproject.toml's [tool.importlinter]); checked before the tests.
lint-imports: $(VENV)/.installed-dev
	$(BIN)/lint-imports

test: $(VENV)/.installed-dev node_modules/.installed lint-imports
	$(BIN)/pytest

# No training end to end and no server: the in-process tests on SQLite, in about a minute.
test-fast: $(VENV)/.installed-dev lint-imports
	$(BIN)/pytest -m "not slow and not realstack"

test-slow: $(VENV)/.installed-dev
	$(BIN)/pytest -m slow

clean:
	rm -rf var .pytest_cache
