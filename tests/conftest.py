"""Fixtures shared by every test: nothing a test does touches the user's real store or config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh RUNSTORE_HOME and config directory for each test."""
    home = tmp_path / "home"
    monkeypatch.setenv("RUNSTORE_HOME", str(home))
    monkeypatch.setenv("RUNSTORE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("RUNSTORE_SERVER", raising=False)
    monkeypatch.delenv("RUNSTORE_TOKEN", raising=False)
    return home


@pytest.fixture
def store(isolated_env: Path):
    """The test's local store (the same one the SDK opens through RUNSTORE_HOME)."""
    from runstore.store import Store

    s = Store(isolated_env)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def close_live_runs():
    """Runs a test left Running are ended after it (as at process exit), closing their files."""
    yield
    from runstore.api import all_writers

    for writer in all_writers():
        for run in writer.live_runs():
            if run.status == "Running":
                run._end_run("Error")


@pytest.fixture
def home(isolated_env: Path) -> Path:
    """The test's RUNSTORE_HOME, created."""
    isolated_env.mkdir(parents=True, exist_ok=True)
    return isolated_env


@pytest.fixture
def config_dir() -> Path:
    """The test's RUNSTORE_CONFIG_DIR, created."""
    path = Path(os.environ["RUNSTORE_CONFIG_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    """A private PostgreSQL on 127.0.0.1 for the whole session (tests/pg_harness.py), started
    on first use. Fails (never skips) when PostgreSQL is not installed: `make test` installs
    it."""
    from tests.pg_harness import PostgresProcess

    with PostgresProcess(tmp_path_factory.mktemp("postgres")) as pg:
        yield pg


@pytest.fixture
def pg_url(postgres) -> str:
    """The URL of a fresh, empty PostgreSQL database for this test."""
    return postgres.create_database()


@pytest.fixture
def server(tmp_path: Path):
    """A real `runstore serve` subprocess on 127.0.0.1 and a free port (tests/server_harness)."""
    from tests.server_harness import ServerProcess

    with ServerProcess(tmp_path / "server-data") as proc:
        yield proc


@pytest.fixture
def alice(server) -> str:
    """An API token of user alice on the test's server (`runstore user add alice`)."""
    return server.add_user("alice")


@pytest.fixture
def token(alice: str) -> str:
    """alice's token, by the name the daemon tests use."""
    return alice


@pytest.fixture
def client(server, alice: str):
    """A remote Client for alice on the test's server, with short backoffs (faults are
    injected on purpose, so waiting long for them only makes the test slow)."""
    from runstore.remote import Client

    with Client(server.url, alice, max_backoff_s=0.05) as c:
        yield c
