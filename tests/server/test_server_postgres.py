"""The real `runstore serve --database postgresql+psycopg://...` against a real PostgreSQL
(tests/pg_harness.py): the server's promises hold there as they do on SQLite.

Every test gets a fresh database on the session's PostgreSQL and its own blob directory.
Concurrency is checked with raw HTTP (httpx), not the retrying Client, so that a 500 from a
lost race is seen instead of being retried into a plausible answer.
"""

from __future__ import annotations

import math
import threading
import uuid as uuidlib
from pathlib import Path

import httpx
import pytest

from runstore import protocol as p
from runstore.errors import ConflictError, PermanentRemoteError
from runstore.remote import Client, list_remote, upload_run
from runstore.store import Store
from tests.remote.rs_fixtures import (
    link,
    local_rows,
    make_artifact,
    make_run,
    same_rows,
    server_rows,
)
from tests.server_harness import FaultProxy, ServerProcess, run_cli

API = p.API_PREFIX


@pytest.fixture
def pg_server(tmp_path: Path, pg_url: str):
    with ServerProcess(tmp_path / "server-data", database_url=pg_url) as proc:
        yield proc


@pytest.fixture
def pg_alice(pg_server: ServerProcess) -> str:
    return pg_server.add_user("alice")


@pytest.fixture
def client(pg_server: ServerProcess, pg_alice: str):
    with Client(pg_server.url, pg_alice, max_backoff_s=0.05) as c:
        yield c






def folder_nodes(client: Client, folder: str = "/alice/default") -> dict[str, str]:
    return {n["path"]: n["uuid"] for n in list_remote(folder, client)}


def claim_body(name: str, strategy: str, *, run_uuid: str | None = None,
               alt: str | None = None) -> dict:
    run_uuid = run_uuid or str(uuidlib.uuid4())
    return p.RunClaim(
        uuid=run_uuid, name=name, alternative_name=alt or f"{name}_{run_uuid[:8]}",
        folder="/alice/default", conflict_strategy=strategy,  # type: ignore[arg-type]
        metadata=p.RunMetadata(status="Complete", start_timestamp="2024-01-02T03:04:05Z"),
    ).model_dump(mode="json")


def test_server_really_uses_postgres(pg_server: ServerProcess, pg_url: str, client: Client):
    """The tables are in PostgreSQL (not a stray server.db), blobs in --data."""
    import psycopg

    client.request("POST", "/folders", json={"path": "/alice/proj", "make_parents": True})
    assert not (pg_server.data_dir / "server.db").exists()
    assert (pg_server.data_dir / "blobs").is_dir()
    with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql")) as conn:
        paths = [r[0] for r in conn.execute("SELECT path FROM folders ORDER BY path")]
        types = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'metrics'").fetchall())
    assert paths == ["/alice", "/alice/proj"]
    assert types["step"] == types["seq"] == types["epoch"] == "bigint"
    assert types["value"] == "double precision"


@pytest.mark.parametrize("strategy", ["skip", "error", "new", "replace"])
def test_conflict_strategies(store: Store, client: Client, strategy: str):
    old = make_run(store, "exp", n_metrics=10)
    assert upload_run(store, old, client).outcome == "created"
    new = make_run(store, "exp", n_metrics=25, strategy=strategy)
    new_alt = store.read("SELECT alternative_name FROM runs WHERE uuid = ?", (new,))[0][0]
    if strategy == "error":
        with pytest.raises(ConflictError, match="already exists in Folder /alice/default"):
            upload_run(store, new, client)
        assert folder_nodes(client) == {"/alice/default/exp": old}
        return
    result = upload_run(store, new, client)
    if strategy == "skip":
        assert result.outcome == "skipped" and result.metrics_sent == 0
        assert folder_nodes(client) == {"/alice/default/exp": old}
        assert len(server_rows(client, old)) == 10
    elif strategy == "new":
        assert result.outcome == "renamed" and result.remote_path == f"/alice/default/{new_alt}"
        assert folder_nodes(client) == {"/alice/default/exp": old,
                                        f"/alice/default/{new_alt}": new}
        assert len(server_rows(client, new)) == 25
    else:
        assert result.outcome == "replaced" and result.remote_path == "/alice/default/exp"
        assert folder_nodes(client) == {"/alice/default/exp": new}
        assert same_rows(server_rows(client, new), local_rows(store, new))
        with pytest.raises(PermanentRemoteError, match="not found") as gone:
            client.request("GET", f"/runs/{old}")
        assert gone.value.status_code == 404


