"""A run re-opened and extended while it uploads is not marked synced with half its rows."""

from __future__ import annotations

import runstore as em
from runstore.remote import Client, upload_run
from runstore.store import Store


def test_run_extended_during_upload_stays_pending(store: Store, server, alice):
    run = em.create_run(name="race")
    for i in range(50_000):
        run.log("train", {"x": float(i)}, step=i)
    run.finish()
    extended = []

    def progress(done: int, total: int) -> None:
        if not extended:  # after the first chunk: someone re-opens the run and logs more
            again = em.load_run(run.uuid)
            again.log("train", {"x": -1.0}, step=50_000)
            again.finish()
            extended.append(True)

    with Client(server.url, alice) as client:
        first = upload_run(store, run.uuid, client, progress=progress)
        assert extended and first.metrics_sent == 50_000
        state = store.read("SELECT state FROM sync_state")[0][0]
        assert state == "pending"  # not 'synced': the server lacks the last row
        second = upload_run(store, run.uuid, client)
        assert second.outcome == "resumed" and second.metrics_sent == 1
        assert client.request("GET", f"/runs/{run.uuid}")["metric_count"] == 50_001
    assert store.read("SELECT state, metrics_acked FROM sync_state")[0][:] == ("synced", 50_001)
