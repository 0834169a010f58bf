"""Fixtures for daemon tests: a real server, a user token, and real `syncd run` processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.server_harness import ServerProcess
from tests.syncd.helpers import Daemon


@pytest.fixture
def server(tmp_path: Path):
    with ServerProcess(tmp_path / "server-data") as proc:
        yield proc


@pytest.fixture
def token(server: ServerProcess) -> str:
    return server.add_user("alice")


@pytest.fixture
def home(isolated_env: Path) -> Path:
    isolated_env.mkdir(parents=True, exist_ok=True)
    return isolated_env


@pytest.fixture
def config_dir() -> Path:
    path = Path(os.environ["RUNSTORE_CONFIG_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def daemons(tmp_path: Path, home: Path, config_dir: Path):
    """A factory of `syncd run` subprocesses on the test's store; all killed at the end."""
    started: list[Daemon] = []

    def make(url: str | None, token: str | None, **settings) -> Daemon:
        settings.setdefault("live_interval_s", 0)
        d = Daemon(home, config_dir, url, token, tmp_path / "syncd.log", **settings)
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill()
