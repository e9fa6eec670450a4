# klaviyo-dagster: the two commands (demo, test) plus dev, bench, lint and spec.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SANDBOX_PORT ?= 8765

CHROMIUM ?= /usr/bin/chromium

.PHONY: demo test dev bench lint spec clean

$(STAMP): pyproject.toml setup.cfg
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## demo: start the sandbox, ingest every object into data/klaviyo.duckdb, activate, print what landed
demo: $(STAMP)
	$(BIN)/python -m klaviyo_dagster.demo

# The browser test drives Debian's chromium (Playwright's own browser download does not work offline):
# installed once with apt-get when missing (root, as in CI, or through sudo).
$(CHROMIUM):
	@echo "installing Debian's chromium for the browser test (apt-get)"
	@if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "chromium is missing: run 'apt-get install chromium' as root" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium

## test: lint, then the whole suite against the in-process sandbox (and a real browser on `make dev`)
test: $(STAMP) $(CHROMIUM)
	$(BIN)/ruff check klaviyo_dagster klaviyo_dagster_tests bench scripts
	$(BIN)/python -m pytest -q

## dev: the sandbox and `dagster dev` together (UI on http://127.0.0.1:3000)
dev: $(STAMP)
	$(BIN)/python -m klaviyo_dagster.devserver --port $(SANDBOX_PORT)

## bench: benchmarks against the sandbox; writes bench/results.json and the README Performance table
bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.readme

lint: $(STAMP)
	$(BIN)/ruff check klaviyo_dagster klaviyo_dagster_tests bench scripts
	$(BIN)/ruff format --check klaviyo_dagster klaviyo_dagster_tests bench scripts

## spec: re-derive the committed spec subset from ../shared/klaviyo-openapi/stable.json
spec: $(STAMP)
	$(BIN)/python scripts/derive_spec.py

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
