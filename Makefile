# The two commands a new user needs: `make dev` runs the service, `make test` proves it.
# Each installs what it needs first (a virtualenv in .venv, Java/Maven/Redis if missing;
# Rust must be there, for the compiled lane in native/).

VENV  ?= .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint unit integration e2e bench faults clean

# The command path's compiled lane (native/, Rust): built here by maturin and cargo.
NATIVE := native/Cargo.toml native/Cargo.lock native/pyproject.toml native/src/lib.rs

$(STAMP): pyproject.toml $(NATIVE)
	scripts/system-deps
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q ./native
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/scheduler dev

lint: $(STAMP)
	$(BIN)/ruff check scheduler tests bench faults
	$(BIN)/ruff format --check scheduler tests bench faults
	$(BIN)/mypy scheduler
	cd native && cargo fmt --check && cargo clippy --release --locked -q -- -D warnings

test: $(STAMP) lint
	scripts/system-deps --browser
	$(BIN)/python -m pytest -p no:cacheprovider -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

e2e: $(STAMP)
	$(BIN)/python -m pytest -q tests/e2e

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m bench.run

# The fault suite's long forms (minutes each); writes faults/REPORT.md.
faults: $(STAMP)
	$(BIN)/python -m faults.run

clean:
	rm -rf $(VENV) scheduler-data .pytest_cache .mypy_cache .ruff_cache native/target