def test_lost_responses_and_second_upload_leave_one_complete_copy(
        store: Store, pg_server: ServerProcess, pg_alice: str, tmp_path: Path):
    """Every acknowledgement lost once (claim, a metric chunk, lineage, finalize, artifact
    claim, a blob part), then the whole upload again: exactly one run, one artifact, every
    row once, NaN and infinities intact."""
    run = make_run(store, "exp", n_metrics=65_000)
    art = make_artifact(store, tmp_path, "data")
    link(store, run, art, "output")
    patterns = [b"/runs/claim", b"/metrics", b"/lineage", b"/finalize", b"/artifacts/claim",
                b"PATCH /api/v1/uploads"]
    with FaultProxy(pg_server.port) as proxy, \
            Client(proxy.url, pg_alice, max_backoff_s=0.01, sleep=lambda s: None) as c:
        for pattern in patterns:
            proxy.lose_response(pattern, times=1)
        first = upload_run(store, run, c)
        assert proxy.faults_triggered == len(patterns)
    assert first.complete
    with Client(pg_server.url, pg_alice) as c:
        second = upload_run(store, run, c)
        assert second.outcome == "resumed" and second.metrics_sent == 0
        nodes = c.request("GET", "/folders/alice/default")["nodes"]
        assert sorted((n["kind"], n["uuid"]) for n in nodes) == sorted(
            [("Run", run), ("Artifact", art)])
        rows = server_rows(c, run)
        assert same_rows(rows, local_rows(store, run))
        assert any(r[4] is None for r in rows) and any(r[4] == math.inf for r in rows)
        assert any(r[4] == -math.inf for r in rows)
        detail = c.request("GET", f"/runs/{run}")
        assert detail["metric_count"] == 65_000 and detail["complete"]
        assert [e["artifact_uuid"] for e in detail["lineage"]["output"]] == [art]
        objects = c.request("GET", f"/artifacts/{art}")["objects"]
        assert sorted(o["path"] for o in objects) == ["a.txt", "ref", "sub/b.bin"]
        sha = next(o["sha256"] for o in objects if o["path"] == "a.txt")
        assert c.request("GET", f"/blobs/{sha}") == b"hello"


def test_nonfinite_values_and_64_bit_integers_round_trip(pg_server: ServerProcess,
                                                         pg_alice: str):
    headers = {"Authorization": f"Bearer {pg_alice}"}
    body = claim_body("wide", "error")
    run = body["uuid"]
    values = ["NaN", "Infinity", "-Infinity", -0.0, 1.7976931348623157e308, 5e-324, 0.1]
    big = 2**63 - 1
    rows = [["train", "loss", [big, -(2**63), 2**31, 0, 1, 2, 3][i],
             [None, big, -(2**63), 2**40, None, 0, -1][i], v, f"2024-01-02T03:04:0{i}Z"]
            for i, v in enumerate(values)]
    with httpx.Client(base_url=pg_server.url, headers=headers, timeout=30) as h:
        assert h.post(f"{API}/folders", json={"path": "/alice/default"}).status_code == 200
        assert h.post(f"{API}/runs/claim", json=body).json()["outcome"] == "created"
        ack = h.put(f"{API}/runs/{run}/metrics", json={"offset": 0, "rows": rows})
        assert ack.status_code == 200, ack.text
        page = h.get(f"{API}/runs/{run}/metrics", params={"offset": 0}).json()
        far = h.get(f"{API}/runs/{run}/metrics", params={"offset": big})
    assert page["metric_count"] == len(rows)
    assert page["rows"][:3] == rows[:3]  # the non-finite markers, unchanged
    for got, sent in zip(page["rows"][3:], rows[3:], strict=True):
        assert got[:4] == sent[:4] and got[5] == sent[5]
        assert got[4] == sent[4] and math.copysign(1, got[4]) == math.copysign(1, sent[4])
    assert far.status_code == 200 and far.json()["rows"] == []


