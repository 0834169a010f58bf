"""One real server for all t9k tests (users alice and bob, with t9k API keys and runstore
tokens); the t9k client's venv is built only when a test runs the client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server_harness import ServerProcess
from tests.t9k.harness import t9k_python


@dataclass
class T9kServer:
    proc: ServerProcess
    keys: dict[str, str]     # user -> t9k API key
    tokens: dict[str, str]   # user -> runstore token

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def python(self) -> Path:
        return t9k_python()

    def new_key(self, user: str) -> str:
        done = self.proc.cli("user", "token", user, "--t9k")
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def t9k_server(tmp_path_factory) -> Iterator[T9kServer]:
    data = tmp_path_factory.mktemp("t9k-server")
    with ServerProcess(data / "server-data") as proc:
        tokens = {u: proc.add_user(u) for u in ("alice", "bob")}
        server = T9kServer(proc, {}, tokens)
        server.keys = {u: server.new_key(u) for u in tokens}
        yield server
