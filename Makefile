# The two commands: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint typecheck unit bench clean

# The native DLP fast paths (native/, Rust) are compiled by the install with the
# machine's cargo; their build cache lives outside the checkout, so a clean clone
# compiles only this crate, not its dependencies.
export PATH := $(HOME)/.cargo/bin:$(PATH)
export CARGO_TARGET_DIR ?= $(HOME)/.cache/secure-ds/cargo-target

$(STAMP): pyproject.toml native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/secure-ds demo

lint: install
	$(BIN)/ruff check secure_ds tests bench
	$(BIN)/ruff format --check secure_ds tests bench

typecheck: install
	$(BIN)/mypy
	$(BIN)/mypy bench

# The whole suite: lint, strict typing, then unit, security and integration tests.
# scripts/start-services.sh starts what the integration tests need, each installed and
# cached by its own script: a private Redis, an OpenTelemetry Collector built from its
# Go modules, Keycloak from Maven Central, nginx and a SoftHSM2 token (the DeepSeek
# sandbox is in-process); with SECURE_DS_REQUIRE_SERVICES=1 a missing one fails.
test: lint typecheck
	./scripts/start-services.sh
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/bench_client.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache native/target secure_ds/_native*.so
