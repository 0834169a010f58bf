"""The SDK's upload paths go through runstore.remote: Run.upload() and runstore.upload(path)."""

from __future__ import annotations

import math
import os

import pytest

import runstore
from runstore.remote import Client, list_remote


@pytest.fixture
def logged_in(server, alice, monkeypatch):
    monkeypatch.setenv("RUNSTORE_SERVER", server.url)
    monkeypatch.setenv("RUNSTORE_TOKEN", alice)
    return server


def test_run_upload_and_module_upload(logged_in, alice):
    run = runstore.create_run(name="sdk-run", hparams={"lr": 0.1})
    for step in range(1, 301):
        run.log("train", {"loss": 1.0 / step, "odd": math.nan if step == 7 else step}, step=step)
    run.finish()
    run.upload(folder="proj", make_folder=True)
    with Client(logged_in.url, alice) as c:
        listed = list_remote("proj", c)
        assert [(r["name"], r["status"], r["complete"]) for r in listed] == \
            [("sdk-run", "Complete", True)]
        assert c.request("GET", f"/runs/{listed[0]['uuid']}")["metric_count"] == 600
    assert run.remote[-1]["action"] == "upload"
    assert run.remote[-1]["path"] == "/alice/proj/sdk-run"

    other = runstore.create_run(name="sdk-run")
    other.log("train", {"loss": 0.5}, step=1)
    other.finish()
    runstore.upload(other.local, folder="proj", conflict_strategy="new")
    with Client(logged_in.url, alice) as c:
        paths = sorted(r["path"] for r in list_remote("proj", c))
    assert paths == sorted(["/alice/proj/sdk-run", f"/alice/proj/{other.alternative_name}"])


def test_upload_not_logged_in_is_runtime_error():
    run = runstore.create_run(name="offline")
    run.finish()
    with pytest.raises(RuntimeError, match="not logged in"):
        run.upload()


def test_run_continued_on_another_machine_updates_the_server(logged_in, alice, tmp_path,
                                                            monkeypatch):
    """A run re-opened twice where it was made, then loaded from the server on another
    machine and continued there: the server takes the new rows *and* the new state (the
    download keeps the server's generation, so the continuation is newer, not stale)."""
    run = runstore.create_run(name="moving", hparams={"lr": 0.1})
    run.log("train", {"loss": 1.0}, step=1)
    run.finish()
    for _ in range(2):
        runstore.load_run(run.uuid).finish()
    run.upload()
    monkeypatch.setenv("RUNSTORE_HOME", str(tmp_path / "machine-b"))
    there = runstore.load_run("/alice/default/moving")
    assert (there.uuid, there.status) == (run.uuid, "Running")
    there.hparams["lr"] = 0.05
    there.log("train", {"loss": 0.5}, step=2)
    there.finish()
    there.upload()
    with Client(logged_in.url, alice) as c:
        detail = c.request("GET", f"/runs/{run.uuid}")
    assert detail["metric_count"] == 2 and detail["complete"]
    assert detail["metadata"]["hparams"] == {"lr": 0.05}
    assert detail["metadata"]["generation"] == 3  # three load_run()s, two here, one there


def test_a_copy_downloaded_while_running_elsewhere_is_not_reaped(logged_in, alice, tmp_path,
                                                                monkeypatch):
    """Machine B loads a run that is still running on machine A (its rows so far are on the
    server). B has no process of it: B's reaper must not end it as Error, or B's syncd would
    upload that Error over A's run."""
    from runstore.remote import download_run
    from runstore.store import Store, reap_dead_runs

    run = runstore.create_run(name="live")
    run.log("train", {"loss": 1.0}, step=1)
    run.upload()  # live: the server holds it as Running
    other = Store(tmp_path / "machine-b")
    with Client(logged_in.url, alice) as c:
        assert download_run(other, "/alice/default/live", c) == run.uuid
    assert reap_dead_runs(other, host="machine-b") == []
    assert other.read("SELECT status FROM runs")[0][0] == "Running"
    assert other.read("SELECT COUNT(*) FROM sync_state")[0][0] == 0
    other.close()
    run.finish()
    # A job requeued on B that loads it goes on with it: owned by B's process from then on.
    monkeypatch.setenv("RUNSTORE_HOME", str(tmp_path / "machine-b"))
    there = runstore.load_run(run.uuid)
    row = runstore.api.default_store().read("SELECT pid, generation FROM runs")[0]
    assert (row["pid"], there.status) == (os.getpid(), "Running")
    assert row["generation"] == 1  # one past the copy's (a newer state than the server's)
    there.finish()


