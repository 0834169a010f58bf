"""Fixtures for daemon tests: real `syncd run` processes (server, token: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.syncd.helpers import Daemon


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
