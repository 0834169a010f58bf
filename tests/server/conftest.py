"""Fixtures: a real `runstore serve` subprocess per test, with users created via the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.server_harness import ServerProcess  # noqa: E402


@pytest.fixture
def server(tmp_path: Path):
    with ServerProcess(tmp_path / "server-data") as proc:
        yield proc


@pytest.fixture
def alice(server: ServerProcess) -> str:
    return server.add_user("alice")
