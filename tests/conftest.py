"""Fixtures shared by every test: nothing a test does touches the user's real store or config."""

from __future__ import annotations

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
