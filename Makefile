# trainserve: `make run` starts the API and a worker on the embedded defaults; `make test` runs the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast test-slow test-deploy lint-imports migrate bench lock clean vendor-ui grpc

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

# checkov, the static security scan of deploy/ (tests/test_deploy_k8s.py), in a venv of its own: its pins
# differ from the service's.
CHECKOV_VENV := .venv-checkov
$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q checkov==3.3.30
	touch $@

run: $(VENV)/.installed
	$(BIN)/trainserve up

migrate: $(VENV)/.installed
	$(BIN)/trainserve migrate

# Imports run workers/ -> service/ -> models/ (pyproject.toml's [tool.importlinter]); checked before the tests.
lint-imports: $(VENV)/.installed-dev
	$(BIN)/lint-imports

# The suite runs in parallel (pytest-xdist): a test file stays on one process, so the servers and trained
# models a module shares are made once. Most end-to-end time is spent waiting on other processes, so there
# are more test processes than cores. TEST_WORKERS=0 runs it in this process, in order.
TEST_WORKERS ?= 4
# --no-loadscope-reorder: hand out files in the order tests/conftest.py sorts them (the longest first), not
# xdist's own (the files with the most tests first, which put the one-test fuzz run last, alone).
PYTEST_PARALLEL = $(if $(filter 0,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

test: $(VENV)/.installed-dev node_modules/.installed $(CHECKOV_VENV)/.installed lint-imports
	$(BIN)/pytest $(PYTEST_PARALLEL)

# deploy/ alone: kustomize, strict validation, checkov (a few seconds).
test-deploy: $(VENV)/.installed-dev $(CHECKOV_VENV)/.installed
	$(BIN)/pytest tests/test_deploy.py tests/test_deploy_k8s.py tests/test_deploy_azure.py

# No training end to end and no server: the in-process tests on SQLite, in about a minute.
test-fast: $(VENV)/.installed-dev lint-imports
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "not slow and not realstack"

test-slow: $(VENV)/.installed-dev
	$(BIN)/pytest $(PYTEST_PARALLEL) -m slow

# deploy/requirements.lock: the image's Python dependencies with their hashes (torch comes from PyTorch's index).
lock:
	$(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install -q pip-tools
	.venv-lock/bin/pip-compile --quiet --generate-hashes --unsafe-package torch --strip-extras \
		--no-emit-index-url --no-emit-find-links --no-header -o deploy/requirements.lock.new pyproject.toml
	(sed -n '1,3p' deploy/requirements.lock; cat deploy/requirements.lock.new) > deploy/requirements.lock.tmp
	mv deploy/requirements.lock.tmp deploy/requirements.lock && rm deploy/requirements.lock.new

clean:
	rm -rf var .pytest_cache

# service/static/vendor: Swagger UI and ReDoc for /docs and /redoc, served from the package (no CDN).
SWAGGER_UI_VERSION := 5.35.0
REDOC_VERSION := 2.5.4
UPLOT_VERSION := 1.6.32
vendor-ui:
	rm -rf .vendor-ui && mkdir .vendor-ui && cd .vendor-ui && npm pack --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) redoc@$(REDOC_VERSION) \
		uplot@$(UPLOT_VERSION) >/dev/null
	cd .vendor-ui && tar xzf swagger-ui-dist-$(SWAGGER_UI_VERSION).tgz --one-top-level=swagger && \
		tar xzf redoc-$(REDOC_VERSION).tgz --one-top-level=redoc && tar xzf uplot-$(UPLOT_VERSION).tgz --one-top-level=uplot
	cd .vendor-ui/swagger/package && cp swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css favicon-32x32.png \
		LICENSE NOTICE ../../../service/static/vendor/swagger-ui/
	cd .vendor-ui/redoc/package && cp bundles/redoc.standalone.js bundles/redoc.standalone.js.LICENSE.txt LICENSE \
		../../../service/static/vendor/redoc/
	cd .vendor-ui/uplot/package && cp dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE ../../../service/static/vendor/uplot/
	rm -rf .vendor-ui

# service/inference_v2: the Python modules of the Open Inference Protocol's gRPC service, from KServe's
# published grpc_predict_v2.proto beside them (committed, so that installing needs no compiler).
grpc: $(VENV)/.installed-dev
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. service/inference_v2/grpc_predict_v2.proto
