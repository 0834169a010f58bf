"""Fixtures of the reliability tests: a real server with a user, the test's store directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.server_harness import ServerProcess


@pytest.fixture
def server(tmp_path: Path):
    with ServerProcess(tmp_path / "srv") as proc:
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
