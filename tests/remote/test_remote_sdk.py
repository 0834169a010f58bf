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
