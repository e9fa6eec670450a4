# klaviyo-dagster: the two commands (demo, test) plus dev, bench, lint and spec.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SANDBOX_PORT ?= 8765

.PHONY: demo test dev bench lint spec clean

$(STAMP): pyproject.toml setup.cfg
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## demo: start the sandbox, ingest every object into data/klaviyo.duckdb, activate, print what landed
demo: $(STAMP)
	$(BIN)/python -m klaviyo_dagster.demo

## test: lint, then the whole suite against the in-process sandbox
test: $(STAMP)
	$(BIN)/ruff check klaviyo_dagster klaviyo_dagster_tests bench scripts
	$(BIN)/python -m pytest -q

## dev: the sandbox and `dagster dev` together (UI on http://127.0.0.1:3000)
dev: $(STAMP)
	$(BIN)/python -m klaviyo_dagster.devserver --port $(SANDBOX_PORT)

## bench: benchmarks against the sandbox; writes bench/results.json
bench: $(STAMP)
	$(BIN)/python -m bench.run

lint: $(STAMP)
	$(BIN)/ruff check klaviyo_dagster klaviyo_dagster_tests bench scripts
	$(BIN)/ruff format --check klaviyo_dagster klaviyo_dagster_tests bench scripts

## spec: re-derive the committed spec subset from ../shared/klaviyo-openapi/stable.json
spec: $(STAMP)
	$(BIN)/python scripts/derive_spec.py

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