def _race(n: int, fn) -> list:
    """Run fn(i) in n threads released at the same moment; their results in order."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.mark.parametrize("strategy", ["new", "error"])
def test_concurrent_claims_of_one_name_are_decided_atomically(
        pg_server: ServerProcess, pg_alice: str, strategy: str):
    """Two clients claim the same free name at the same instant, 15 names in a row: one
    creates it, the other is renamed (`new`) or refused with name_conflict (`error`); never a
    500, never two nodes under one name, never a lost claim."""
    clients = [httpx.Client(base_url=pg_server.url, timeout=30,
                            headers={"Authorization": f"Bearer {pg_alice}"}) for _ in range(2)]
    try:
        assert clients[0].post(f"{API}/folders", json={"path": "/alice/default"}
                               ).status_code == 200
        for round_ in range(15):
            name = f"race{round_}"
            bodies = [claim_body(name, strategy) for _ in range(2)]
            answers = _race(2, lambda i, b=bodies: clients[i].post(f"{API}/runs/claim",
                                                                   json=b[i]))
            codes = sorted(a.status_code for a in answers)
            if strategy == "new":
                assert codes == [200, 200], [a.text for a in answers]
                outcomes = {a.json()["outcome"]: b for a, b in zip(answers, bodies, strict=True)}
                assert sorted(outcomes) == ["created", "renamed"]
                renamed = outcomes["renamed"]
                expected = {f"/alice/default/{name}": outcomes["created"]["uuid"],
                            f"/alice/default/{renamed['alternative_name']}": renamed["uuid"]}
            else:
                assert codes == [200, 409], [a.text for a in answers]
                won = next(b for a, b in zip(answers, bodies, strict=True)
                           if a.status_code == 200)
                lost = next(a for a in answers if a.status_code == 409)
                assert lost.json()["code"] == "name_conflict"
                expected = {f"/alice/default/{name}": won["uuid"]}
            listing = clients[0].get(f"{API}/folders/alice/default").json()["nodes"]
            got = {n["path"]: n["uuid"] for n in listing if n["name"] == name}
            assert got == expected
    finally:
        for c in clients:
            c.close()
    assert "Traceback" not in pg_server.log_text()


def test_concurrent_appends_to_one_run_store_each_row_once(pg_server: ServerProcess,
                                                           pg_alice: str):
    """Two senders of the same chunk at the same offset (a retry racing the original): both
    are answered (one inserts, the other is a replay), the run holds the rows once."""
    headers = {"Authorization": f"Bearer {pg_alice}"}
    body = claim_body("appends", "error")
    run = body["uuid"]
    clients = [httpx.Client(base_url=pg_server.url, headers=headers, timeout=30)
               for _ in range(2)]
    try:
        assert clients[0].post(f"{API}/folders", json={"path": "/alice/default"}
                               ).status_code == 200
        assert clients[0].post(f"{API}/runs/claim", json=body).status_code == 200
        for k in range(10):
            chunk = {"offset": k * 500,
                     "rows": [["train", "x", k * 500 + i, None, float(i), "t"]
                              for i in range(500)]}
            answers = _race(2, lambda i, c=chunk: clients[i].put(f"{API}/runs/{run}/metrics",
                                                                 json=c))
            assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
            assert sorted(a.json()["inserted"] for a in answers) == [0, 500]
        page = clients[0].get(f"{API}/runs/{run}/metrics",
                              params={"offset": 0, "limit": 100_000}).json()
    finally:
        for c in clients:
            c.close()
    assert page["metric_count"] == 5000
    assert [r[2] for r in page["rows"]] == list(range(5000))


def test_users_cannot_read_each_other(store: Store, pg_server: ServerProcess, pg_alice: str):
    bob = pg_server.add_user("bob")
    run = make_run(store, "secret", n_metrics=3)
    with Client(pg_server.url, pg_alice) as c:
        upload_run(store, run, c)
    with httpx.Client(base_url=pg_server.url, headers={"Authorization": f"Bearer {bob}"},
                      timeout=30) as h:
        assert h.get(f"{API}/folders/alice/default").status_code == 404
        assert h.get(f"{API}/folders/alice").status_code == 404
        assert h.get(f"{API}/runs/{run}").status_code == 404
        assert h.get(f"{API}/runs/{run}/metrics").status_code == 404
        assert h.get(f"{API}/resolve", params={"path": "/alice/default/secret"}).status_code \
            == 404
        assert h.post(f"{API}/folders", json={"path": "/alice/x", "make_parents": True}
                      ).status_code == 403
        assert h.get(f"{API}/runs").json() == []
        assert h.get(f"{API}/folders/bob").status_code == 200


def test_user_commands_take_the_database_url(pg_url: str, tmp_path: Path):
    """`runstore user add/token/list/revoke --database URL` (and RUNSTORE_DATABASE_URL), with
    the tokens honoured by `runstore serve --database URL`."""
    data = str(tmp_path / "data")
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")  # driver implied
    added = run_cli("user", "add", "carol", "--database", plain)
    assert added.returncode == 0, added.stderr
    first = added.stdout.strip()
    again = run_cli("user", "add", "carol", "--database", pg_url)
    assert again.returncode != 0 and "already exists" in again.stderr
    env = {"RUNSTORE_DATABASE_URL": pg_url}
    second = run_cli("user", "token", "carol", extra_env=env).stdout.strip()
    listed = run_cli("user", "list", "--json", "--database", pg_url)
    assert listed.returncode == 0, listed.stderr
    assert '"carol"' in listed.stdout and first.split("_")[1] in listed.stdout
    revoked = run_cli("user", "revoke", "carol", "--token-id", first.split("_")[1],
                      "--database", pg_url)
    assert revoked.returncode == 0, revoked.stderr
    assert not (Path(data) / "server.db").exists()
    with ServerProcess(tmp_path / "serve-data", database_url=pg_url) as srv:
        assert httpx.get(f"{srv.url}{API}/whoami",
                         headers={"Authorization": f"Bearer {first}"}).status_code == 401
        who = httpx.get(f"{srv.url}{API}/whoami",
                        headers={"Authorization": f"Bearer {second}"})
        assert who.status_code == 200 and who.json()["user"] == "carol"


def test_values_postgres_cannot_hold_are_422_not_500(pg_server: ServerProcess, pg_alice: str):
    """A NUL character (PostgreSQL text cannot hold one) is the client's error, and a long
    timestamp string (a VARCHAR(64) on SQLite would not care) is simply stored."""
    headers = {"Authorization": f"Bearer {pg_alice}"}
    with httpx.Client(base_url=pg_server.url, headers=headers, timeout=30) as h:
        assert h.post(f"{API}/folders", json={"path": "/alice/default"}).status_code == 200
        nul = claim_body("nul", "error")
        nul["metadata"]["description"] = "a\x00b"
        bad = h.post(f"{API}/runs/claim", json=nul)
        assert bad.status_code == 422 and "NUL" in bad.json()["detail"]
        body = claim_body("long", "error")
        body["metadata"]["start_timestamp"] = "2024-01-02T03:04:05Z " + "x" * 200
        assert h.post(f"{API}/runs/claim", json=body).status_code == 200
        run = body["uuid"]
        put = h.put(f"{API}/runs/{run}/metrics",
                    json={"offset": 0, "rows": [["tr\x00ain", "k", 1, None, 1.0, "t"]]})
        assert put.status_code == 422
        got = h.get(f"{API}/runs/{run}")
        assert got.status_code == 200 and got.json()["metric_count"] == 0
        assert got.json()["metadata"]["start_timestamp"].endswith("x" * 200)


def test_reads_are_one_read_only_snapshot_and_leave_the_pool_writable(pg_url: str) -> None:
    """Database.read() on PostgreSQL: REPEATABLE READ and READ ONLY from its first statement
    (a write inside fails; a commit made meanwhile stays invisible), and the same pooled
    connection then writes at READ COMMITTED again."""
    from sqlalchemy import exc, text

    from runstore.server import db

    database = db.Database(pg_url)
    database.engine.pool.dispose()
    try:
        with database.write() as conn:
            conn.execute(text("CREATE TABLE t (x int)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        with database.read() as conn:
            assert conn.execute(text("SHOW transaction_isolation")).scalar() == "repeatable read"
            assert conn.execute(text("SHOW transaction_read_only")).scalar() == "on"
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1
            with database.write() as other:  # a second pooled connection
                other.execute(text("INSERT INTO t VALUES (2)"))
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1  # one snapshot
            with pytest.raises(exc.InternalError, match="read-only transaction"):
                conn.execute(text("INSERT INTO t VALUES (3)"))
        for _ in range(3):  # every pooled connection, after having served reads
            with database.write() as conn:
                assert conn.execute(text("SHOW transaction_isolation")).scalar() == \
                    "read committed"
                assert conn.execute(text("SHOW transaction_read_only")).scalar() == "off"
                conn.execute(text("INSERT INTO t VALUES (4)"))
        with database.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 5
    finally:
        database.dispose()


def test_a_role_that_may_not_create_pg_trgm_still_gets_a_working_name_filter(
        pg_url: str, caplog) -> None:
    """The trigram indexes are optional: a role without CREATE on the database (so no
    CREATE EXTENSION pg_trgm) opens it with a warning saying what to do, and the runs page's
    name filter answers the same, by scanning."""
    import logging

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from runstore.server import db
    from runstore.server.auth import User
    from runstore.ui.data import RunsQuery
    from runstore.ui.serverdata import ServerData

    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("DROP ROLE IF EXISTS limited_role"))
        conn.execute(text("CREATE ROLE limited_role LOGIN"))
        conn.execute(text("GRANT CREATE, USAGE ON SCHEMA public TO limited_role"))
    admin.dispose()
    url = make_url(pg_url).set(username="limited_role").render_as_string(hide_password=False)
    with caplog.at_level(logging.WARNING, logger="runstore.server.db"):
        database = db.Database(url)
    try:
        assert any("CREATE EXTENSION pg_trgm failed" in r.getMessage()
                   and "Try:" in r.getMessage() for r in caplog.records)
        with database.read() as conn:
            assert conn.execute(text(
                "SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'runs_%_trgm'")).scalar() \
                == 0
        with database.write() as conn:
            user = db.insert_returning_id(conn, db.users.insert().values(name="u",
                                                                           created_at=0))
            folder = db.insert_returning_id(conn, db.folders.insert().values(
                owner_id=user, path="/u/f", created_at=0))
            for i, name in enumerate(["alpha-1", "beta-1", "alphabet"]):
                conn.execute(db.runs.insert().values(
                    owner_id=user, uuid=f"{i:032x}", folder_id=folder, name=name,
                    run_name=name, alternative_name=name + "_1", status="Complete",
                    labels="[]", hparams="{}", start_timestamp=f"2024-01-0{i + 1}",
                    created_at=0, updated_at=0))
        page = ServerData(database, User(user, "u")).runs(RunsQuery(folder="/u/f",
                                                                     name="alpha"))
        assert page.total == 2 and {r.name for r in page.rows} == {"alpha-1", "alphabet"}
    finally:
        database.dispose()