def test_a_downloaded_run_edited_here_goes_up(logged_in, alice, tmp_path, monkeypatch):
    """A copy downloaded from the server is in sync with it; a change made to it here (a
    description set after its end) makes it pending, and the upload brings the change."""
    run = runstore.create_run(name="annotated")
    run.finish()
    run.upload()
    monkeypatch.setenv("RUNSTORE_HOME", str(tmp_path / "machine-b"))
    store_b = runstore.api.default_store()
    from runstore.remote import download_run

    with Client(logged_in.url, alice) as c:
        download_run(store_b, "/alice/default/annotated", c)
        assert store_b.read("SELECT state FROM sync_state")[0][0] == "synced"
        copy = runstore.Run._from_store(store_b, store_b.read("SELECT * FROM runs")[0])
        copy.description = "looked at on b"
        assert store_b.read("SELECT state FROM sync_state")[0][0] == "pending"
        runstore.upload(copy.uuid)
        assert c.request("GET", f"/runs/{run.uuid}")["metadata"]["description"] == \
            "looked at on b"
    assert store_b.read("SELECT state FROM sync_state")[0][0] == "synced"


def test_a_copy_changed_here_after_the_server_moved_on_fails_with_the_reason(
        logged_in, alice, tmp_path, monkeypatch):
    """B downloads a run, A continues it (more rows, on the server), B re-opens and edits its
    older copy: B's upload would drop A's rows or B's change, so it is refused with the reason
    and the server's copy is left as it is."""
    from runstore.errors import PermanentRemoteError

    run = runstore.create_run(name="shared")
    run.log("train", {"loss": 1.0}, step=1)
    run.finish()
    run.upload()
    home_a = runstore.api.default_home()
    monkeypatch.setenv("RUNSTORE_HOME", str(tmp_path / "machine-b"))
    there = runstore.load_run("/alice/default/shared")
    there.finish()
    there.description = "edited on b"
    monkeypatch.setenv("RUNSTORE_HOME", str(home_a))
    again = runstore.load_run(run.uuid)
    again.log("train", {"loss": 0.5}, step=2)
    again.finish()
    again.upload()
    monkeypatch.setenv("RUNSTORE_HOME", str(tmp_path / "machine-b"))
    with pytest.raises(PermanentRemoteError, match="changed the run since"):
        there.upload()
    with Client(logged_in.url, alice) as c:
        detail = c.request("GET", f"/runs/{run.uuid}")
    assert detail["metric_count"] == 2 and detail["metadata"]["description"] == ""


def test_a_change_overtaken_by_a_newer_one_from_another_machine_fails_with_the_reason(
        logged_in, alice, tmp_path, monkeypatch):
    """A and B hold the same ended run; A changes it twice and uploads, B changes it once
    and uploads after: the server keeps A's newer state, and B is told, not marked synced."""
    from runstore.errors import PermanentRemoteError

    run = runstore.create_run(name="twice")
    run.finish()
    run.upload()
    home_a = runstore.api.default_home()
    monkeypatch.setenv("RUNSTORE_HOME", str(tmp_path / "machine-b"))
    store_b = runstore.api.default_store()
    from runstore.remote import download_run

    with Client(logged_in.url, alice) as c:
        download_run(store_b, "/alice/default/twice", c)
    copy = runstore.Run._from_store(store_b, store_b.read("SELECT * FROM runs")[0])
    monkeypatch.setenv("RUNSTORE_HOME", str(home_a))
    run.description = "a1"
    run.labels = ["a2"]
    run.upload()
    monkeypatch.setenv("RUNSTORE_HOME", str(tmp_path / "machine-b"))
    copy.description = "b1"
    with pytest.raises(PermanentRemoteError, match="holds a newer state of it"):
        runstore.upload(copy.uuid)
    assert store_b.read("SELECT state FROM sync_state")[0][0] == "pending"
    with Client(logged_in.url, alice) as c:
        meta = c.request("GET", f"/runs/{run.uuid}")["metadata"]
    assert (meta["description"], meta["labels"]) == ("a1", ["a2"])


def test_a_newer_state_from_elsewhere_is_refused_before_any_row_goes_up(
        logged_in, alice, tmp_path, monkeypatch):
    """B re-opens its copy and logs a row; A meanwhile edits the run twice and uploads. B's
    upload is refused before it sends anything: the server's run gets no row of B's."""
    from runstore.errors import PermanentRemoteError

    run = runstore.create_run(name="elsewhere")
    run.log("train", {"loss": 1.0}, step=1)
    run.finish()
    run.upload()
    home_a = runstore.api.default_home()
    monkeypatch.setenv("RUNSTORE_HOME", str(tmp_path / "machine-b"))
    there = runstore.load_run("/alice/default/elsewhere")  # generation 1 here
    there.log("train", {"loss": 0.5}, step=2)
    there.finish()
    monkeypatch.setenv("RUNSTORE_HOME", str(home_a))
    run.description = "a1"
    run.labels = ["a2"]  # generation 2 on A
    run.upload()
    monkeypatch.setenv("RUNSTORE_HOME", str(tmp_path / "machine-b"))
    with pytest.raises(PermanentRemoteError, match="holds a newer state of it"):
        there.upload()
    with Client(logged_in.url, alice) as c:
        detail = c.request("GET", f"/runs/{run.uuid}")
    assert detail["metric_count"] == 1 and detail["metadata"]["description"] == "a1"
