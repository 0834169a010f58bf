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


class _HookedClient(Client):
    """The real client; after a given request has been answered, runs a hook (another
    process of the user acting on the run at exactly that moment)."""

    def __init__(self, *args, hooks: dict[str, object], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hooks = hooks

    def request(self, method: str, path: str, **kwargs):
        answer = super().request(method, path, **kwargs)
        for suffix, hook in list(self.hooks.items()):
            if path.endswith(suffix):
                del self.hooks[suffix]
                hook()  # type: ignore[operator]
        return answer


def test_run_reopened_and_ended_during_upload_is_not_marked_synced(store: Store, server, alice):
    """Found by the soak: an upload of an ended run; meanwhile the run is loaded back (a new
    generation) and ends again before the upload marks it synced. The upload finalizes what
    it read and sent; the run stays pending, and the next upload brings the new generation."""
    run = em.create_run(name="reopened")
    run.finish()
    generation = store.read("SELECT generation FROM runs")[0][0]
    again: list = []
    hooks = {"/runs/claim": lambda: again.append(em.load_run(run.uuid)),
             "/finalize": lambda: again[0].finish()}
    with _HookedClient(server.url, alice, hooks=hooks) as client:
        first = upload_run(store, run.uuid, client)
        assert not hooks and again[0].status == "Complete" and not first.complete
        remote = client.request("GET", f"/runs/{run.uuid}")
        assert remote["metadata"]["generation"] == generation
        assert store.read("SELECT generation FROM runs")[0][0] == generation + 1
        assert store.read("SELECT state FROM sync_state")[0][0] == "pending"
        second = upload_run(store, run.uuid, client)
        assert second.complete
        remote = client.request("GET", f"/runs/{run.uuid}")
        assert remote["metadata"]["generation"] == generation + 1
        assert (remote["metadata"]["status"], remote["complete"]) == ("Complete", True)
    assert store.read("SELECT state FROM sync_state")[0][0] == "synced"


def test_run_reopened_and_killed_during_upload_is_not_marked_synced(store: Store, server, alice):
    """The soak's exact case: loaded back after the upload read it (before the fix, its
    finalize then sent the new generation as Running); then its process dies and it is reaped
    (Error, pending) before the upload marks it synced."""
    run = em.create_run(name="reopened")
    run.finish()
    again: list = []

    def reap() -> None:
        # as if the re-opened process had been SIGKILLed: the next opener reaps it
        with store.write() as conn:
            conn.execute("UPDATE runs SET status = 'Error', end_timestamp = ? WHERE uuid = ?",
                         ("2026-01-01T00:00:00+00:00", run.uuid))

    hooks = {"/lineage": lambda: again.append(em.load_run(run.uuid)), "/finalize": reap}
    with _HookedClient(server.url, alice, hooks=hooks) as client:
        assert not upload_run(store, run.uuid, client).complete
        assert store.read("SELECT state FROM sync_state")[0][0] == "pending"
        assert upload_run(store, run.uuid, client).complete
        remote = client.request("GET", f"/runs/{run.uuid}")
        assert (remote["metadata"]["status"], remote["complete"]) == ("Error", True)
    assert store.read("SELECT state FROM sync_state")[0][0] == "synced"


def test_run_edited_during_upload_is_not_marked_synced(store: Store, server, alice):
    """The description changed after the upload sent the run's metadata, before it marked the
    run synced: the run stays pending, and the next upload sends the change."""
    run = em.create_run(name="edited")
    run.finish()

    def edit() -> None:
        run.description = "changed"

    with _HookedClient(server.url, alice, hooks={"/finalize": edit}) as client:
        assert not upload_run(store, run.uuid, client).complete
        assert client.request("GET", f"/runs/{run.uuid}")["metadata"]["description"] == ""
        assert store.read("SELECT state FROM sync_state")[0][0] == "pending"
        assert upload_run(store, run.uuid, client).complete
        assert client.request("GET", f"/runs/{run.uuid}")["metadata"]["description"] == \
            "changed"
    assert store.read("SELECT state FROM sync_state")[0][0] == "synced"
    run.labels = ["again"]  # after the sync: pending again (the store's trigger)
    assert store.read("SELECT state FROM sync_state")[0][0] == "pending"


def test_an_older_finalize_arriving_late_never_undoes_a_newer_edit(store: Store, server, alice):
    """Two uploaders: a hand upload read the ended run, then the description changed and
    syncd's upload sent the change and marked the run synced; the hand upload's finalize (a
    retry after a lost answer, say) arrives only now. The edit made the run a newer
    generation, so that late finalize is stale: the server keeps the change."""
    run = em.create_run(name="edited", hparams={"lr": 0.1})
    run.log("train", {"loss": 1.0}, step=1)
    run.finish()

    def edit_and_upload() -> None:
        run.description = "b"
        with Client(server.url, alice) as other:
            assert upload_run(store, run.uuid, other).complete

    with _HookedClient(server.url, alice, hooks={"/lineage": edit_and_upload}) as client:
        assert not upload_run(store, run.uuid, client).complete
        assert client.request("GET", f"/runs/{run.uuid}")["metadata"]["description"] == "b"
    assert store.read("SELECT state FROM sync_state")[0][0] == "synced"


def test_lineage_added_after_the_sync_goes_up(store: Store, server, alice, tmp_path):
    """mark_output() after finish() and after the run was synced: pending again, and the
    server's lineage gets the artifact."""
    run = em.create_run(name="late-output")
    run.finish()
    with Client(server.url, alice) as client:
        assert upload_run(store, run.uuid, client).complete
        weights = tmp_path / "w.bin"
        weights.write_bytes(b"w" * 100)
        art = em.create_artifact("model")
        art.add_file(str(weights))
        run.mark_output(art)
        assert store.read("SELECT state FROM sync_state")[0][0] == "pending"
        assert upload_run(store, run.uuid, client).complete
        lineage = client.request("GET", f"/runs/{run.uuid}")["lineage"]
        assert [e["artifact_uuid"] for e in lineage["output"]] == [art.uuid]
