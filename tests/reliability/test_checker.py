"""The oracle of the model-based test can fail: after a clean upload to the real server, each
kind of damage done to the server's data (or to the local sync state) is caught by
chain.check_invariants / chain.final_check, and classified as lost, duplicated or unexpected."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

import runstore as em
from runstore.remote import Client, upload_run
from runstore.store import Store
from tests.reliability.chain import (
    USER,
    ModelRun,
    check_invariants,
    classify_rows,
    final_check,
)
from tests.server_harness import ServerProcess


@pytest.fixture
def synced(store: Store, tmp_path: Path):
    """Two runs (one with an artifact) uploaded to a real server, which is then stopped."""
    server = ServerProcess(tmp_path / "srv").start()
    token = server.add_user(USER)
    model: dict[str, ModelRun] = {}
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights" * 1000)
    for i in range(2):
        run = em.create_run(name=f"r{i}")
        for step in range(100):
            run.log("train", {"loss": 1 / (step + 1)}, step=step)
        if i == 0:
            print("epoch 1 done")  # into the run's stdout.log
            art = em.create_artifact("model")
            art.add_file(str(weights))
            run.mark_output(art)
        run.finish()
        model[run.uuid] = ModelRun(run.uuid, run.name, run.alternative_name, "default",
                                   "new", "origin", finished=True)
    try:
        with Client(server.url, token) as client:
            for uuid in model:
                assert upload_run(store, uuid, client).complete
    finally:
        server.stop()
    yield store.home, server.data_dir, model


def _server_sql(data_dir: Path, *statements: tuple[str, tuple]) -> None:
    conn = sqlite3.connect(data_dir / "server.db")
    try:
        for sql, args in statements:
            conn.execute(sql, args)
        conn.commit()
    finally:
        conn.close()


def _server_run_id(data_dir: Path, uuid: str) -> int:
    conn = sqlite3.connect(data_dir / "server.db")
    try:
        return conn.execute("SELECT id FROM runs WHERE uuid = ?", (uuid,)).fetchone()[0]
    finally:
        conn.close()


def test_a_clean_sync_passes(synced):
    home, data_dir, model = synced
    check_invariants(home, data_dir, model)
    figures = final_check(home, data_dir, model)
    assert figures["runs"] == 2 and figures["rows"] == 200
    assert figures["blob_bytes"] == 7000
    assert figures["stdout_bytes"] == len("epoch 1 done\n")
    assert figures["lost"] == figures["duplicated"] == figures["unexpected"] == 0


def test_missing_rows_are_lost(synced):
    home, data_dir, model = synced
    uuid = next(iter(model))
    rid = _server_run_id(data_dir, uuid)
    _server_sql(data_dir, ("DELETE FROM metrics WHERE run_id = ? AND seq >= 90", (rid,)),
                ("UPDATE runs SET metric_count = 90 WHERE id = ?", (rid,)))
    with pytest.raises(AssertionError, match="marked synced, but the server holds 90 rows"):
        check_invariants(home, data_dir, model)
    with pytest.raises(AssertionError, match=f"lost=\\['{uuid}'\\]"):
        final_check(home, data_dir, model)


@pytest.mark.parametrize("damage", ["missing", "older copy", "other bytes"])
def test_a_stdout_log_not_the_nodes_is_lost(synced, damage: str):
    home, data_dir, model = synced
    uuid = next(iter(model))
    rid = _server_run_id(data_dir, uuid)
    if damage == "missing":
        sql = ("DELETE FROM t9k_run_files WHERE run_id = ?", (rid,))
    elif damage == "older copy":
        sql = ("UPDATE t9k_run_files SET size_bytes = 6 WHERE run_id = ?", (rid,))
    else:  # the pointer is right, the stored bytes are not
        sha = hashlib.sha256(b"epoch 1 done\n").hexdigest()
        (data_dir / "blobs" / sha[:2] / sha).write_bytes(b"epoch 2 done\n")
        sql = ("SELECT 1", ())
    _server_sql(data_dir, sql)
    with pytest.raises(AssertionError, match=f"lost=\\[.{uuid} \\(stdout.log"):
        final_check(home, data_dir, model)


def test_a_run_missing_from_the_server_is_lost(synced):
    home, data_dir, model = synced
    uuid = list(model)[1]
    rid = _server_run_id(data_dir, uuid)
    _server_sql(data_dir, ("DELETE FROM metrics WHERE run_id = ?", (rid,)),
                ("DELETE FROM lineage WHERE run_id = ?", (rid,)),
                ("DELETE FROM runs WHERE id = ?", (rid,)))
    with pytest.raises(AssertionError, match=f"lost=\\['{uuid}'\\]"):
        final_check(home, data_dir, model)


def test_rows_sent_twice_are_duplicated(synced):
    home, data_dir, model = synced
    uuid = next(iter(model))
    rid = _server_run_id(data_dir, uuid)
    _server_sql(data_dir, (
        "INSERT INTO metrics (run_id, seq, type, key, step, epoch, value, timestamp) "
        "SELECT run_id, seq + 100, type, key, step, epoch, value, timestamp FROM metrics "
        "WHERE run_id = ? AND seq >= 80", (rid,)),
        ("UPDATE runs SET metric_count = 120 WHERE id = ?", (rid,)))
    with pytest.raises(AssertionError, match="complete on the server with 120 rows"):
        check_invariants(home, data_dir, model)
    with pytest.raises(AssertionError, match=f"duplicated=\\['{uuid}'\\]"):
        final_check(home, data_dir, model)


def test_rows_never_logged_are_unexpected(synced):
    home, data_dir, model = synced
    uuid = next(iter(model))
    rid = _server_run_id(data_dir, uuid)
    _server_sql(data_dir, ("UPDATE metrics SET value = 42.0 WHERE run_id = ? AND seq = 7",
                           (rid,)))
    with pytest.raises(AssertionError, match="server rows differ from the logged rows"):
        check_invariants(home, data_dir, model)
    with pytest.raises(AssertionError, match=f"unexpected=\\['{uuid}'\\]"):
        final_check(home, data_dir, model)


def test_a_run_nobody_logged_is_unexpected(synced):
    home, data_dir, model = synced
    uuid = next(iter(model))
    conn = sqlite3.connect(data_dir / "server.db")
    try:  # a copy of the run under another UUID and name (whatever columns the server has)
        columns = [r[1] for r in conn.execute("PRAGMA table_info(runs)") if r[1] != "id"]
    finally:
        conn.close()
    # (a uuid4 never has 'f' at its version digit: no clash with the runs logged here)
    changed = {"uuid": "'" + "f" * 32 + "'", "name": "'stranger'", "metric_count": "0",
               "complete": "1"}
    _server_sql(data_dir, (
        f"INSERT INTO runs ({', '.join(columns)}) SELECT "
        f"{', '.join(changed.get(c, c) for c in columns)} FROM runs WHERE uuid = ?", (uuid,)))
    with pytest.raises(AssertionError, match="was never logged here"):
        check_invariants(home, data_dir, model)
    with pytest.raises(AssertionError, match="unexpected=\\['fffff"):
        final_check(home, data_dir, model)


def test_damaged_artifact_bytes_are_lost(synced):
    home, data_dir, model = synced
    sha = hashlib.sha256(b"weights" * 1000).hexdigest()
    blob = data_dir / "blobs" / sha[:2] / sha
    blob.write_bytes(b"weights" * 999 + b"WEIGHTS")
    with pytest.raises(AssertionError, match=f"\\(blob {sha}\\)"):
        final_check(home, data_dir, model)


def test_a_run_synced_locally_but_unfinished_on_the_server_is_caught(synced):
    home, data_dir, model = synced
    uuid = next(iter(model))
    _server_sql(data_dir, ("UPDATE runs SET complete = 0 WHERE uuid = ?", (uuid,)))
    with pytest.raises(AssertionError, match="is marked synced, but the server holds 100 "
                                             "rows of it \\(complete=False\\)"):
        check_invariants(home, data_dir, model)


def test_an_edit_the_server_lacks_is_lost(synced):
    """A description changed after the run ended that never reached the server."""
    home, data_dir, model = synced
    uuid = next(iter(model))
    conn = sqlite3.connect(home / "runstore.db")
    try:
        with conn:
            conn.execute("UPDATE runs SET description = 'edited' WHERE uuid = ?", (uuid,))
            conn.execute("UPDATE sync_state SET state = 'synced'")  # as if marked wrongly
    finally:
        conn.close()
    with pytest.raises(AssertionError, match=f"lost=\\[.{uuid} \\(metadata: "):
        final_check(home, data_dir, model)


@pytest.mark.parametrize(("server", "local", "verdict"), [
    ([(0, "a"), (1, "b")], [(0, "a"), (1, "b")], None),
    ([(0, "a")], [(0, "a"), (1, "b")], "lost"),
    ([(0, "a"), (1, "b"), (2, "a")], [(0, "a"), (1, "b")], "duplicated"),
    ([(0, "a"), (1, "x")], [(0, "a"), (1, "b")], "unexpected"),
    ([(0, "a"), (1, "b"), (2, "c")], [(0, "a"), (1, "b")], "unexpected"),
])
def test_classify_rows(server, local, verdict):
    assert classify_rows(server, local) == verdict
