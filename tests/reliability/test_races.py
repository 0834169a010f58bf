"""Two uploaders of one run: a partial upload (the run was still Running when it began: a hand
`runstore upload`, `Run.upload()` from the script, a live push) overtaken by the final upload
(syncd, after the run ended). Found by the model-based test's soak.

The partial upload must not turn the server's complete copy back into a Running, incomplete
one after the final upload was acknowledged (and the run marked synced locally): syncd never
looks at a synced run again, so the server would keep it incomplete for good (promises 3, 4).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import runstore as em
from runstore.remote import Client, upload_run
from runstore.store import Store


def _server_copy(data_dir: Path, uuid: str) -> tuple:
    conn = sqlite3.connect(f"file:{data_dir / 'server.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT status, complete, metric_count, end_timestamp FROM runs "
                            "WHERE uuid = ?", (uuid,)).fetchone()
    finally:
        conn.close()


def test_a_partial_upload_overtaken_by_the_final_one_leaves_the_run_complete(
        store: Store, server, token):
    run = em.create_run(name="live")
    for i in range(500):
        run.log("train", {"loss": 1 / (i + 1)}, step=i)
    run.flush()
    overtaken = []

    def final_upload_meanwhile(done: int, total: int) -> None:
        # Called inside the partial upload, after its claim: the run ends, and the final
        # upload (what syncd does once the run is pending) goes through and is acknowledged.
        if not overtaken:
            overtaken.append(True)
            run.log("train", {"loss": 0.0}, step=500)
            run.finish()
            with Client(server.url, token) as other:
                assert upload_run(store, run.uuid, other).complete

    with Client(server.url, token) as client:
        partial = upload_run(store, run.uuid, client, progress=final_upload_meanwhile)
    assert overtaken and not partial.complete
    state = store.read("SELECT s.state FROM sync_state s JOIN runs r ON r.id = s.run_id "
                       "WHERE r.uuid = ?", (run.uuid,))[0][0]
    assert state == "synced"
    status, complete, count, end = _server_copy(server.data_dir, run.uuid)
    assert (status, bool(complete), count) == ("Complete", True, 501), (status, complete, end)


def test_a_stale_claim_after_the_final_upload_does_not_reopen_the_run(store: Store, server,
                                                                       token):
    """The partial upload read the run while Running, but its claim reaches the server only
    after the final upload finalized: same generation, so the server stays complete. A real
    re-open (load_run, a newer generation) does make it live again."""
    run = em.create_run(name="late")
    run.log("train", {"loss": 1.0}, step=0)
    run.flush()
    stale_row = store.read("SELECT * FROM runs WHERE uuid = ?", (run.uuid,))[0]
    run.finish()
    with Client(server.url, token) as client:
        assert upload_run(store, run.uuid, client).complete
        from runstore.remote.upload import _run_metadata

        meta = _run_metadata(store, stale_row, None)  # status Running, generation 0
        claim = client.request("POST", "/runs/claim", json={
            "uuid": run.uuid, "name": "late", "alternative_name": run.alternative_name,
            "folder": "/alice/default", "conflict_strategy": "new", "metadata": meta})
        assert claim["outcome"] == "resumed"
        assert _server_copy(server.data_dir, run.uuid)[:2] == ("Complete", 1)
        done = client.request("POST", f"/runs/{run.uuid}/finalize",
                              json={"metric_count": 1, "metadata": meta})
        assert done["complete"] and _server_copy(server.data_dir, run.uuid)[:2] == (
            "Complete", 1)

        again = em.load_run(run.uuid)  # generation 1
        again.log("train", {"loss": 0.5}, step=1)
        again.flush()
        live = upload_run(store, run.uuid, client)
        assert not live.complete
        assert _server_copy(server.data_dir, run.uuid)[:3] == ("Running", 0, 2)
        again.finish()
        assert upload_run(store, run.uuid, client).complete
        assert _server_copy(server.data_dir, run.uuid)[:3] == ("Complete", 1, 2)


def _server_lineage(data_dir: Path, uuid: str) -> list[str]:
    conn = sqlite3.connect(f"file:{data_dir / 'server.db'}?mode=ro", uri=True)
    try:
        return [u for (u,) in conn.execute(
            "SELECT a.uuid FROM lineage l JOIN runs r ON r.id = l.run_id LEFT JOIN artifacts a "
            "ON a.id = l.artifact_id WHERE r.uuid = ? ORDER BY l.direction, l.position",
            (uuid,))]
    finally:
        conn.close()


def test_an_older_upload_overtaken_by_a_newer_one_keeps_the_newer_lineage(
        store: Store, server, token, tmp_path: Path):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"first" * 100_000)
    run = em.create_run(name="lineage")
    run.log("train", {"loss": 1.0}, step=0)
    first = em.create_artifact("first")
    first.add_file(str(weights))
    run.mark_output(first)
    run.finish()  # generation 0, with one output
    newer = []

    def reopen_and_upload_meanwhile(done: int, total: int) -> None:
        # Inside the older upload, after it read the lineage (while it sends the blob): the
        # job is requeued (load_run), makes a second artifact, ends, and its upload completes.
        if done > 0 and not newer:
            again = em.load_run(run.uuid)
            second = em.create_artifact("second")
            weights.write_bytes(b"second" * 10)
            second.add_file(str(weights))
            again.mark_output(second)
            again.log("train", {"loss": 0.5}, step=1)
            again.finish()
            newer.append(second.uuid)
            with Client(server.url, token) as other:
                assert upload_run(store, run.uuid, other).complete
            assert _server_lineage(server.data_dir, run.uuid) == [first.uuid, second.uuid]

    with Client(server.url, token) as client:
        upload_run(store, run.uuid, client, progress=reopen_and_upload_meanwhile)
    assert newer
    state = store.read("SELECT s.state FROM sync_state s JOIN runs r ON r.id = s.run_id "
                       "WHERE r.uuid = ?", (run.uuid,))[0][0]
    assert state == "synced"
    assert _server_lineage(server.data_dir, run.uuid) == [first.uuid, newer[0]]
