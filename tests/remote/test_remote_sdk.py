"""The SDK's upload paths go through runstore.remote: Run.upload() and runstore.upload(path)."""

from __future__ import annotations

import math

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
