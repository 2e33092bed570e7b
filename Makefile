# `make dev` and `make test` are the README's quick start: each sets up everything it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
JS := tests/js/node_modules/.installed-stamp

.PHONY: setup dev serve test lint bench bench-quick binary wheel clean

# hnswlib is built for a stated CPU baseline (.ci/release/build.py), never -march=native, so the
# tests run the same hnswlib the wheel and the binary ship.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python .ci/release/build.py hnswlib
	$(BIN)/pip install --quiet --force-reinstall --no-deps --no-index --find-links build/wheelhouse hnswlib
	$(BIN)/pip install --quiet --find-links build/wheelhouse -e '.[test,bench]'
	touch $@

$(JS): tests/js/package.json
	cd tests/js && npm install --no-audit --no-fund --loglevel=error
	touch $@

# Bytecode is compiled here because PYTHONDONTWRITEBYTECODE (set in many shells and in the image)
# would otherwise make every node process compile the package from source at each start.
setup: $(STAMP)
	$(BIN)/python -m compileall -q edgenode

# The whole system on loopback: a local primary and an edge node keeping an embedded replica of it.
dev: setup
	$(BIN)/edgenode dev

# A standalone node on a plain local libSQL file under ./.edgenode.
serve: setup
	$(BIN)/edgenode serve

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup $(JS) lint
	$(BIN)/pytest

bench-quick: setup
	$(BIN)/python -m bench --quick

bench: setup
	$(BIN)/python -m bench

# dist/edgenode-<version>-py3-none-any.whl
wheel: setup
	$(BIN)/python .ci/release/build.py wheel

# dist/edgenode-<version>-<os>-<arch>: one self-contained executable (README "Install").
binary: setup
	$(BIN)/python .ci/release/build.py binary

clean:
	rm -rf $(VENV) tests/js/node_modules .edgenode build dist
