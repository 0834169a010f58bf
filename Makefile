# Two entry points (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test setup clean lint bench

$(BIN)/runstore: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ml]'
	touch $(BIN)/runstore

setup: $(BIN)/runstore

demo: setup
	$(BIN)/python scripts/demo.py

test: setup
	$(BIN)/ruff check runstore syncd tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/log_throughput.py
	$(BIN)/python benchmarks/concurrent_writers.py

clean:
	rm -rf $(VENV) build *.egg-info
