# Flowgate: `make run` starts the local stack, `make test` runs every check. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
SAM_VENV := .venv-sam
PY := $(VENV)/bin/python
PORT ?= 3000
PYTEST_WORKERS ?= 2
export PARAMETER_OVERRIDES
export SAM_CLI_TELEMETRY := 0

.PHONY: run test lint format typecheck validate unit handler e2e fuzz keys bench build openapi smoke clean

$(VENV)/.installed: requirements-dev.txt layers/deps/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# aws-sam-cli pins boto3 and pydantic exactly: it gets a virtual environment of its own.
$(SAM_VENV)/.installed: requirements-sam.txt
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet -r requirements-sam.txt
	touch $@

## run: the local stack on http://127.0.0.1:$(PORT) (moto in server mode; state lives in memory);
## with TLS_CERT=cert.pem TLS_KEY=key.pem, on https://127.0.0.1:$(PORT) only
run: $(VENV)/.installed
	PORT=$(PORT) TLS_CERT='$(TLS_CERT)' TLS_KEY='$(TLS_KEY)' exec $(PY) -m devstack

## test: lint, types, template validation, sam build, then unit, handler (moto), devstack and e2e tests
test: lint typecheck validate build
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -q

## lint: ruff, and import-linter's contracts (layers, contexts through their ports; pyproject.toml)
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PYTHONPATH=shared:. $(VENV)/bin/lint-imports --no-cache

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy shared/flowgate functions devstack tests benchmarks

validate: $(SAM_VENV)/.installed
	$(SAM_VENV)/bin/sam validate --lint --template template.yaml --region us-east-1

unit: $(VENV)/.installed
	$(PY) -m pytest -q tests/unit

handler: $(VENV)/.installed
	$(PY) -m pytest -q tests/handler

e2e: $(VENV)/.installed
	$(PY) -m pytest -q tests/e2e

## fuzz: schemathesis from our OpenAPI against a local stack of its own (bounded, fixed seed; in `make test`)
fuzz: $(VENV)/.installed
	$(PY) -m pytest -q tests/fuzz

## keys: two RSA key pairs and each side's sync config key fields, ready to paste (workspace linking);
## with KEYS_DIR=dir, the four PEM files written there instead (a.key, a.pub, b.key, b.pub)
keys: $(VENV)/.installed
	@PYTHONPATH=shared $(PY) -m devstack.keys $(if $(KEYS_DIR),--dir "$(KEYS_DIR)")

## bench: measured figures (import ratio per function, ...), printed and kept in benchmarks/results/
bench: $(VENV)/.installed
	$(PY) benchmarks/run.py

## build: sam build without containers (layers and functions carry precompiled bytecode)
build: $(SAM_VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(SAM_VENV)/bin/sam build --template template.yaml

## openapi: renew shared/flowgate/openapi.json from the functions' resolvers (a unit test checks it)
openapi: $(VENV)/.installed
	$(PY) -m devstack.openapi --write

## smoke: the shared contract check against `make run`
smoke: $(VENV)/.installed
	../shared/checks/smoke

clean:
	rm -rf .aws-sam .mypy_cache .ruff_cache .pytest_cache benchmarks/results
