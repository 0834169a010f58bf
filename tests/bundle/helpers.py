"""Helpers for bundle tests: a source store with runs, and what the server holds."""

from __future__ import annotations

from pathlib import Path

from runstore.remote import Client, list_remote
from runstore.store import Store
from tests.remote.rs_fixtures import local_rows, make_artifact, make_run, server_rows
from tests.server_harness import run_cli


def source_with_runs(home: Path, tmp: Path) -> tuple[Store, list[str]]:
    """A store with a finished run (with an artifact), an errored one and a live one."""
    store = Store(home)
    a = make_run(store, "a", n_metrics=3000)
    art = make_artifact(store, tmp, files={"model.bin": b"\x07" * 200_000, "cfg": b"x=1"})
    from tests.remote.rs_fixtures import link

    link(store, a, art, "output")
    b = make_run(store, "b", n_metrics=50, status="Error")
    c = make_run(store, "c", n_metrics=20, status="Running")
    return store, [a, b, c]


def cli(*args: str, home: Path, server=None, token: str | None = None, timeout_s: float = 120):
    env = {"RUNSTORE_HOME": str(home)}
    if server is not None:
        env.update(RUNSTORE_SERVER=server.url, RUNSTORE_TOKEN=token or "")
    return run_cli(*args, extra_env=env, timeout_s=timeout_s)


def server_runs(client: Client, folder: str = "/alice/default") -> list[str]:
    """UUIDs of the runs in a server folder (a duplicate would appear twice)."""
    from runstore.errors import PermanentRemoteError

    try:
        return sorted(n["uuid"] for n in list_remote(folder, client))
    except PermanentRemoteError as exc:
        if exc.status_code == 404:
            return []  # nothing uploaded yet: the folder does not exist
        raise


def assert_server_holds(client: Client, source: Store, uuids: list[str]) -> None:
    """The server holds each run once, with exactly the source's rows."""
    on_server = server_runs(client)
    for uuid in uuids:
        assert on_server.count(uuid) == 1, (uuid, on_server)
        assert _norm(server_rows(client, uuid)) == _norm(local_rows(source, uuid)), uuid


def _norm(rows: list[tuple]) -> list[tuple]:
    import math

    return [tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in r)
            for r in rows]
