# Two entry points (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test setup demo-setup clean lint bench bench-fleet postgres-bin chromium-bin

# Two venv stamps: `make demo` needs only the package with its server extra and numpy for the
# example (extra `demo`: no torch, Keras, Lightning, mypy or test tools); `make test` (and
# `make setup`) adds the rest on top.
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

$(DEMO_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $@

$(TEST_STAMP): $(DEMO_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,ml,postgres]'
	touch $@

setup: $(TEST_STAMP)

demo-setup: $(DEMO_STAMP)

# tests/server/test_server_postgres.py runs the server on a real PostgreSQL (tests/pg_harness.py
# starts a private one); it needs the server binaries (initdb, postgres, pg_ctl, pg_isready).
postgres-bin:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing PostgreSQL (apt-get) for the PostgreSQL server tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	else \
		echo "PostgreSQL server binaries not found and not root: the PostgreSQL tests will fail."; \
		echo "Install them: sudo apt-get install -y postgresql"; \
	fi

# tests/ui drive the web UI in Debian's chromium through Playwright (Playwright's own browser
# download is not used: only package registries are reachable).
chromium-bin:
	@if [ -x /usr/bin/chromium ]; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium (apt-get) for the web UI tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "/usr/bin/chromium not found and not root: the web UI tests will fail."; \
		echo "Install it: sudo apt-get install -y chromium"; \
	fi

demo: $(DEMO_STAMP)
	$(BIN)/python scripts/demo.py

test: setup postgres-bin chromium-bin
	$(BIN)/ruff check runstore syncd tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/log_throughput.py
	$(BIN)/python benchmarks/concurrent_writers.py
	$(BIN)/python benchmarks/upload_throughput.py
	$(BIN)/python benchmarks/sync_latency.py
	$(BIN)/python benchmarks/bundle_throughput.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/s3_blobs.py

# The fleet curve (docs/SCALING.md): several minutes; MLflow's server if `mlflow` is on PATH.
bench-fleet: setup postgres-bin
	$(BIN)/python benchmarks/fleet.py --points 2000
	$(BIN)/python benchmarks/ui_latency.py

clean:
	rm -rf $(VENV) build *.egg-info
